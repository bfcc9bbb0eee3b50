/* lua_harness: the Lua state of the Lua fuzz targets, built the way the
 * product builds one (config from the environment, rt_init, rt_new_state:
 * every library and binding, package.path on lua/, boot.load() reading the
 * tiers), plus a driver script tests/fuzz/<name>.lua returning one function
 * that takes the input as a string. */
#ifndef MRPROV_FUZZ_LUA_HARNESS_H
#define MRPROV_FUZZ_LUA_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* Builds the state and loads the driver; exits the process when it cannot. */
void fuzz_lua_init(const char *driver);
/* Calls the driver with the input. A Lua error escaping the driver is a bug
 * (drivers turn every expected refusal into a value): it aborts. */
void fuzz_lua_run(const uint8_t *data, size_t size);

#endif
