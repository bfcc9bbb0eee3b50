/* strmatch: string.find, string.match, string.gmatch and string.gsub with a
 * meter, for every state mrprov builds.
 *
 * Lua's own pattern matcher backtracks in C, where the sandbox's count hook
 * never fires: one string.find with a pattern like ("a*"):rep(30) .. "b"
 * runs for minutes inside a single VM instruction. These functions match
 * exactly as Lua 5.4's do (same patterns, captures, errors and limits; the
 * structure follows lstrlib.c of Lua 5.4, MIT licence, Copyright (C)
 * 1994-2022 Lua.org, PUC-Rio) but count their work -- each pattern item
 * tried, each character a class or a plain search looks at -- and hand it to
 * sandbox_charge() every METER_EVERY units, which raises once a sandboxed
 * function is out of instructions or time. Outside a sandbox the charge is a
 * thread-local read.
 *
 * string.rep gets the same treatment for its one C loop that allocates
 * nothing ((""):rep(2^50) spins), and string.dump goes: no code in mrprov
 * needs bytecode, and every string's metatable reaches the string table. */
#include "lua/runtime.h"
#include "lua/strmatch_internal.h"

#include <ctype.h>
#include <limits.h>
#include <lauxlib.h>
#include <stddef.h>
#include <string.h>

/* A start position (1-based, negative from the end) as an offset + 1. */
static size_t pos_init(lua_Integer pos, size_t len)
{
	if (pos > 0)
		return (size_t)pos;
	if (pos == 0)
		return 1;
	if (pos < -(lua_Integer)len)
		return 1;
	return len + (size_t)pos + 1;
}

static int find_aux(lua_State *L, int find)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = pos_init(luaL_optinteger(L, 3, 1), ls) - 1;
	if (init > ls) {
		luaL_pushfail(L);
		return 1;
	}
	struct mstate ms;
	if (find && (lua_toboolean(L, 4) || strmatch_no_specials(p, lp))) {
		strmatch_prep(&ms, L, s, ls, p, lp);
		const char *s2 = strmatch_mem_find(&ms, s + init, ls - init, p, lp);
		strmatch_meter_flush(&ms);
		if (s2) {
			lua_pushinteger(L, (s2 - s) + 1);
			lua_pushinteger(L, (lua_Integer)((size_t)(s2 - s) + lp));
			return 2;
		}
	} else {
		const char *s1 = s + init;
		int anchor = (*p == '^');
		if (anchor) {
			p++;
			lp--;
		}
		strmatch_prep(&ms, L, s, ls, p, lp);
		do {
			strmatch_reprep(&ms);
			const char *res = strmatch_match(&ms, s1, p);
			if (res) {
				strmatch_meter_flush(&ms);
				if (find) {
					lua_pushinteger(L, (s1 - s) + 1);
					lua_pushinteger(L, res - s);
					return strmatch_push_captures(&ms, NULL, 0) + 2;
				}
				return strmatch_push_captures(&ms, s1, res);
			}
		} while (s1++ < ms.src_end && !anchor);
		strmatch_meter_flush(&ms);
	}
	luaL_pushfail(L);
	return 1;
}

static int str_find(lua_State *L)
{
	return find_aux(L, 1);
}

static int str_match(lua_State *L)
{
	return find_aux(L, 0);
}

struct gmatch_state {
	const char *src;
	const char *p;
	const char *lastmatch; /* the end of the last match: not matched empty again */
	struct mstate ms;
};

static int gmatch_aux(lua_State *L)
{
	struct gmatch_state *gm = lua_touserdata(L, lua_upvalueindex(3));
	gm->ms.L = L;
	for (const char *src = gm->src; src <= gm->ms.src_end; src++) {
		strmatch_reprep(&gm->ms);
		const char *e = strmatch_match(&gm->ms, src, gm->p);
		if (e && e != gm->lastmatch) {
			gm->src = gm->lastmatch = e;
			strmatch_meter_flush(&gm->ms);
			return strmatch_push_captures(&gm->ms, src, e);
		}
	}
	strmatch_meter_flush(&gm->ms);
	return 0;
}

static int str_gmatch(lua_State *L)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = pos_init(luaL_optinteger(L, 3, 1), ls) - 1;
	lua_settop(L, 2); /* the closure keeps both strings alive */
	struct gmatch_state *gm = lua_newuserdatauv(L, sizeof *gm, 0);
	if (init > ls)
		init = ls + 1; /* past the end: no match */
	strmatch_prep(&gm->ms, L, s, ls, p, lp);
	gm->src = s + init;
	gm->p = p;
	gm->lastmatch = NULL;
	lua_pushcclosure(L, gmatch_aux, 3);
	return 1;
}

static void add_s(struct mstate *ms, luaL_Buffer *b, const char *s, const char *e)
{
	size_t l;
	lua_State *L = ms->L;
	const char *news = lua_tolstring(L, 3, &l);
	const char *p;
	strmatch_meter(ms, (long long)l);
	while ((p = memchr(news, L_ESC, l)) != NULL) {
		luaL_addlstring(b, news, (size_t)(p - news));
		p++; /* the escape */
		if (*p == L_ESC) {
			luaL_addchar(b, *p);
		} else if (*p == '0') {
			luaL_addlstring(b, s, (size_t)(e - s));
		} else if (isdigit((unsigned char)*p)) {
			const char *cap;
			ptrdiff_t resl = strmatch_get_capture(ms, *p - '1', s, e, &cap);
			if (resl == CAP_POSITION)
				luaL_addvalue(b); /* the position pushed by get_capture */
			else
				luaL_addlstring(b, cap, (size_t)resl);
		} else {
			luaL_error(L, "invalid use of '%c' in replacement string", L_ESC);
		}
		l -= (size_t)(p + 1 - news);
		news = p + 1;
	}
	luaL_addlstring(b, news, l);
}

/* Adds the replacement of one match; 0 when the match is kept as it was. */
static int add_value(struct mstate *ms, luaL_Buffer *b, const char *s, const char *e, int tr)
{
	lua_State *L = ms->L;
	switch (tr) {
	case LUA_TFUNCTION: {
		lua_pushvalue(L, 3);
		int n = strmatch_push_captures(ms, s, e);
		lua_call(L, n, 1);
		break;
	}
	case LUA_TTABLE:
		strmatch_push_capture(ms, 0, s, e);
		lua_gettable(L, 3);
		break;
	default: /* a string or a number */
		add_s(ms, b, s, e);
		return 1;
	}
	if (!lua_toboolean(L, -1)) { /* nil or false: keep the original */
		lua_pop(L, 1);
		luaL_addlstring(b, s, (size_t)(e - s));
		return 0;
	}
	if (!lua_isstring(L, -1))
		return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	luaL_addvalue(b);
	return 1;
}

static int str_gsub(lua_State *L)
{
	size_t srcl, lp;
	const char *src = luaL_checklstring(L, 1, &srcl);
	const char *p = luaL_checklstring(L, 2, &lp);
	const char *lastmatch = NULL;
	int tr = lua_type(L, 3);
	lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
	int anchor = (*p == '^');
	lua_Integer n = 0;
	int changed = 0;
	struct mstate ms;
	luaL_Buffer b;
	luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
			 "string/function/table");
	luaL_buffinit(L, &b);
	if (anchor) {
		p++;
		lp--;
	}
	strmatch_prep(&ms, L, src, srcl, p, lp);
	while (n < max_s) {
		strmatch_reprep(&ms);
		const char *e = strmatch_match(&ms, src, p);
		if (e && e != lastmatch) {
			n++;
			changed = add_value(&ms, &b, src, e, tr) | changed;
			src = lastmatch = e;
		} else if (src < ms.src_end) {
			luaL_addchar(&b, *src++);
		} else {
			break;
		}
		if (anchor)
			break;
	}
	strmatch_meter_flush(&ms);
	if (!changed) {
		lua_pushvalue(L, 1); /* the subject itself */
	} else {
		luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
		luaL_pushresult(&b);
	}
	lua_pushinteger(L, n);
	return 2;
}

/* string.rep: Lua's own (upvalue 1) but for an empty result, which Lua
 * builds with n empty copies, allocating nothing. The copying is charged
 * like matching (a byte per 8 units: memcpy is cheap). */
static int str_rep(lua_State *L)
{
	size_t l, lsep;
	luaL_checklstring(L, 1, &l);
	lua_Integer n = luaL_checkinteger(L, 2);
	luaL_optlstring(L, 3, "", &lsep);
	if (n <= 0 || l + lsep == 0) {
		lua_pushliteral(L, "");
		return 1;
	}
	if ((lua_Unsigned)n < (lua_Unsigned)LLONG_MAX / (l + lsep))
		sandbox_charge(L, (long long)((size_t)n * (l + lsep) / 8));
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

void strmatch_install(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "find", str_find },
		{ "match", str_match },
		{ "gmatch", str_gmatch },
		{ "gsub", str_gsub },
		{ NULL, NULL },
	};
	lua_getglobal(L, "string");
	luaL_setfuncs(L, fns, 0);
	lua_getfield(L, -1, "rep");
	lua_pushcclosure(L, str_rep, 1);
	lua_setfield(L, -2, "rep");
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
}
