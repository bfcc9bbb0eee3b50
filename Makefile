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
