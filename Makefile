# The two commands of the README: `make run` and `make test`. Both install
# what is missing (Debian packages), configure and build first.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all deps build run test test-asan lint clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/mrprov serve

test: build
	cd $(BUILD) && ctest --output-on-failure -j 2

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DMRPROV_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"

lint: deps
	luacheck lua tiers hooks tests

clean:
	rm -rf build build-asan

# The benchmark (bench/README.md): per-command time over the SSH pool vs a
# bare libssh2 loop, SSH handshakes per 100 provisions, and a provision's
# wall time vs the serial sum of its commands. Not part of `make test`.
.PHONY: bench
bench: build
	cmake -S . -B $(BUILD) >/dev/null
	cmake --build $(BUILD) -j $(JOBS) --target bench_ssh_exec
	MRPROV_ROOT=$(CURDIR) MRPROV_BIN=$(CURDIR)/$(BUILD)/mrprov \
	  BENCH_EXEC=$(CURDIR)/$(BUILD)/bench/bench_ssh_exec lua5.4 bench/bench.lua
