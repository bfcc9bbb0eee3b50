/* Unit tests for the Lua bindings' scratch memory (src/lua/bind_*.c): a
 * binding that raises after it has allocated C memory, or whose result
 * cannot be pushed (the state is out of memory: the sandbox's cap), leaks
 * nothing. Each case runs in a loop; the C heap must not grow beyond what
 * the Lua state itself holds, and under ASan, LeakSanitizer checks at exit. */
#include "check.h"
#include "dokku/transport.h"
#include "lua/runtime.h"
#include "util/log.h"

#include <lauxlib.h>
#include <lualib.h>
#include <malloc.h>
#include <stdlib.h>

struct counted {
	size_t used;
	size_t limit; /* 0: none */
};

static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct counted *a = ud;
	size_t old = ptr ? osize : 0;
	if (nsize == 0) {
		free(ptr);
		a->used -= old;
		return NULL;
	}
	if (a->limit && nsize > old && a->used + (nsize - old) > a->limit)
		return NULL;
	void *p = realloc(ptr, nsize);
	if (p)
		a->used = a->used - old + nsize;
	return p;
}

static struct counted mem;

/* C heap in use, less what the Lua state holds; 0 when unknown (ASan's
 * allocator keeps no mallinfo). */
static long c_heap(lua_State *L)
{
	lua_gc(L, LUA_GCCOLLECT);
	lua_gc(L, LUA_GCCOLLECT);
	struct mallinfo2 mi = mallinfo2();
	if (mi.uordblks == 0)
		return 0;
	return (long)mi.uordblks - (long)mem.used;
}

/* Runs chunk (a function body returning nothing) `times` times, each in a
 * pcall; returns how many raised. */
static int run_raising(lua_State *L, const char *chunk, int times)
{
	if (luaL_loadstring(L, chunk) != LUA_OK) {
		fprintf(stderr, "chunk: %s\n", lua_tostring(L, -1));
		exit(2);
	}
	int raised = 0;
	for (int i = 0; i < times; i++) {
		lua_pushvalue(L, -1);
		if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
			raised++;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return raised;
}

/* Calls the chunk's function once per limit from the current use up, so
 * that somewhere between the C work and the last push the state runs out
 * of memory; returns how many calls failed. */
static int run_starved(lua_State *L, const char *chunk, size_t span, size_t step)
{
	if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
		fprintf(stderr, "chunk: %s\n", lua_tostring(L, -1));
		exit(2);
	}
	int failed = 0;
	for (size_t extra = 0; extra < span; extra += step) {
		lua_gc(L, LUA_GCCOLLECT);
		lua_gc(L, LUA_GCSTOP);
		lua_pushvalue(L, -1);
		mem.limit = mem.used + extra;
		int rc = lua_pcall(L, 0, 0, 0);
		mem.limit = 0;
		if (rc != LUA_OK) {
			failed++;
			lua_pop(L, 1);
		}
		lua_gc(L, LUA_GCRESTART);
	}
	lua_pop(L, 1);
	return failed;
}

#define LEAK_BOUND 16384 /* bytes of C heap growth over a whole loop */

static void check_no_growth(lua_State *L, long before, const char *what)
{
	long after = c_heap(L);
	if (before && after && after - before > LEAK_BOUND) {
		fprintf(stderr, "%s: the C heap grew by %ld bytes\n", what, after - before);
		CHECK(0);
	} else {
		CHECK(1);
	}
}

int main(void)
{
	log_set_level(LOG_ERROR);
	char err[256];
	/* Local mode runs `echo ARGS`: real output, allocated by the transport. */
	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "echo", err, sizeof err) == 0);
	lua_State *L = lua_newstate(alloc, &mem);
	luaL_openlibs(L);
	luaL_requiref(L, "mrprov.dokku", luaopen_mrprov_dokku, 0);
	lua_setglobal(L, "dokku");
	luaL_requiref(L, "mrprov.log", luaopen_mrprov_log, 0);
	lua_setglobal(L, "log");
	luaL_requiref(L, "mrprov.crypto", luaopen_mrprov_crypto, 0);
	lua_setglobal(L, "crypto");
	luaL_requiref(L, "mrprov.metrics", luaopen_mrprov_metrics, 0);
	lua_setglobal(L, "metrics");
	/* What the bindings give is unchanged by where their memory lives. */
	static const char values[] =
		"assert(crypto.base64('foobar') == 'Zm9vYmFy')\n"
		"assert(crypto.base64('\\251\\255') == '+/8=')\n"
		"assert(crypto.base64('\\251\\255', true) == '-_8')\n"
		"assert(crypto.base64('') == '')\n"
		"assert(crypto.base64_decode('Zm8') == 'fo' and crypto.base64_decode('-_8') == '\\251\\255')\n"
		"local ok, why = crypto.base64_decode('Zm$8') assert(ok == nil and why == 'not base64')\n"
		"local r = assert(dokku.run({'some', 'output'}))\n"
		"assert(r.exit == 0 and r.stdout == 'some output\\n' and r.stderr == '' and r.bytes == 12)\n"
		"local rs = dokku.run_many({ {argv={'one'}}, {argv={'two', 'words'}, timeout=5} })\n"
		"assert(#rs == 2 and rs[1].ok.stdout == 'one\\n' and rs[2].ok.stdout == 'two words\\n')\n"
		"local bad, err = dokku.run({'a b'}) assert(bad == nil and err:find('refused'))\n"
		"log.error('fields', { a = 1, b = true })\n";
	if (luaL_dostring(L, values) != LUA_OK) {
		fprintf(stderr, "values: %s\n", lua_tostring(L, -1));
		CHECK(0);
		lua_pop(L, 1);
	} else {
		CHECK(1);
	}

	/* Warm up what lives for the process (metric series, stdio buffers). */
	run_raising(L, "dokku.run({'warm'}) dokku.run_many({ {argv={'warm'}} }) crypto.base64('x')", 2);

	long before = c_heap(L);
	/* run_many reads its calls after allocating room for them: the second
	 * call's bad argument raises. */
	CHECK(run_raising(L, "dokku.run_many({ {argv={'a'}}, {argv={'b', 5}} })", 500) == 500);
	CHECK(run_raising(L, "dokku.run_many({ {argv={'a'}}, {argv='x'} })", 500) == 500);
	check_no_growth(L, before, "run_many raising in its arguments");

	/* log.info's field rendering raises in a __tostring after it has begun
	 * the fields' text. */
	before = c_heap(L);
	CHECK(run_raising(L,
			  "log.error('m', { a = 'x', b = 'y', c = setmetatable({}, { __tostring = function() "
			  "error('boom') end }) })",
			  500) == 500);
	check_no_growth(L, before, "log raising in __tostring");

	/* metrics.inc raising on a label after others. */
	before = c_heap(L);
	CHECK(run_raising(L, "metrics.inc('mrprov_dokku_commands_total', { a = 'x', [1] = 'y' })", 200) == 200);
	check_no_growth(L, before, "metrics raising in its labels");

	/* The state runs out of memory while a result is pushed: the command's
	 * output (C memory) must still be freed. */
	before = c_heap(L);
	CHECK(run_starved(L, "return function() dokku.run({'some', 'output'}) end", 2048, 16) > 0);
	CHECK(run_starved(L,
			  "return function() dokku.run_many({ {argv={'one'}}, {argv={'two', 'words'}}, {argv={'3'}} }) "
			  "end",
			  4096, 32) > 0);
	check_no_growth(L, before, "dokku results that cannot be pushed");

	before = c_heap(L);
	CHECK(run_starved(L,
			  "local s = string.rep('x', 3000) return function() crypto.base64(s) crypto.base64(s, true) "
			  "crypto.base64_decode('eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4') end",
			  8192, 64) > 0);
	check_no_growth(L, before, "crypto results that cannot be pushed");

	lua_close(L);
	transport_shutdown();
	return check_done();
}
