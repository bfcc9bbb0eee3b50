# The two commands of the README: `make run` and `make test`. Both install
# what is missing (Debian packages), configure and build first.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all deps build run test check test-asan test-fuzz test-valgrind fuzz fuzz-build lint clean deb

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/mrprov serve

# `make test` is what CI runs: the suite, then the same suite under
# ASan+UBSan (build-asan), the fuzz targets briefly on their seed corpus
# (build-fuzz, clang), and the integration smoke under valgrind memcheck.
test: check test-asan test-fuzz test-valgrind

# The suite in one build directory (the quick loop while developing).
check: build
	cd $(BUILD) && ctest --output-on-failure -j 2 -LE valgrind

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (the
# lint tests are left to `check`: they do not run our code). Every sanitized
# process, the servers the integration specs start included, writes its
# report into build-asan/sanitizer; any report there fails the pass.
test-asan:
	$(MAKE) build BUILD=build-asan CMAKE_FLAGS="-DMRPROV_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"
	rm -rf build-asan/sanitizer && mkdir -p build-asan/sanitizer
	cd build-asan && ASAN_OPTIONS=log_path=$(CURDIR)/build-asan/sanitizer/asan \
	  UBSAN_OPTIONS=print_stacktrace=1:log_path=$(CURDIR)/build-asan/sanitizer/ubsan \
	  ctest --output-on-failure -j 2 -LE 'lint|valgrind'
	@# A report from a server process (a leak at exit, say) fails the pass too.
	@if [ -n "$$(ls -A build-asan/sanitizer)" ]; then head -n 60 build-asan/sanitizer/*; \
	  echo "test-asan: sanitizer reports in build-asan/sanitizer" >&2; exit 1; fi

# The integration smoke (tests/valgrind/smoke_spec.lua) under valgrind memcheck:
# no memory error, no definitely or indirectly lost block.
test-valgrind: build
	cd $(BUILD) && ctest --output-on-failure -L valgrind

# libFuzzer targets (tests/fuzz/README.md), built by clang in build-fuzz:
# `make fuzz` runs each for FUZZ_SECONDS, `make test-fuzz` briefly. New
# inputs go to build-fuzz/fuzz-corpus, crashes to build-fuzz/artifacts.
FUZZ_SECONDS ?= 60
TEST_FUZZ_SECONDS ?= 8

build-fuzz/CMakeCache.txt: | deps
	cmake -S . -B build-fuzz -DMRPROV_FUZZ=ON -DCMAKE_C_COMPILER=clang

fuzz-build: deps build-fuzz/CMakeCache.txt
	cmake --build build-fuzz -j $(JOBS)

fuzz: fuzz-build
	tests/fuzz/run build-fuzz $(FUZZ_SECONDS)

test-fuzz: fuzz-build
	tests/fuzz/run build-fuzz $(TEST_FUZZ_SECONDS)

# The Debian package (README "Install"): $(BUILD)/mrprov_<version>-1_<arch>.deb,
# built by CPack from the build directory (cmake/install.cmake).
deb: build
	cd $(BUILD) && cpack -G DEB

lint: deps
	luacheck lua tiers profiles hooks tests

clean:
	rm -rf build build-asan build-fuzz

# The benchmark (bench/README.md): HTTP throughput vs a bare libmicrohttpd
# server and FastAPI, the SSH pool vs bare libssh2 and handshakes per 100
# provisions, a provision vs the serial sum of its commands, 200 provisions
# at once with RSS, SIGHUP reloads under load, webhook latency. Not part of
# `make test`; bench/results/latest.md gets the figures.
.PHONY: bench
bench: build
	@./scripts/install-deps.sh --bench
	cmake -S . -B $(BUILD) >/dev/null
	cmake --build $(BUILD) -j $(JOBS) --target bench_ssh_exec bench_http_bare
	MRPROV_ROOT=$(CURDIR) MRPROV_BIN=$(CURDIR)/$(BUILD)/mrprov \
	  BENCH_EXEC=$(CURDIR)/$(BUILD)/bench/bench_ssh_exec BENCH_HTTP_BARE=$(CURDIR)/$(BUILD)/bench/bench_http_bare \
	  lua5.4 bench/bench.lua
