/* bind_metrics: metrics.inc(name, labels, v), metrics.set(...),
 * metrics.observe(...), metrics.drop(name, labels) (a gauge's series). labels is a table of strings; unknown families raise. */
#include "lua/runtime.h"
#include "lua/scratch.h"
#include "metrics.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pair {
	char key[64];
	char value[128];
};

static int cmp(const void *a, const void *b)
{
	return strcmp(((const struct pair *)a)->key, ((const struct pair *)b)->key);
}

/* Renders the table at idx into b, keys sorted; values are copied so no
 * Lua string needs to stay alive. */
static void labels(lua_State *L, int idx, struct sbuf *b)
{
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	struct pair pairs[16];
	memset(pairs, 0, sizeof pairs);
	int n = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (n == 16)
			luaL_error(L, "metrics: at most 16 labels");
		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L, "metrics: label names must be strings");
		snprintf(pairs[n].key, sizeof pairs[n].key, "%s", lua_tostring(L, -2));
		snprintf(pairs[n].value, sizeof pairs[n].value, "%s", luaL_tolstring(L, -1, NULL));
		lua_pop(L, 2);
		n++;
	}
	qsort(pairs, (size_t)n, sizeof pairs[0], cmp);
	const char *kv[32];
	for (int i = 0; i < n; i++) {
		kv[2 * i] = pairs[i].key;
		kv[2 * i + 1] = pairs[i].value;
	}
	metrics_labels(b, kv, n);
}

typedef int (*update_fn)(const char *, const char *, double);

static int update(lua_State *L, update_fn fn)
{
	const char *name = luaL_checkstring(L, 1);
	double v = luaL_optnumber(L, 3, 1);
	lua_settop(L, 3);
	struct sbuf *b = scratch_sbuf(L); /* freed even when a label raises */
	labels(L, 2, b);
	int rc = fn(name, b->data, v);
	if (rc < 0)
		return luaL_error(L, "metrics: no %s family named %s", fn == metrics_add ? "counter"
								   : fn == metrics_set ? "gauge" : "histogram", name);
	return 0;
}

static int l_inc(lua_State *L) { return update(L, metrics_add); }
static int l_set(lua_State *L) { return update(L, metrics_set); }
static int l_observe(lua_State *L) { return update(L, metrics_observe); }

/* drop(name, labels): removes a gauge's series. */
static int l_drop(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	lua_settop(L, 2);
	struct sbuf *b = scratch_sbuf(L);
	labels(L, 2, b);
	if (metrics_drop(name, b->data) < 0)
		return luaL_error(L, "metrics: no gauge family named %s", name);
	return 0;
}

int luaopen_mrprov_metrics(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "inc", l_inc },
		{ "set", l_set },
		{ "observe", l_observe },
		{ "drop", l_drop },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
