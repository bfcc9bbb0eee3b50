/* The store binding of the binary (src/lua/bind_store.c over src/store) as
 * a Lua C module for the busted specs, which run in the stock lua5.4:
 * build/lib/mrprov/store_memory.so. luaopen_mrprov_store_memory opens a
 * fresh in-memory SQLite store, its schema migrated by the real store code,
 * and returns the same table `mrprov.store` is inside the binary, plus
 * reset() (a fresh empty store: close and open again). One connection, on
 * the thread that loads it (store connections are per thread). */
#include "lua/runtime.h"
#include "store/store.h"
#include "util/log.h"

#include <lauxlib.h>

int luaopen_mrprov_store_memory(lua_State *L);

static int open_memory(lua_State *L)
{
	char err[256];
	store_close();
	if (store_open(":memory:", 0, err, sizeof err) < 0)
		return luaL_error(L, "%s", err);
	return 0;
}

static int l_reset(lua_State *L)
{
	return open_memory(L);
}

int luaopen_mrprov_store_memory(lua_State *L)
{
	log_set_level(LOG_ERROR); /* no "schema migrated" line per spec */
	open_memory(L);
	luaopen_mrprov_store(L);
	lua_pushcfunction(L, l_reset);
	lua_setfield(L, -2, "reset");
	return 1;
}
