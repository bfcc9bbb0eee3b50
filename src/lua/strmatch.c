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

#include <ctype.h>
#include <limits.h>
#include <lauxlib.h>
#include <stddef.h>
#include <string.h>

#define L_ESC '%'
#define SPECIALS "^$*+?.([%-"
#define MAXCAPTURES 32 /* LUA_MAXCAPTURES */
#define MAXCCALLS 200  /* recursion depth of one match, as Lua's */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define METER_EVERY 4096

struct mstate {
	const char *src_init, *src_end, *p_end;
	lua_State *L;
	int depth; /* calls of match() left before "pattern too complex" */
	int level; /* captures, finished or not */
	long long work; /* units not yet charged */
	struct {
		const char *init;
		ptrdiff_t len;
	} capture[MAXCAPTURES];
};

static void meter(struct mstate *ms, long long units)
{
	ms->work += units;
	if (ms->work >= METER_EVERY) {
		long long w = ms->work;
		ms->work = 0;
		sandbox_charge(ms->L, w);
	}
}

static void meter_flush(struct mstate *ms)
{
	long long w = ms->work;
	ms->work = 0;
	if (w > 0)
		sandbox_charge(ms->L, w);
}

static const char *match(struct mstate *ms, const char *s, const char *p);

static int check_capture(struct mstate *ms, int l)
{
	l -= '1';
	if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
		return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
	return l;
}

static int capture_to_close(struct mstate *ms)
{
	for (int level = ms->level - 1; level >= 0; level--)
		if (ms->capture[level].len == CAP_UNFINISHED)
			return level;
	return luaL_error(ms->L, "invalid pattern capture");
}

static const char *class_end(struct mstate *ms, const char *p)
{
	switch (*p++) {
	case L_ESC:
		if (p == ms->p_end)
			luaL_error(ms->L, "malformed pattern (ends with '%%')");
		return p + 1;
	case '[':
		if (*p == '^')
			p++;
		do { /* up to the closing ']'; "%]" does not close */
			if (p == ms->p_end)
				luaL_error(ms->L, "malformed pattern (missing ']')");
			if (*(p++) == L_ESC && p < ms->p_end)
				p++;
		} while (*p != ']');
		return p + 1;
	default:
		return p;
	}
}

static int match_class(int c, int cl)
{
	int res;
	switch (tolower(cl)) {
	case 'a': res = isalpha(c); break;
	case 'c': res = iscntrl(c); break;
	case 'd': res = isdigit(c); break;
	case 'g': res = isgraph(c); break;
	case 'l': res = islower(c); break;
	case 'p': res = ispunct(c); break;
	case 's': res = isspace(c); break;
	case 'u': res = isupper(c); break;
	case 'w': res = isalnum(c); break;
	case 'x': res = isxdigit(c); break;
	case 'z': res = (c == 0); break; /* deprecated, still accepted by 5.4 */
	default: return cl == c;
	}
	if (isupper(cl))
		res = !res;
	return res != 0;
}

/* p at '[', ec at the closing ']'. */
static int match_bracket_class(int c, const char *p, const char *ec)
{
	int sig = 1;
	if (*(p + 1) == '^') {
		sig = 0;
		p++;
	}
	while (++p < ec) {
		if (*p == L_ESC) {
			p++;
			if (match_class(c, (unsigned char)*p))
				return sig;
		} else if (*(p + 1) == '-' && p + 2 < ec) {
			p += 2;
			if ((unsigned char)*(p - 2) <= c && c <= (unsigned char)*p)
				return sig;
		} else if ((unsigned char)*p == c) {
			return sig;
		}
	}
	return !sig;
}

static int single_match(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	if (s >= ms->src_end)
		return 0;
	int c = (unsigned char)*s;
	switch (*p) {
	case '.':
		meter(ms, 1);
		return 1;
	case L_ESC:
		meter(ms, 1);
		return match_class(c, (unsigned char)*(p + 1));
	case '[':
		meter(ms, ep - p); /* a class costs its length */
		return match_bracket_class(c, p, ep - 1);
	default:
		meter(ms, 1);
		return (unsigned char)*p == c;
	}
}

static const char *match_balance(struct mstate *ms, const char *s, const char *p)
{
	if (p >= ms->p_end - 1)
		luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
	if (*s != *p)
		return NULL;
	int b = *p, e = *(p + 1), cont = 1;
	const char *from = s;
	while (++s < ms->src_end) {
		if (*s == e) {
			if (--cont == 0) {
				meter(ms, s - from);
				return s + 1;
			}
		} else if (*s == b) {
			cont++;
		}
	}
	meter(ms, s - from);
	return NULL; /* the string ends out of balance */
}

static const char *max_expand(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	ptrdiff_t i = 0;
	while (single_match(ms, s + i, p, ep))
		i++;
	/* the longest run first, then one shorter at a time */
	while (i >= 0) {
		const char *res = match(ms, s + i, ep + 1);
		if (res)
			return res;
		i--;
	}
	return NULL;
}

static const char *min_expand(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	for (;;) {
		const char *res = match(ms, s, ep + 1);
		if (res)
			return res;
		if (!single_match(ms, s, p, ep))
			return NULL;
		s++;
	}
}

static const char *start_capture(struct mstate *ms, const char *s, const char *p, int what)
{
	int level = ms->level;
	if (level >= MAXCAPTURES)
		luaL_error(ms->L, "too many captures");
	ms->capture[level].init = s;
	ms->capture[level].len = what;
	ms->level = level + 1;
	const char *res = match(ms, s, p);
	if (!res)
		ms->level--; /* undo the capture */
	return res;
}

static const char *end_capture(struct mstate *ms, const char *s, const char *p)
{
	int l = capture_to_close(ms);
	ms->capture[l].len = s - ms->capture[l].init;
	const char *res = match(ms, s, p);
	if (!res)
		ms->capture[l].len = CAP_UNFINISHED; /* undo */
	return res;
}

static const char *match_capture(struct mstate *ms, const char *s, int l)
{
	l = check_capture(ms, l);
	size_t len = (size_t)ms->capture[l].len;
	meter(ms, (long long)len);
	if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
		return s + len;
	return NULL;
}

static const char *match(struct mstate *ms, const char *s, const char *p)
{
	if (ms->depth-- == 0)
		luaL_error(ms->L, "pattern too complex");
init: /* goto instead of a tail call */
	meter(ms, 1);
	if (p != ms->p_end) {
		switch (*p) {
		case '(':
			if (*(p + 1) == ')')
				s = start_capture(ms, s, p + 2, CAP_POSITION);
			else
				s = start_capture(ms, s, p + 1, CAP_UNFINISHED);
			break;
		case ')':
			s = end_capture(ms, s, p + 1);
			break;
		case '$':
			if (p + 1 != ms->p_end)
				goto dflt; /* not the pattern's end: a plain '$' */
			s = (s == ms->src_end) ? s : NULL;
			break;
		case L_ESC:
			switch (*(p + 1)) {
			case 'b':
				s = match_balance(ms, s, p + 2);
				if (s) {
					p += 4;
					goto init;
				}
				break;
			case 'f': {
				p += 2;
				if (*p != '[')
					luaL_error(ms->L, "missing '[' after '%%f' in pattern");
				const char *ep = class_end(ms, p);
				char previous = (s == ms->src_init) ? '\0' : *(s - 1);
				meter(ms, ep - p);
				if (!match_bracket_class((unsigned char)previous, p, ep - 1) &&
				    match_bracket_class((unsigned char)*s, p, ep - 1)) {
					p = ep;
					goto init;
				}
				s = NULL;
				break;
			}
			case '0': case '1': case '2': case '3': case '4':
			case '5': case '6': case '7': case '8': case '9':
				s = match_capture(ms, s, (unsigned char)*(p + 1));
				if (s) {
					p += 2;
					goto init;
				}
				break;
			default:
				goto dflt;
			}
			break;
		default:
dflt: {
			const char *ep = class_end(ms, p);
			if (!single_match(ms, s, p, ep)) {
				if (*ep == '*' || *ep == '?' || *ep == '-') { /* accept empty */
					p = ep + 1;
					goto init;
				}
				s = NULL;
			} else {
				const char *res;
				switch (*ep) {
				case '?':
					res = match(ms, s + 1, ep + 1);
					if (res) {
						s = res;
					} else {
						p = ep + 1;
						goto init;
					}
					break;
				case '+':
					s = max_expand(ms, s + 1, p, ep);
					break;
				case '*':
					s = max_expand(ms, s, p, ep);
					break;
				case '-':
					s = min_expand(ms, s, p, ep);
					break;
				default:
					s++;
					p = ep;
					goto init;
				}
			}
			break;
		}
		}
	}
	ms->depth++;
	return s;
}

/* A plain search, charged by the characters it compares. */
static const char *mem_find(struct mstate *ms, const char *s1, size_t l1, const char *s2, size_t l2)
{
	if (l2 == 0)
		return s1;
	if (l2 > l1)
		return NULL;
	const char *end = s1 + (l1 - l2) + 1; /* the last start that fits, plus one */
	while (s1 < end) {
		const char *at = memchr(s1, *s2, (size_t)(end - s1));
		if (!at) {
			meter(ms, end - s1);
			return NULL;
		}
		size_t k = 1;
		while (k < l2 && at[k] == s2[k])
			k++;
		meter(ms, (at - s1) + (long long)k);
		if (k == l2)
			return at;
		s1 = at + 1;
	}
	return NULL;
}

static ptrdiff_t get_capture(struct mstate *ms, int i, const char *s, const char *e, const char **cap)
{
	if (i >= ms->level) {
		if (i != 0)
			luaL_error(ms->L, "invalid capture index %%%d", i + 1);
		*cap = s; /* no captures: the whole match */
		return e - s;
	}
	ptrdiff_t capl = ms->capture[i].len;
	*cap = ms->capture[i].init;
	if (capl == CAP_UNFINISHED)
		luaL_error(ms->L, "unfinished capture");
	else if (capl == CAP_POSITION)
		lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
	return capl;
}

static void push_capture(struct mstate *ms, int i, const char *s, const char *e)
{
	const char *cap;
	ptrdiff_t l = get_capture(ms, i, s, e, &cap);
	if (l != CAP_POSITION) /* a position is pushed already */
		lua_pushlstring(ms->L, cap, (size_t)l);
}

static int push_captures(struct mstate *ms, const char *s, const char *e)
{
	int n = (ms->level == 0 && s) ? 1 : ms->level;
	luaL_checkstack(ms->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		push_capture(ms, i, s, e);
	return n;
}

/* Whether p (lp bytes, maybe with NULs) has no special character. */
static int no_specials(const char *p, size_t lp)
{
	size_t upto = 0;
	do {
		if (strpbrk(p + upto, SPECIALS))
			return 0;
		upto += strlen(p + upto) + 1;
	} while (upto <= lp);
	return 1;
}

static void prep_state(struct mstate *ms, lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
	ms->L = L;
	ms->src_init = s;
	ms->src_end = s + ls;
	ms->p_end = p + lp;
	ms->work = 0;
}

static void reprep_state(struct mstate *ms)
{
	ms->level = 0;
	ms->depth = MAXCCALLS; /* also after a match that raised (gmatch keeps its state) */
}

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
	if (find && (lua_toboolean(L, 4) || no_specials(p, lp))) {
		prep_state(&ms, L, s, ls, p, lp);
		const char *s2 = mem_find(&ms, s + init, ls - init, p, lp);
		meter_flush(&ms);
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
		prep_state(&ms, L, s, ls, p, lp);
		do {
			reprep_state(&ms);
			const char *res = match(&ms, s1, p);
			if (res) {
				meter_flush(&ms);
				if (find) {
					lua_pushinteger(L, (s1 - s) + 1);
					lua_pushinteger(L, res - s);
					return push_captures(&ms, NULL, 0) + 2;
				}
				return push_captures(&ms, s1, res);
			}
		} while (s1++ < ms.src_end && !anchor);
		meter_flush(&ms);
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
		reprep_state(&gm->ms);
		const char *e = match(&gm->ms, src, gm->p);
		if (e && e != gm->lastmatch) {
			gm->src = gm->lastmatch = e;
			meter_flush(&gm->ms);
			return push_captures(&gm->ms, src, e);
		}
	}
	meter_flush(&gm->ms);
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
	prep_state(&gm->ms, L, s, ls, p, lp);
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
	meter(ms, (long long)l);
	while ((p = memchr(news, L_ESC, l)) != NULL) {
		luaL_addlstring(b, news, (size_t)(p - news));
		p++; /* the escape */
		if (*p == L_ESC) {
			luaL_addchar(b, *p);
		} else if (*p == '0') {
			luaL_addlstring(b, s, (size_t)(e - s));
		} else if (isdigit((unsigned char)*p)) {
			const char *cap;
			ptrdiff_t resl = get_capture(ms, *p - '1', s, e, &cap);
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
		int n = push_captures(ms, s, e);
		lua_call(L, n, 1);
		break;
	}
	case LUA_TTABLE:
		push_capture(ms, 0, s, e);
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
	prep_state(&ms, L, src, srcl, p, lp);
	while (n < max_s) {
		reprep_state(&ms);
		const char *e = match(&ms, src, p);
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
	meter_flush(&ms);
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
