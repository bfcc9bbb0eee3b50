/* runtime: building, calling and pooling Lua states. */
#include "lua/runtime.h"
#include "config.h"
#include "lua/sources.h"
#include "metrics.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/xalloc.h"

#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct config *cfg;
static const char *version_str;
static atomic_uint generation = 1;
static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[1024];
/* The last reload's wall-clock time (0: none since start) and outcome. */
static double last_reload_at;
static int last_reload_ok;
static struct timespec started;

#define POOL_MAX 32
static lua_State *pool[POOL_MAX];
static int pool_n;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

static const char GEN_KEY[] = "mrprov.generation";
static const char SOURCES_KEY[] = "mrprov.sources";

/* The published generation's files; states of that generation, built now
 * or later, load from it (gen_lock: the pointer and the number change
 * together). NULL until the first state is built. */
static struct sources *current_sources;
/* The generation whose checks (boot.load's sample builds) have run: once per
 * generation, by its first state (start-up) or by rt_reload; the states
 * built after it skip them. Guarded by gen_lock. */
static unsigned checked_gen;
static pthread_mutex_t gen_lock = PTHREAD_MUTEX_INITIALIZER;

void rt_init(const struct config *c, const char *version)
{
	cfg = c;
	version_str = version;
	clock_gettime(CLOCK_MONOTONIC, &started);
	metrics_set("mrprov_config_generation", NULL, generation);
}

const struct config *rt_config(void)
{
	return cfg;
}

const char *rt_version(void)
{
	return version_str;
}

double rt_uptime(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)(ts.tv_sec - started.tv_sec) + (double)(ts.tv_nsec - started.tv_nsec) / 1e9;
}

unsigned rt_generation(void)
{
	return atomic_load(&generation);
}

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (!msg) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			return 1;
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	/* Keep the message first; the traceback follows after a marker line. */
	luaL_traceback(L, L, msg, 1);
	return 1;
}

int rt_pcall(lua_State *L, int nargs, int nresults, char *err, size_t errlen)
{
	int base = lua_gettop(L) - nargs; /* the function's index */
	lua_pushcfunction(L, traceback);
	lua_insert(L, base);
	int rc = lua_pcall(L, nargs, nresults, base);
	lua_remove(L, base);
	if (rc == LUA_OK)
		return 0;
	const char *full = lua_tostring(L, -1);
	if (!full)
		full = "(no message)";
	const char *cut = strstr(full, "\nstack traceback:");
	size_t n = cut ? (size_t)(cut - full) : strlen(full);
	if (err)
		snprintf(err, errlen, "%.*s", (int)n, full);
	log_debug("lua error: %s", full);
	lua_pop(L, 1);
	return -1;
}

/* Registry table: module name → { function name → function }, filled by
 * rt_getfunc. A state's modules are loaded once and not replaced, so the
 * lookup (a require in a protected call) is done once per state and not on
 * every HTTP request. */
static const char FUNCS_KEY[] = "mrprov.functions";

static void remember_func(lua_State *L, const char *module, const char *fname)
{
	luaL_getsubtable(L, LUA_REGISTRYINDEX, FUNCS_KEY);
	luaL_getsubtable(L, -1, module);
	lua_pushvalue(L, -3);
	lua_setfield(L, -2, fname);
	lua_pop(L, 2);
}

int rt_getfunc(lua_State *L, const char *module, const char *fname, char *err, size_t errlen)
{
	int top = lua_gettop(L);
	if (lua_getfield(L, LUA_REGISTRYINDEX, FUNCS_KEY) == LUA_TTABLE && lua_getfield(L, -1, module) == LUA_TTABLE &&
	    lua_getfield(L, -1, fname) == LUA_TFUNCTION) {
		lua_replace(L, top + 1);
		lua_settop(L, top + 1);
		return 0;
	}
	lua_settop(L, top);
	lua_getglobal(L, "require");
	lua_pushstring(L, module);
	if (rt_pcall(L, 1, 1, err, errlen) < 0)
		return -1;
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "lua module %s did not return a table", module);
		lua_pop(L, 1);
		return -1;
	}
	lua_getfield(L, -1, fname);
	lua_remove(L, -2);
	if (!lua_isfunction(L, -1)) {
		snprintf(err, errlen, "lua module %s has no function %s", module, fname);
		lua_pop(L, 1);
		return -1;
	}
	remember_func(L, module, fname);
	return 0;
}

static void preload(lua_State *L, const char *name, lua_CFunction f)
{
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	lua_pushcfunction(L, f);
	lua_setfield(L, -2, name);
	lua_pop(L, 1);
}

/* The allocator of every state keeps count, so the sandbox can cap what a
 * hook allocates (and, while one runs, its deadline). A cap never fails a
 * shrink or a free. */
static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct rt_alloc *a = ud;
	size_t old = ptr ? osize : 0;
	if (nsize == 0) {
		free(ptr);
		a->used -= old;
		return NULL;
	}
	if (a->limit && nsize > old) {
		if (a->used + (nsize - old) > a->limit) {
			a->exceeded = 1;
			return NULL;
		}
		/* C code that builds big strings runs few VM instructions: the
		 * sandbox's clock is also read every MiB allocated. Once out of
		 * time, nothing more (not even after an emergency collection). */
		a->metered += nsize - old;
		if (a->metered >= ((size_t)1 << 20)) {
			a->metered = 0;
			a->refused = a->refused || sandbox_alloc_tick();
		}
		if (a->refused)
			return NULL;
	}
	/* Not xrealloc: Lua turns NULL into a memory error it can report. */
	void *p = realloc(ptr, nsize);
	if (!p)
		return NULL;
	a->used = a->used - old + nsize;
	return p;
}

static int panic(lua_State *L)
{
	log_error("lua panic: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
	return 0; /* abort() follows */
}

struct sources *rt_state_sources(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, SOURCES_KEY);
	struct sources *s = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return s;
}

void rt_close_state(lua_State *L)
{
	void *ud;
	lua_getallocf(L, &ud);
	struct sources *s = rt_state_sources(L);
	lua_close(L);
	free(ud);
	sources_unref(s);
}

/* package.searchers entry for LUA_DIR: modules come from the generation's
 * sources, never from the files as they are now. */
static int search_sources(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	struct sources *s = rt_state_sources(L);
	size_t len = 0;
	const char *path = NULL, *err = NULL;
	const char *data = s ? sources_module(s, name, &len, &path, &err) : NULL;
	if (!data) {
		if (err)
			return luaL_error(L, "error loading module '%s':\n\t%s", name, err);
		lua_pushfstring(L, "no module '%s' in LUA_DIR as loaded", name);
		return 1;
	}
	const char *chunkname = lua_pushfstring(L, "@%s", path);
	if (luaL_loadbuffer(L, data, len, chunkname) != LUA_OK)
		return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, path,
				  lua_tostring(L, -1));
	lua_remove(L, -2);
	lua_pushstring(L, path);
	return 2;
}

static lua_State *build_state(unsigned gen, struct sources *src, int checking, char *err, size_t errlen)
{
	struct rt_alloc *a = xcalloc(1, sizeof *a);
	lua_State *L = lua_newstate(counting_alloc, a);
	if (L)
		lua_atpanic(L, panic);
	else
		free(a);
	if (!L) {
		snprintf(err, errlen, "cannot create a Lua state (out of memory)");
		return NULL;
	}
	sources_ref(src);
	lua_pushlightuserdata(L, src);
	lua_setfield(L, LUA_REGISTRYINDEX, SOURCES_KEY);
	luaL_openlibs(L);
	strmatch_install(L);
	preload(L, "mrprov.store", luaopen_mrprov_store);
	preload(L, "mrprov.crypto", luaopen_mrprov_crypto);
	preload(L, "mrprov.log", luaopen_mrprov_log);
	preload(L, "mrprov.metrics", luaopen_mrprov_metrics);
	preload(L, "mrprov.sys", luaopen_mrprov_sys);
	preload(L, "mrprov.dokku", luaopen_mrprov_dokku);
	preload(L, "mrprov.jobs", luaopen_mrprov_jobs);
	preload(L, "mrprov.outbox", luaopen_mrprov_outbox);
	preload(L, "mrprov.sandbox", luaopen_mrprov_sandbox);
	preload(L, "mrprov.json", luaopen_mrprov_json);
	preload(L, "mrprov.http", luaopen_mrprov_http);
	preload(L, "mrprov.supabase", luaopen_mrprov_supabase);

	/* LUA_DIR's modules from the generation's sources first, then the
	 * system paths (cjson, lyaml). */
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "searchers");
	for (lua_Integer i = (lua_Integer)luaL_len(L, -1); i >= 2; i--) {
		lua_rawgeti(L, -1, i);
		lua_rawseti(L, -2, i + 1);
	}
	lua_pushcfunction(L, search_sources);
	lua_rawseti(L, -2, 2);
	lua_pop(L, 2);

	lua_pushinteger(L, gen);
	lua_setfield(L, LUA_REGISTRYINDEX, GEN_KEY);

	if (rt_getfunc(L, "boot", "load", err, errlen) < 0)
		goto fail;
	lua_pushboolean(L, checking);
	if (rt_pcall(L, 1, 2, err, errlen) < 0)
		goto fail;
	if (!lua_toboolean(L, -2)) {
		snprintf(err, errlen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "boot.load failed");
		goto fail;
	}
	lua_pop(L, 2);
	return L;
fail:
	rt_close_state(L);
	return NULL;
}

lua_State *rt_new_state(char *err, size_t errlen)
{
	pthread_mutex_lock(&gen_lock);
	if (!current_sources)
		current_sources = sources_read(cfg->lua_dir, cfg->tiers_dir, cfg->profiles_dir, cfg->hooks_dir, cfg->hosts_dir);
	struct sources *src = current_sources;
	sources_ref(src);
	unsigned gen = rt_generation();
	int checking = checked_gen != gen;
	pthread_mutex_unlock(&gen_lock);
	lua_State *L = build_state(gen, src, checking, err, errlen);
	if (L && checking) {
		pthread_mutex_lock(&gen_lock);
		checked_gen = gen;
		pthread_mutex_unlock(&gen_lock);
	}
	sources_unref(src);
	return L;
}

unsigned rt_state_generation(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, GEN_KEY);
	unsigned g = (unsigned)lua_tointeger(L, -1);
	lua_pop(L, 1);
	return g;
}

int rt_reload(char *err, size_t errlen, double *took)
{
	pthread_mutex_lock(&reload_lock);
	double t0 = clock_mono();
	unsigned next = rt_generation() + 1;
	/* The files are read once here; every state of the new generation is
	 * built from these bytes, even one built long after. */
	struct sources *src = sources_read(cfg->lua_dir, cfg->tiers_dir, cfg->profiles_dir, cfg->hooks_dir, cfg->hosts_dir);
	lua_State *L = build_state(next, src, 1, err, errlen);
	int rc = -1;
	if (L) {
		/* Checked whole: publish, then let borrowers rebuild between requests. */
		rt_close_state(L);
		pthread_mutex_lock(&gen_lock);
		struct sources *old = current_sources;
		current_sources = src;
		src = old;
		atomic_store(&generation, next);
		checked_gen = next;
		pthread_mutex_unlock(&gen_lock);
		last_error[0] = '\0';
		metrics_add("mrprov_config_reloads_total", "outcome=\"success\"", 1);
		metrics_set("mrprov_config_generation", NULL, next);
		rc = 0;
	} else {
		snprintf(last_error, sizeof last_error, "%s", err);
		metrics_add("mrprov_config_reloads_total", "outcome=\"failure\"", 1);
	}
	sources_unref(src); /* the replaced generation's, or the refused one */
	last_reload_at = clock_real();
	last_reload_ok = rc == 0;
	double dt = clock_mono() - t0;
	metrics_observe("mrprov_config_reload_duration_seconds", rc == 0 ? "outcome=\"success\"" : "outcome=\"failure\"",
			dt);
	if (took)
		*took = dt;
	pthread_mutex_unlock(&reload_lock);
	return rc;
}

void rt_last_error(char *out, size_t outlen)
{
	pthread_mutex_lock(&reload_lock);
	snprintf(out, outlen, "%s", last_error);
	pthread_mutex_unlock(&reload_lock);
}

void rt_last_reload(double *at, int *ok, char *err, size_t errlen)
{
	pthread_mutex_lock(&reload_lock);
	*at = last_reload_at;
	*ok = last_reload_ok;
	snprintf(err, errlen, "%s", last_error);
	pthread_mutex_unlock(&reload_lock);
}

lua_State *rt_acquire(char *err, size_t errlen)
{
	lua_State *L = NULL;
	pthread_mutex_lock(&pool_lock);
	if (pool_n > 0)
		L = pool[--pool_n];
	pthread_mutex_unlock(&pool_lock);
	if (L && rt_state_generation(L) != rt_generation()) {
		rt_close_state(L);
		L = NULL;
	}
	if (!L)
		L = rt_new_state(err, errlen);
	return L;
}

void rt_release(lua_State *L)
{
	if (!L)
		return;
	lua_settop(L, 0);
	pthread_mutex_lock(&pool_lock);
	if (pool_n < POOL_MAX && rt_state_generation(L) == rt_generation()) {
		pool[pool_n++] = L;
		L = NULL;
	}
	pthread_mutex_unlock(&pool_lock);
	if (L)
		rt_close_state(L);
}

void rt_pool_drain(void)
{
	pthread_mutex_lock(&pool_lock);
	while (pool_n > 0)
		rt_close_state(pool[--pool_n]);
	pthread_mutex_unlock(&pool_lock);
}
