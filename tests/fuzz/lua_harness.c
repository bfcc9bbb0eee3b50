/* lua_harness: one product-built Lua state per fuzz process, reused for
 * every input (the drivers keep no state between calls). */
#include "lua_harness.h"
#include "config.h"
#include "dokku/transport.h"
#include "lua/runtime.h"
#include "util/log.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef MRPROV_SOURCE_DIR
#error "MRPROV_SOURCE_DIR (the checkout holding lua/ and tiers/) must be defined"
#endif

/* Lua line coverage for libFuzzer: liblua is not instrumented, so the C
 * counters see the bindings only. A line hook counts each (previous line,
 * line) pair of the Lua code into libFuzzer's extra counters, which it
 * treats like its own edge counters. */
#define LUA_EDGES (1u << 16)
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[LUA_EDGES];
/* libFuzzer clears its counters before each input; this keeps the union. */
static uint8_t lua_edges_seen[LUA_EDGES];
static uint64_t prev_line;

static void line_hook(lua_State *S, lua_Debug *ar)
{
	if (!lua_getinfo(S, "S", ar))
		return;
	/* The chunk's source string lives as long as its functions do. */
	uint64_t here = ((uint64_t)(uintptr_t)ar->source ^ (uint64_t)ar->currentline) * 0x9E3779B97F4A7C15ull;
	uint32_t slot = (uint32_t)((here ^ (prev_line >> 1)) >> 48) & (LUA_EDGES - 1);
	if (lua_edges[slot] < 255)
		lua_edges[slot]++;
	lua_edges_seen[slot] = 1;
	prev_line = here;
}

static lua_State *L;
static struct config cfg;
static int driver_ref = LUA_NOREF;

static void set_dir(const char *var, const char *root, const char *sub)
{
	char buf[4096];
	snprintf(buf, sizeof buf, "%s/%s", root, sub);
	setenv(var, buf, 1);
}

static void close_state(void)
{
	size_t hit = 0;
	for (size_t i = 0; i < LUA_EDGES; i++)
		hit += lua_edges_seen[i];
	/* The run script reports it beside libFuzzer's own figures. */
	fprintf(stderr, "lua_edges: %zu\n", hit);
	if (L)
		rt_close_state(L);
	L = NULL;
	config_free(&cfg);
}

void fuzz_lua_init(const char *driver)
{
	const char *root = getenv("MRPROV_ROOT");
	if (!root || !*root)
		root = MRPROV_SOURCE_DIR;
	/* The defaults, a dry-run transport and the checkout's Lua and tiers;
	 * nothing else from the environment. */
	for (const struct config_var *v = config_vars; v->name; v++)
		unsetenv(v->name);
	set_dir("LUA_DIR", root, "lua");
	set_dir("TIERS_DIR", root, "tiers");
	set_dir("PROFILES_DIR", root, "profiles");
	set_dir("HOOKS_DIR", root, "tests/fuzz/no-hooks");
	char err[1024];
	if (config_load(&cfg, NULL, err, sizeof err) < 0 ||
	    transport_init(TRANSPORT_DRY_RUN, NULL, NULL, err, sizeof err) < 0) {
		fprintf(stderr, "fuzz: %s\n", err);
		exit(1);
	}
	log_set_level(LOG_ERROR);
	rt_init(&cfg, MRPROV_VERSION);
	L = rt_new_state(err, sizeof err);
	if (!L) {
		fprintf(stderr, "fuzz: cannot build the Lua state: %s\n", err);
		exit(1);
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/tests/fuzz/%s.lua", root, driver);
	if (luaL_loadfile(L, path) != LUA_OK || rt_pcall(L, 0, 1, err, sizeof err) < 0 || !lua_isfunction(L, -1)) {
		fprintf(stderr, "fuzz: %s: %s\n", path, lua_isstring(L, -1) ? lua_tostring(L, -1) : err);
		exit(1);
	}
	driver_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	atexit(close_state);
}

void fuzz_lua_run(const uint8_t *data, size_t size)
{
	char err[4096];
	lua_rawgeti(L, LUA_REGISTRYINDEX, driver_ref);
	lua_pushlstring(L, (const char *)data, size);
	prev_line = 0;
	lua_sethook(L, line_hook, LUA_MASKLINE, 0);
	int rc = rt_pcall(L, 1, 0, err, sizeof err);
	lua_sethook(L, NULL, 0, 0);
	if (rc < 0) {
		fprintf(stderr, "fuzz: the driver raised: %s\n", err);
		abort();
	}
	lua_settop(L, 0);
	/* Free this input's garbage now: libFuzzer runs a leak check after any
	 * input that allocated more than it freed, and each input starts from
	 * the same heap. */
	lua_gc(L, LUA_GCCOLLECT);
}
