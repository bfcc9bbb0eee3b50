/* runtime: Lua states for mrprov. Builds a state (libraries, the mrprov.*
 * bindings, a require searcher over the generation's LUA_DIR, then
 * `boot.load()` which reads tiers and hooks from the same in-memory files),
 * runs every C→Lua call through one protected-call helper, and keeps the
 * configuration generation. A lua_State is used by one thread at a time:
 * workers own theirs; HTTP requests borrow one from a pool. */
#ifndef MRPROV_RUNTIME_H
#define MRPROV_RUNTIME_H

#include <lua.h>
#include <stddef.h>

struct config;

void rt_init(const struct config *cfg, const char *version);
const struct config *rt_config(void);
const char *rt_version(void);
/* Seconds since rt_init. */
double rt_uptime(void);

/* Every state's allocator counts; limit (0: none) caps it while a sandboxed
 * function runs. */
struct rt_alloc {
	size_t used;
	size_t limit;
	int exceeded;
	size_t metered; /* bytes allocated under a limit since the sandbox last looked at the clock */
	int refused;	/* the sandbox ran out of time: growing allocations fail */
};

/* A new state on the current generation, or NULL with `file:line: message`.
 * Close it with rt_close_state. */
lua_State *rt_new_state(char *err, size_t errlen);
/* The generation a state was built on. */
unsigned rt_state_generation(lua_State *L);
/* The files of that generation (lua/sources.h), read when it was loaded. */
struct sources *rt_state_sources(lua_State *L);
void rt_close_state(lua_State *L);
unsigned rt_generation(void);
/* Builds and checks a new generation; on success new work uses it. *took
 * (when not NULL) gets the seconds it took, also observed in
 * mrprov_config_reload_duration_seconds. */
int rt_reload(char *err, size_t errlen, double *took);
/* The last reload error, or "" (copied into out). */
void rt_last_error(char *out, size_t outlen);
/* The last reload since start: *at its wall-clock time (0: none yet), *ok
 * whether it loaded, err the error of the last refused one ("" once one
 * loaded). */
void rt_last_reload(double *at, int *ok, char *err, size_t errlen);

/* Calls the function below nargs arguments with a traceback handler. On
 * error returns -1, leaves the stack as it was before the function was
 * pushed, and copies the message into err. */
int rt_pcall(lua_State *L, int nargs, int nresults, char *err, size_t errlen);
/* Pushes module[fname] (require(module)) onto the stack; -1 when missing.
 * Found once per state, then kept in its registry. */
int rt_getfunc(lua_State *L, const char *module, const char *fname, char *err, size_t errlen);

/* Pool for short borrowers (HTTP requests). */
lua_State *rt_acquire(char *err, size_t errlen);
void rt_release(lua_State *L);
void rt_pool_drain(void);

/* The sandbox (sandbox.c) bounds what a sandboxed function runs, also
 * inside C: work a C function does without running VM instructions is
 * charged here, in instructions. Raises once the running sandbox is out of
 * instructions or time; does nothing outside a sandbox. */
void sandbox_charge(lua_State *L, long long units);
/* For the allocator: 1 when a sandboxed function has run out of time (the
 * allocation then fails and the sandbox reports the time limit). */
int sandbox_alloc_tick(void);
/* string.find/match/gmatch/gsub with a meter, string.rep that cannot spin,
 * no string.dump (strmatch.c); on every state. */
void strmatch_install(lua_State *L);

/* Bindings (one file each). */
int luaopen_mrprov_store(lua_State *L);
int luaopen_mrprov_crypto(lua_State *L);
int luaopen_mrprov_log(lua_State *L);
int luaopen_mrprov_metrics(lua_State *L);
int luaopen_mrprov_sys(lua_State *L);
int luaopen_mrprov_dokku(lua_State *L);
int luaopen_mrprov_jobs(lua_State *L);
int luaopen_mrprov_outbox(lua_State *L);
int luaopen_mrprov_sandbox(lua_State *L);
int luaopen_mrprov_json(lua_State *L);
int luaopen_mrprov_http(lua_State *L);
int luaopen_mrprov_supabase(lua_State *L);

#endif
