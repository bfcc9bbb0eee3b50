/* bind_dokku: runs a Dokku command through the configured transport.
 * dokku.run(argv [, {timeout=s, stdout_file=path}]) → {exit, stdout,
 * stderr, duration, bytes} or nil, err, transient. With stdout_file, stdout
 * is streamed into a new file (mode 0600; an existing file is an error). dokku.mode() → "dry-run" | "local" | "ssh".
 * dokku.token_ok(s) → true | false, reason. */
#include "dokku/transport.h"
#include "lua/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ARGS 256

static int l_run(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	double timeout = 0;
	const char *out_path = NULL;
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "timeout");
		timeout = luaL_optnumber(L, -1, 0);
		lua_pop(L, 1);
		lua_getfield(L, 2, "stdout_file");
		out_path = luaL_optstring(L, -1, NULL); /* kept alive by the options table */
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
	int fd = -1;
	if (out_path) {
		fd = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			luaL_pushfail(L);
			lua_pushfstring(L, "cannot create %s: %s", out_path, strerror(errno));
			lua_pushboolean(L, 0);
			return 3;
		}
	}
	struct transport_result res;
	int rc = transport_run(argv, argc, timeout, fd, &res);
	if (fd >= 0 && (fsync(fd) < 0 || close(fd) < 0) && rc == 0) {
		snprintf(res.error, sizeof res.error, "cannot write %s: %s", out_path, strerror(errno));
		rc = -1;
	}
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
	lua_pushinteger(L, (lua_Integer)res.out_bytes);
	lua_setfield(L, -2, "bytes");
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
