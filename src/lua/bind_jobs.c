/* bind_jobs: jobs.notify() wakes the workers after a job was queued;
 * jobs.stopping() / jobs.sleep(s) let a job stop at a checkpoint on SIGTERM;
 * jobs.wait(id, seconds) blocks until that job finished or time ran out
 * and returns whether it finished. */
#include "jobs/jobs.h"
#include "lua/runtime.h"

#include <lauxlib.h>

static int l_notify(lua_State *L)
{
	(void)L;
	jobs_notify();
	return 0;
}

static int l_wait(lua_State *L)
{
	const char *id = luaL_checkstring(L, 1);
	double secs = luaL_checknumber(L, 2);
	luaL_argcheck(L, secs >= 0 && secs <= 600, 2, "0..600 seconds");
	lua_pushboolean(L, jobs_wait(id, secs) == 1);
	return 1;
}

/* stopping() → true once SIGTERM asked the workers to stop. */
static int l_stopping(lua_State *L)
{
	lua_pushboolean(L, jobs_stopping());
	return 1;
}

/* sleep(seconds) → true when it slept, false when a stop cut it short. */
static int l_sleep(lua_State *L)
{
	double secs = luaL_checknumber(L, 1);
	luaL_argcheck(L, secs >= 0 && secs <= 600, 1, "0..600 seconds");
	lua_pushboolean(L, jobs_sleep(secs));
	return 1;
}

int luaopen_mrprov_jobs(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "stopping", l_stopping },
		{ "sleep", l_sleep },
		{ "notify", l_notify },
		{ "wait", l_wait },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
