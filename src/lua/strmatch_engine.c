/* strmatch engine: Lua 5.4's pattern matcher with a meter (see strmatch.c
 * for why). The structure follows lstrlib.c of Lua 5.4, MIT licence,
 * Copyright (C) 1994-2022 Lua.org, PUC-Rio. */
#include "lua/runtime.h"
#include "lua/strmatch_internal.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stddef.h>
#include <string.h>

void strmatch_meter(struct mstate *ms, long long units)
{
	ms->work += units;
	if (ms->work >= METER_EVERY) {
		long long w = ms->work;
		ms->work = 0;
		sandbox_charge(ms->L, w);
	}
}

void strmatch_meter_flush(struct mstate *ms)
{
	long long w = ms->work;
	ms->work = 0;
	if (w > 0)
		sandbox_charge(ms->L, w);
}


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
		strmatch_meter(ms, 1);
		return 1;
	case L_ESC:
		strmatch_meter(ms, 1);
		return match_class(c, (unsigned char)*(p + 1));
	case '[':
		strmatch_meter(ms, ep - p); /* a class costs its length */
		return match_bracket_class(c, p, ep - 1);
	default:
		strmatch_meter(ms, 1);
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
				strmatch_meter(ms, s - from);
				return s + 1;
			}
		} else if (*s == b) {
			cont++;
		}
	}
	strmatch_meter(ms, s - from);
	return NULL; /* the string ends out of balance */
}

static const char *max_expand(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	ptrdiff_t i = 0;
	while (single_match(ms, s + i, p, ep))
		i++;
	/* the longest run first, then one shorter at a time */
	while (i >= 0) {
		const char *res = strmatch_match(ms, s + i, ep + 1);
		if (res)
			return res;
		i--;
	}
	return NULL;
}

static const char *min_expand(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	for (;;) {
		const char *res = strmatch_match(ms, s, ep + 1);
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
	const char *res = strmatch_match(ms, s, p);
	if (!res)
		ms->level--; /* undo the capture */
	return res;
}

static const char *end_capture(struct mstate *ms, const char *s, const char *p)
{
	int l = capture_to_close(ms);
	ms->capture[l].len = s - ms->capture[l].init;
	const char *res = strmatch_match(ms, s, p);
	if (!res)
		ms->capture[l].len = CAP_UNFINISHED; /* undo */
	return res;
}

static const char *match_capture(struct mstate *ms, const char *s, int l)
{
	l = check_capture(ms, l);
	size_t len = (size_t)ms->capture[l].len;
	strmatch_meter(ms, (long long)len);
	if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
		return s + len;
	return NULL;
}

const char *strmatch_match(struct mstate *ms, const char *s, const char *p)
{
	if (ms->depth-- == 0)
		luaL_error(ms->L, "pattern too complex");
init: /* goto instead of a tail call */
	strmatch_meter(ms, 1);
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
				strmatch_meter(ms, ep - p);
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
					res = strmatch_match(ms, s + 1, ep + 1);
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
const char *strmatch_mem_find(struct mstate *ms, const char *s1, size_t l1, const char *s2, size_t l2)
{
	if (l2 == 0)
		return s1;
	if (l2 > l1)
		return NULL;
	const char *end = s1 + (l1 - l2) + 1; /* the last start that fits, plus one */
	while (s1 < end) {
		const char *at = memchr(s1, *s2, (size_t)(end - s1));
		if (!at) {
			strmatch_meter(ms, end - s1);
			return NULL;
		}
		size_t k = 1;
		while (k < l2 && at[k] == s2[k])
			k++;
		strmatch_meter(ms, (at - s1) + (long long)k);
		if (k == l2)
			return at;
		s1 = at + 1;
	}
	return NULL;
}

ptrdiff_t strmatch_get_capture(struct mstate *ms, int i, const char *s, const char *e, const char **cap)
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

void strmatch_push_capture(struct mstate *ms, int i, const char *s, const char *e)
{
	const char *cap;
	ptrdiff_t l = strmatch_get_capture(ms, i, s, e, &cap);
	if (l != CAP_POSITION) /* a position is pushed already */
		lua_pushlstring(ms->L, cap, (size_t)l);
}

int strmatch_push_captures(struct mstate *ms, const char *s, const char *e)
{
	int n = (ms->level == 0 && s) ? 1 : ms->level;
	luaL_checkstack(ms->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		strmatch_push_capture(ms, i, s, e);
	return n;
}

/* Whether p (lp bytes, maybe with NULs) has no special character. */
int strmatch_no_specials(const char *p, size_t lp)
{
	size_t upto = 0;
	do {
		if (strpbrk(p + upto, SPECIALS))
			return 0;
		upto += strlen(p + upto) + 1;
	} while (upto <= lp);
	return 1;
}

void strmatch_prep(struct mstate *ms, lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
	ms->L = L;
	ms->src_init = s;
	ms->src_end = s + ls;
	ms->p_end = p + lp;
	ms->work = 0;
}

void strmatch_reprep(struct mstate *ms)
{
	ms->level = 0;
	ms->depth = MAXCCALLS; /* also after a match that raised (gmatch keeps its state) */
}
