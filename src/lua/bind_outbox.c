/* bind_outbox: outbox.notify() wakes the Supabase sender after rows were
 * committed; outbox.enabled() tells whether Supabase is configured. */
#include "config.h"
#include "lua/runtime.h"
#include "supabase/outbox.h"

#include <lauxlib.h>

static int l_notify(lua_State *L)
{
	(void)L;
	outbox_notify();
	return 0;
}

static int l_enabled(lua_State *L)
{
	const struct config *c = rt_config();
	lua_pushboolean(L, c && c->supabase_url != NULL);
	return 1;
}

int luaopen_mrprov_outbox(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "notify", l_notify },
		{ "enabled", l_enabled },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
