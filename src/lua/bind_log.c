/* bind_log: JSON-lines logging for Lua: log.info(msg [, fields]) etc.
 * fields is a flat table of strings, numbers and booleans. */
#include "lua/runtime.h"
#include "lua/scratch.h"
#include "util/log.h"
#include "util/sbuf.h"

#include <lauxlib.h>
#include <string.h>

static int do_log(lua_State *L, enum log_level level)
{
	const char *msg = luaL_checkstring(L, 1);
	if (!log_enabled(level))
		return 0;
	lua_settop(L, 2); /* the scratch buffer goes above the arguments */
	/* On the Lua stack: a __tostring that raises must not leak it. */
	struct sbuf *f = scratch_sbuf(L);
	if (lua_istable(L, 2)) {
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			if (lua_type(L, -2) == LUA_TSTRING) {
				size_t kl;
				const char *k = lua_tolstring(L, -2, &kl);
				if (f->len)
					sbuf_addc(f, ',');
				sbuf_add_json_string(f, k, kl);
				sbuf_addc(f, ':');
				int t = lua_type(L, -1);
				if (t == LUA_TNUMBER) {
					if (lua_isinteger(L, -1))
						sbuf_printf(f, "%lld", (long long)lua_tointeger(L, -1));
					else
						sbuf_printf(f, "%.6g", lua_tonumber(L, -1));
				} else if (t == LUA_TBOOLEAN) {
					sbuf_adds(f, lua_toboolean(L, -1) ? "true" : "false");
				} else {
					size_t vl;
					const char *v = luaL_tolstring(L, -1, &vl);
					sbuf_add_json_string(f, v, vl);
					lua_pop(L, 1);
				}
			}
			lua_pop(L, 1);
		}
	}
	log_write(level, msg, f->data);
	return 0;
}

static int l_debug(lua_State *L) { return do_log(L, LOG_DEBUG); }
static int l_info(lua_State *L) { return do_log(L, LOG_INFO); }
static int l_warn(lua_State *L) { return do_log(L, LOG_WARNING); }
static int l_error(lua_State *L) { return do_log(L, LOG_ERROR); }

static int l_enabled(lua_State *L)
{
	int lv = log_level_parse(luaL_checkstring(L, 1));
	lua_pushboolean(L, lv >= 0 && log_enabled((enum log_level)lv));
	return 1;
}

int luaopen_mrprov_log(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "debug", l_debug },
		{ "info", l_info },
		{ "warn", l_warn },
		{ "error", l_error },
		{ "enabled", l_enabled },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
