/* fuzz_request: an API request body through the Lua side of the API
 * (tests/fuzz/fuzz_request.lua: json.decode, the request validators, the
 * webhook payload mapping) in a product-built Lua state. */
#include "lua_harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_lua_init("fuzz_request");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_lua_run(data, size);
	return 0;
}
