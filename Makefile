# The two commands of the README: `make run` and `make test`. Both install
# what is missing (Debian packages), configure and build first.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all deps build run test check test-asan test-fuzz test-valgrind fuzz lint clean

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
# (build-fuzz, clang), and the valgrind memcheck smoke (the last two: issue 6, being added).
test: check test-asan

# The suite in one build directory (the quick loop while developing).
check: build
	cd $(BUILD) && ctest --output-on-failure -j 2

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (the
# lint tests are left to `check`: they do not run our code).
test-asan:
	$(MAKE) build BUILD=build-asan CMAKE_FLAGS="-DMRPROV_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"
	cd build-asan && ctest --output-on-failure -j 2 -LE lint

lint: deps
	luacheck lua tiers hooks tests

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
