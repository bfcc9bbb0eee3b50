/* bind_json: the deterministic JSON encoder of lua/json.lua, in C. It knows
 * nothing of mrprov: lua/json.lua defines the format and hands in its
 * markers (json.null, the json.array metatable) and its own encoder, which
 * this one calls for any table with another metatable, so the output is
 * byte for byte what the Lua encoder writes (tests/lua/json_spec.lua
 * compares them). Rules, as in json.lua: object keys sorted as Lua's `<`
 * sorts strings; a table is an array when marked, or when #t > 0 and it
 * has exactly #t pairs; integers "%d", floats "%.14g"; only '"', '\' and
 * control characters escaped; nesting deeper than 64 tables refused. */
#include "lua/runtime.h"

#include <ctype.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define UV_NULL lua_upvalueindex(1)
#define UV_ARRAY_MT lua_upvalueindex(2)
#define UV_FALLBACK lua_upvalueindex(3)

/* The output: a C array while it is small, then a userdata at stack index
 * `slot`, replaced by a bigger one as it grows (an error unwinds without
 * leaking; the allocator cap of the state applies). */
struct out {
	lua_State *L;
	char *p;
	size_t len, cap;
	int slot;
	char small[2048];
};

static void out_grow(struct out *o, size_t need)
{
	size_t cap = o->cap;
	while (cap - o->len < need)
		cap *= 2;
	char *p = lua_newuserdatauv(o->L, cap, 0);
	memcpy(p, o->p, o->len);
	lua_replace(o->L, o->slot);
	o->p = p;
	o->cap = cap;
}

static inline void out_add(struct out *o, const char *s, size_t n)
{
	if (o->cap - o->len < n)
		out_grow(o, n);
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static inline void out_addc(struct out *o, char c)
{
	if (o->len == o->cap)
		out_grow(o, 1);
	o->p[o->len++] = c;
}

/* json.lua's encode_string: '"', '\' and what %c matches (iscntrl). */
static void add_string(struct out *o, const char *s, size_t n)
{
	out_addc(o, '"');
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f ? c != '"' && c != '\\' : !iscntrl(c))
			continue;
		out_add(o, s + run, i - run);
		run = i + 1;
		char esc[8];
		const char *e = esc;
		switch (c) {
		case '"': e = "\\\""; break;
		case '\\': e = "\\\\"; break;
		case '\b': e = "\\b"; break;
		case '\f': e = "\\f"; break;
		case '\n': e = "\\n"; break;
		case '\r': e = "\\r"; break;
		case '\t': e = "\\t"; break;
		default: snprintf(esc, sizeof esc, "\\u%04x", c); break;
		}
		out_add(o, e, strlen(e));
	}
	out_add(o, s + run, n - run);
	out_addc(o, '"');
}

/* Lua's own string order (lvm.c l_strcmp): strcoll, piece by piece across
 * embedded NULs, so the keys sort as table.sort sorts them. */
struct key {
	const char *s;
	size_t len;
	int idx; /* of the key on the stack; its value is at idx + 1 */
};

static int key_cmp(const void *a, const void *b)
{
	const char *l = ((const struct key *)a)->s, *r = ((const struct key *)b)->s;
	size_t ll = ((const struct key *)a)->len, lr = ((const struct key *)b)->len;
	for (;;) {
		int t = strcoll(l, r);
		if (t != 0)
			return t;
		size_t len = strlen(l);
		if (len == lr)
			return len == ll ? 0 : 1;
		if (len == ll)
			return -1;
		len++;
		l += len;
		ll -= len;
		r += len;
		lr -= len;
	}
}

/* What LUA_INTEGER_FMT writes, without the printf machinery. */
static void add_integer(struct out *o, lua_Integer v)
{
	char buf[24];
	lua_Unsigned u = v < 0 ? 0u - (lua_Unsigned)v : (lua_Unsigned)v;
	char *e = buf + sizeof buf, *p = e;
	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	out_add(o, p, (size_t)(e - p));
}

static void add_value(struct out *o, int idx, int depth);

static void add_table(struct out *o, int t, int depth)
{
	lua_State *L = o->L;
	if (depth > MAX_DEPTH) {
		lua_pushliteral(L, "json: nesting too deep");
		lua_error(L);
	}
	luaL_checkstack(L, 6, "json: nesting too deep");
	int is_array;
	lua_Integer n;
	if (lua_getmetatable(L, t)) {
		if (!lua_rawequal(L, -1, UV_ARRAY_MT)) {
			/* Another metatable (__index, __len, __pairs ...): json.lua's encoder. */
			lua_pop(L, 1);
			lua_pushvalue(L, UV_FALLBACK);
			lua_pushvalue(L, t);
			lua_pushinteger(L, depth);
			lua_call(L, 2, 1);
			size_t len;
			const char *s = lua_tolstring(L, -1, &len);
			out_add(o, s, len);
			lua_pop(L, 1);
			return;
		}
		lua_pop(L, 1);
		is_array = 1;
		n = (lua_Integer)lua_rawlen(L, t);
	} else {
		n = (lua_Integer)lua_rawlen(L, t);
		is_array = 0;
		if (n > 0) {
			lua_Integer count = 0;
			lua_pushnil(L);
			while (lua_next(L, t)) {
				count++;
				lua_pop(L, 1);
			}
			is_array = count == n;
		}
	}
	if (is_array) {
		out_addc(o, '[');
		for (lua_Integer i = 1; i <= n; i++) {
			if (i > 1)
				out_addc(o, ',');
			lua_rawgeti(L, t, i);
			add_value(o, lua_gettop(L), depth + 1);
			lua_pop(L, 1);
		}
		out_addc(o, ']');
		return;
	}
	/* Every key and its value go onto the stack as pairs (no lookup by key
	 * afterwards); then the keys are sorted by reference. */
	int base = lua_gettop(L);
	size_t nk = 0;
	lua_pushnil(L);
	while (lua_next(L, t)) {
		if (lua_type(L, -2) != LUA_TSTRING) {
			lua_pushfstring(L, "json: object keys must be strings, got %s", luaL_typename(L, -2));
			lua_error(L);
		}
		luaL_checkstack(L, 4, "json: object too large");
		lua_pushvalue(L, -2); /* the pair stays; the copy on top drives lua_next */
		nk++;
	}
	struct key few[32], *keys = few;
	if (nk > sizeof few / sizeof few[0]) /* a userdata: freed by the collector, even on error */
		keys = lua_newuserdatauv(L, nk * sizeof *keys, 0);
	for (size_t i = 0; i < nk; i++) {
		keys[i].idx = base + 1 + 2 * (int)i;
		keys[i].s = lua_tolstring(L, keys[i].idx, &keys[i].len);
	}
	/* Keys are distinct, so any sort gives table.sort's order; few keys
	 * (the usual case) sort faster by insertion than through qsort. */
	if (nk > 16) {
		qsort(keys, nk, sizeof *keys, key_cmp);
	} else {
		for (size_t i = 1; i < nk; i++) {
			struct key k = keys[i];
			size_t j = i;
			for (; j > 0 && key_cmp(&keys[j - 1], &k) > 0; j--)
				keys[j] = keys[j - 1];
			keys[j] = k;
		}
	}
	out_addc(o, '{');
	for (size_t i = 0; i < nk; i++) {
		if (i > 0)
			out_addc(o, ',');
		add_string(o, keys[i].s, keys[i].len);
		out_addc(o, ':');
		add_value(o, keys[i].idx + 1, depth + 1);
	}
	out_addc(o, '}');
	lua_settop(L, base);
}

static void add_value(struct out *o, int idx, int depth)
{
	lua_State *L = o->L;
	switch (lua_type(L, idx)) {
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		add_string(o, s, n);
		return;
	}
	case LUA_TNUMBER: {
		char buf[64];
		int n;
		if (lua_isinteger(L, idx)) {
			add_integer(o, lua_tointeger(L, idx));
			return;
		} else {
			lua_Number v = lua_tonumber(L, idx);
			if (isnan(v) || isinf(v)) {
				lua_pushfstring(L, "json: cannot encode %s", luaL_tolstring(L, idx, NULL));
				lua_error(L);
			}
			/* "%.14g" of an integral value below 1e14 is its integer
			 * digits (cjson decodes every number as a float). */
			if (v == 0 && !signbit(v)) {
				out_addc(o, '0');
				return;
			}
			if (v > -1e14 && v < 1e14 && v != 0 && v == (lua_Number)(long long)v) {
				add_integer(o, (lua_Integer)v);
				return;
			}
			n = snprintf(buf, sizeof buf, "%.14g", (double)v);
		}
		out_add(o, buf, (size_t)n);
		return;
	}
	case LUA_TBOOLEAN:
		if (lua_toboolean(L, idx))
			out_add(o, "true", 4);
		else
			out_add(o, "false", 5);
		return;
	case LUA_TNIL:
	case LUA_TNONE:
		out_add(o, "null", 4);
		return;
	case LUA_TTABLE:
		add_table(o, idx, depth);
		return;
	default:
		if (lua_rawequal(L, idx, UV_NULL)) {
			out_add(o, "null", 4);
			return;
		}
		lua_pushfstring(L, "json: cannot encode a %s", luaL_typename(L, idx));
		lua_error(L);
	}
}

/* encode(v) → the JSON text; errors as json.lua raises them (no position). */
static int l_encode(lua_State *L)
{
	lua_settop(L, 1);
	lua_pushnil(L); /* the slot of a grown output buffer */
	struct out o = { .L = L, .slot = 2, .cap = sizeof o.small };
	o.p = o.small;
	add_value(&o, 1, 0);
	lua_pushlstring(L, o.p, o.len);
	return 1;
}

/* encoder(null, array_mt, fallback) → encode, bound to json.lua's markers;
 * fallback(t, depth) → text encodes a table with a foreign metatable. */
static int l_encoder(lua_State *L)
{
	luaL_checkany(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	luaL_checktype(L, 3, LUA_TFUNCTION);
	lua_settop(L, 3);
	lua_pushcclosure(L, l_encode, 3);
	return 1;
}

int luaopen_mrprov_json(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "encoder", l_encoder },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
