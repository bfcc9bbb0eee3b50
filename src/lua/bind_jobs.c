/* bind_jobs: jobs.notify() wakes the workers after a job was queued;
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

int luaopen_mrprov_jobs(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "notify", l_notify },
		{ "wait", l_wait },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
