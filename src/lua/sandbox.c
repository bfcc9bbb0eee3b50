/* sandbox: runs an untrusted Lua function (a customer hook, a tier file's
 * top level) with an instruction budget (count hook), a wall-clock deadline
 * and a memory cap (the state's counting allocator). When a bound breaks the
 * hook switches to fire on every line and raises again, so a pcall inside
 * the script cannot swallow the kill (redis luaMaskCountHook). Breaking a
 * bound is a value for the caller:
 *   sandbox.run(fn, instructions, bytes, seconds, ...) → true, results... |
 *                                                        false, message.
 * The count hook only sees VM instructions, so C code that works long on
 * its own reports here too: the pattern functions (strmatch.c) charge their
 * steps through sandbox_charge, and the allocator (runtime.c) looks at the
 * clock every MiB (string building in C allocates what it builds).
 * The environment (what the script can see) is built in Lua from an
 * allowlist; this file only bounds time and memory. */
#include "lua/runtime.h"
#include "util/clock.h"

#include <lauxlib.h>
#include <stdio.h>

#define HOOK_EVERY 1000

enum kill { ALIVE, KILL_BUDGET, KILL_TIME };

struct budget {
	long long remaining;
	double deadline; /* clock_mono(); moved on by time spent in sandbox.outside */
	enum kill killed;
};

static _Thread_local struct budget *current;

static void count_hook(lua_State *L, lua_Debug *ar);

static const char *kill_message(const struct budget *b)
{
	return b->killed == KILL_TIME ? "time limit exceeded" : "instruction budget exceeded";
}

/* Marks b killed (when it is not yet) for why; from now on every line
 * raises: no pcall can carry on. */
static void kill(lua_State *L, struct budget *b, enum kill why)
{
	if (b->killed == ALIVE)
		b->killed = why;
	if (L)
		lua_sethook(L, count_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
}

/* ALIVE, or why b has to stop now. */
static enum kill over(const struct budget *b)
{
	if (b->remaining <= 0)
		return KILL_BUDGET;
	if (clock_mono() >= b->deadline)
		return KILL_TIME;
	return ALIVE;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	struct budget *b = current;
	if (!b)
		return;
	if (b->killed == ALIVE) {
		b->remaining -= HOOK_EVERY;
		enum kill why = over(b);
		if (why == ALIVE)
			return;
		kill(L, b, why);
	} else {
		kill(L, b, b->killed); /* killed from the allocator: the line hook now */
	}
	luaL_error(L, "%s", kill_message(b));
}

void sandbox_charge(lua_State *L, long long units)
{
	struct budget *b = current;
	if (!b)
		return;
	if (b->killed == ALIVE) {
		b->remaining -= units;
		enum kill why = over(b);
		if (why == ALIVE)
			return;
		kill(L, b, why);
	} else {
		kill(L, b, b->killed);
	}
	luaL_error(L, "%s", kill_message(b));
}

int sandbox_alloc_tick(void)
{
	struct budget *b = current;
	if (!b)
		return 0;
	if (b->killed == ALIVE && clock_mono() >= b->deadline)
		kill(NULL, b, KILL_TIME); /* the count hook installs the line hook */
	return b->killed != ALIVE;
}

static int l_run(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	lua_Integer instructions = luaL_checkinteger(L, 2);
	lua_Integer bytes = luaL_checkinteger(L, 3);
	lua_Number seconds = luaL_checknumber(L, 4);
	luaL_argcheck(L, instructions > 0, 2, "budget must be positive");
	luaL_argcheck(L, bytes > 0, 3, "memory cap must be positive");
	luaL_argcheck(L, seconds > 0, 4, "time limit must be positive");
	if (current)
		return luaL_error(L, "sandbox.run cannot nest");

	void *ud;
	lua_getallocf(L, &ud);
	struct rt_alloc *a = ud;
	lua_remove(L, 4);
	lua_remove(L, 3);
	lua_remove(L, 2); /* fn, args... */
	int nargs = lua_gettop(L) - 1;

	struct budget b = { instructions, clock_mono() + seconds, ALIVE };
	current = &b;
	a->exceeded = 0;
	a->metered = 0;
	a->refused = 0;
	a->limit = a->used + (size_t)bytes;
	lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
	lua_sethook(L, NULL, 0, 0);
	current = NULL;
	a->limit = 0;
	a->refused = 0;
	int exceeded = a->exceeded;
	a->exceeded = 0;

	if (b.killed != ALIVE || exceeded || rc != LUA_OK) {
		const char *why = lua_tostring(L, -1);
		lua_settop(L, 0);
		lua_pushboolean(L, 0);
		if (b.killed == KILL_TIME && seconds == (lua_Number)(lua_Integer)seconds)
			lua_pushfstring(L, "time limit of %I seconds exceeded", (lua_Integer)seconds);
		else if (b.killed == KILL_TIME)
			lua_pushfstring(L, "time limit of %f seconds exceeded", seconds);
		else if (b.killed == KILL_BUDGET)
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

/* sandbox.outside(fn, ...): calls fn(...) off the sandbox's clock and
 * budget (a hook's Dokku command runs the engine's code and waits for Dokku:
 * neither is the hook's time). Errors pass through; a killed sandbox stays
 * killed. Outside a sandbox: a plain call. */
static int l_outside(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	int nargs = lua_gettop(L) - 1;
	struct budget *b = current;
	if (!b) {
		lua_call(L, nargs, LUA_MULTRET);
		return lua_gettop(L);
	}
	if (b->killed != ALIVE)
		return luaL_error(L, "%s", kill_message(b));
	double t0 = clock_mono();
	current = NULL;
	lua_sethook(L, NULL, 0, 0);
	int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
	b->deadline += clock_mono() - t0;
	current = b;
	lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	if (rc != LUA_OK)
		return lua_error(L);
	return lua_gettop(L);
}

/* sandbox.charge(units): for Lua wrappers of C functions whose work the
 * count hook does not see (table.sort). */
static int l_charge(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	if (n > 0)
		sandbox_charge(L, (long long)n);
	return 0;
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
		{ "outside", l_outside },
		{ "charge", l_charge },
		{ "memory", l_memory },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
