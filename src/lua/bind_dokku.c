/* bind_dokku: runs a Dokku command through the configured transport.
 * dokku.run(argv [, {timeout=s}]) → {exit, stdout, stderr, duration} or
 * nil, err, transient. dokku.mode() → "dry-run" | "local" | "ssh".
 * dokku.token_ok(s) → true | false, reason. */
#include "dokku/transport.h"
#include "lua/runtime.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 256

static int l_run(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	double timeout = 0;
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "timeout");
		timeout = luaL_optnumber(L, -1, 0);
		lua_pop(L, 1);
	}
	int argc = (int)luaL_len(L, 1);
	luaL_argcheck(L, argc > 0 && argc <= MAX_ARGS, 1, "expected 1..256 arguments");
	const char *argv[MAX_ARGS];
	for (int i = 0; i < argc; i++) {
		lua_rawgeti(L, 1, i + 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			return luaL_argerror(L, 1, "every argument must be a string");
		argv[i] = lua_tostring(L, -1); /* kept alive by the argv table */
		lua_pop(L, 1);
	}
	struct transport_result res;
	int rc = transport_run(argv, argc, timeout, &res);
	if (rc < 0) {
		luaL_pushfail(L);
		lua_pushstring(L, res.error);
		lua_pushboolean(L, res.transient);
		transport_result_free(&res);
		return 3;
	}
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, res.exit_code);
	lua_setfield(L, -2, "exit");
	lua_pushlstring(L, res.out.data ? res.out.data : "", res.out.len);
	lua_setfield(L, -2, "stdout");
	lua_pushlstring(L, res.err.data ? res.err.data : "", res.err.len);
	lua_setfield(L, -2, "stderr");
	lua_pushnumber(L, res.duration_s);
	lua_setfield(L, -2, "duration");
	transport_result_free(&res);
	return 1;
}

static int l_mode(lua_State *L)
{
	lua_pushstring(L, transport_mode_name());
	return 1;
}

static int l_token_ok(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	const char *reason;
	if (transport_token_ok(s, n, &reason)) {
		lua_pushboolean(L, 1);
		return 1;
	}
	lua_pushboolean(L, 0);
	lua_pushstring(L, reason);
	return 2;
}

int luaopen_mrprov_dokku(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "run", l_run },
		{ "mode", l_mode },
		{ "token_ok", l_token_ok },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
