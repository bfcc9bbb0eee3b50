/* sandbox: runs an untrusted Lua function (a customer hook) with an
 * instruction budget (count hook) and a memory cap (the state's counting
 * allocator). When the budget runs out the hook switches to fire on every
 * line and raises again, so a pcall inside the script cannot swallow the
 * kill (redis luaMaskCountHook). Breaking a bound is a value for the
 * caller: sandbox.run(fn, instructions, bytes, ...) → true, results... |
 * false, message. The environment (what the script can see) is built in
 * Lua from an allowlist; this file only bounds time and memory. */
#include "lua/runtime.h"

#include <lauxlib.h>
#include <stdio.h>

#define HOOK_EVERY 1000

struct budget {
	long long remaining;
	int killed;
};

static _Thread_local struct budget *current;

static void count_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	struct budget *b = current;
	if (!b)
		return;
	if (!b->killed) {
		b->remaining -= HOOK_EVERY;
		if (b->remaining > 0)
			return;
		b->killed = 1;
		/* From now on every line raises: no pcall can carry on. */
		lua_sethook(L, count_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
	}
	luaL_error(L, "instruction budget exceeded");
}

static int l_run(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	lua_Integer instructions = luaL_checkinteger(L, 2);
	lua_Integer bytes = luaL_checkinteger(L, 3);
	luaL_argcheck(L, instructions > 0, 2, "budget must be positive");
	luaL_argcheck(L, bytes > 0, 3, "memory cap must be positive");
	if (current)
		return luaL_error(L, "sandbox.run cannot nest");

	void *ud;
	lua_getallocf(L, &ud);
	struct rt_alloc *a = ud;
	lua_remove(L, 3);
	lua_remove(L, 2); /* fn, args... */
	int nargs = lua_gettop(L) - 1;

	struct budget b = { instructions, 0 };
	current = &b;
	a->exceeded = 0;
	a->limit = a->used + (size_t)bytes;
	lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
	lua_sethook(L, NULL, 0, 0);
	current = NULL;
	a->limit = 0;
	int exceeded = a->exceeded;
	a->exceeded = 0;

	if (b.killed || exceeded || rc != LUA_OK) {
		const char *why = lua_tostring(L, -1);
		lua_settop(L, 0);
		lua_pushboolean(L, 0);
		if (b.killed)
			lua_pushfstring(L, "instruction budget of %I exceeded", instructions);
		else if (exceeded)
			lua_pushfstring(L, "memory limit of %I bytes exceeded", bytes);
		else
			lua_pushstring(L, why ? why : "error object is not a string");
		return 2;
	}
	lua_pushboolean(L, 1);
	lua_insert(L, 1);
	return lua_gettop(L);
}

static int l_memory(lua_State *L)
{
	void *ud;
	lua_getallocf(L, &ud);
	lua_pushinteger(L, (lua_Integer)((struct rt_alloc *)ud)->used);
	return 1;
}

int luaopen_mrprov_sandbox(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "run", l_run },
		{ "memory", l_memory },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
