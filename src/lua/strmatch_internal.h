/* strmatch_internal: the metered pattern matcher (strmatch_engine.c, after
 * lstrlib.c of Lua 5.4) shared with the string functions built on it
 * (strmatch.c). Nothing outside these two files uses it. */
#ifndef MRPROV_STRMATCH_INTERNAL_H
#define MRPROV_STRMATCH_INTERNAL_H

#include <lua.h>
#include <stddef.h>

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

/* Adds units of work; charged to the sandbox every METER_EVERY. */
void strmatch_meter(struct mstate *ms, long long units);
/* Charges what is left. */
void strmatch_meter_flush(struct mstate *ms);
/* The end of a match of p at s, or NULL. */
const char *strmatch_match(struct mstate *ms, const char *s, const char *p);
/* A plain search, charged by the characters it compares. */
const char *strmatch_mem_find(struct mstate *ms, const char *s1, size_t l1, const char *s2, size_t l2);
ptrdiff_t strmatch_get_capture(struct mstate *ms, int i, const char *s, const char *e, const char **cap);
void strmatch_push_capture(struct mstate *ms, int i, const char *s, const char *e);
int strmatch_push_captures(struct mstate *ms, const char *s, const char *e);
/* Whether p (lp bytes, maybe with NULs) has no special character. */
int strmatch_no_specials(const char *p, size_t lp);
void strmatch_prep(struct mstate *ms, lua_State *L, const char *s, size_t ls, const char *p, size_t lp);
/* Before each match attempt. */
void strmatch_reprep(struct mstate *ms);

#endif
