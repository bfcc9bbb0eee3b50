/* fuzz_dokku_output: what a Dokku server answers, through every resource
 * probe and the diff/model built on it (tests/fuzz/fuzz_dokku_output.lua),
 * in a product-built Lua state. */
#include "lua_harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_lua_init("fuzz_dokku_output");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_lua_run(data, size);
	return 0;
}
