/* Unit tests for src/lua/strmatch.c and the sandbox's bounds inside C
 * (src/lua/sandbox.c): the metered pattern functions give what Lua 5.4's
 * own give (results and errors, over generated patterns and subjects), and
 * a sandboxed function is stopped inside one string.find whose pattern
 * backtracks for ever, inside (""):rep(huge), and by its time limit. */
#include "check.h"
#include "lua/runtime.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>

static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct rt_alloc *a = ud;
	size_t old = ptr ? osize : 0;
	if (nsize == 0) {
		free(ptr);
		a->used -= old;
		return NULL;
	}
	if (a->limit && nsize > old && a->used + (nsize - old) > a->limit) {
		a->exceeded = 1;
		return NULL;
	}
	void *p = realloc(ptr, nsize);
	if (p)
		a->used = a->used - old + nsize;
	return p;
}

/* Runs chunk; returns its string result (or the error), copied. */
static const char *run(lua_State *L, const char *chunk)
{
	static char out[4096];
	if (luaL_dostring(L, chunk) != LUA_OK) {
		snprintf(out, sizeof out, "error: %s", lua_tostring(L, -1));
	} else {
		const char *s = lua_tostring(L, -1);
		snprintf(out, sizeof out, "%s", s ? s : "(not a string)");
	}
	lua_settop(L, 0);
	return out;
}

/* The original functions stay reachable as orig.*, ours replace string.*. */
static const char DIFF[] =
	"local orig = orig\n"
	"local seed = 12345\n"
	"local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n + 1 end\n"
	"local atoms = { 'a', 'b', '.', '%a', '%d', '%s', '%w', '%A', '[ab]', '[^a]', '[a-c]', '[%d_]', '%%',\n"
	"  '(', ')', '()', '%1', '%2', '%b()', '%f[%w]', '%f[%W]', '$', '^', '[', ']', '%', '-', '*', '+', '?',\n"
	"  'x', '\\0', '%z', '%g', '%p', '%u', '%l', '%c', '%x', '[%]]', '[a-]', '[]]', '%0' }\n"
	"local chars = { 'a', 'b', 'c', '1', '2', ' ', '(', ')', '_', 'x', '%', '\\0', '.', 'A' }\n"
	"local function gen(list, max) local t = {} for i = 1, rnd(max) - 1 do t[i] = list[rnd(#list)] end\n"
	"  return table.concat(t) end\n"
	"local function pack(ok, ...) return { ok = ok, n = select('#', ...), ... } end\n"
	"local function same(a, b)\n"
	"  if a.ok ~= b.ok or a.n ~= b.n then return false end\n"
	"  for i = 1, a.n do if a[i] ~= b[i] then return false end end\n"
	"  return true\n"
	"end\n"
	"local function show(r) local t = { tostring(r.ok) } for i = 1, r.n do t[#t + 1] = string.format('%q', r[i]) end\n"
	"  return table.concat(t, ',') end\n"
	"local function iter(f, s, p, init) local out = {} for a, b in f(s, p, init) do out[#out + 1] = tostring(a) .. '|'\n"
	"  .. tostring(b) if #out > 50 then break end end return table.concat(out, ';') end\n"
	"local repls = { '<%0>', '%1', '%%', '', 'x%2y', '%', '%q', { a = 'A', b = false },\n"
	"  function(a) if a == 'a' then return nil end return '[' .. tostring(a) .. ']' end, 7 }\n"
	"local n = 0\n"
	"for _ = 1, 30000 do\n"
	"  local p, s = gen(atoms, 7), gen(chars, 12)\n"
	"  local init = ({ nil, 1, 2, -1, -3, 0, 20 })[rnd(7)]\n"
	"  local repl, max = repls[rnd(#repls)], ({ nil, 0, 1, 2 })[rnd(4)]\n"
	"  local cases = {\n"
	"    { 'find', function(f) return f(s, p, init) end, 'find' },\n"
	"    { 'find plain', function(f) return f(s, p, init, true) end, 'find' },\n"
	"    { 'match', function(f) return f(s, p, init) end, 'match' },\n"
	"    { 'gsub', function(f) return f(s, p, repl, max) end, 'gsub' },\n"
	"    { 'gmatch', function(f) return iter(f, s, p, init) end, 'gmatch' },\n"
	"  }\n"
	"  for _, c in ipairs(cases) do\n"
	"    local name = c[3] -- not found with a pattern: the harness uses no function under test\n"
	"    local a = pack(pcall(c[2], orig[name]))\n"
	"    local b = pack(pcall(c[2], string[name]))\n"
	"    if not same(a, b) then\n"
	"      return string.format('%s differs for s=%q p=%q init=%s: lua %s, ours %s', c[1], s, p, tostring(init),\n"
	"        show(a), show(b))\n"
	"    end\n"
	"    n = n + 1\n"
	"  end\n"
	"end\n"
	"return 'same ' .. n\n";

int main(void)
{
	struct rt_alloc a = { 0 };
	lua_State *L = lua_newstate(alloc, &a);
	luaL_openlibs(L);
	/* Lua's own functions, for comparison. */
	lua_newtable(L);
	lua_getglobal(L, "string");
	const char *names[] = { "find", "match", "gmatch", "gsub", "rep", NULL };
	for (int i = 0; names[i]; i++) {
		lua_getfield(L, -1, names[i]);
		lua_setfield(L, -3, names[i]);
	}
	lua_pop(L, 1);
	lua_setglobal(L, "orig");
	strmatch_install(L);
	luaL_requiref(L, "sandbox", luaopen_mrprov_sandbox, 1);
	lua_pop(L, 1);

	/* string.dump is gone, also through a string's metatable. */
	CHECK_STR(run(L, "return tostring(string.dump) .. ' ' .. tostring(('').dump)"), "nil nil");

	/* Same results and errors as Lua's own. */
	const char *diff = run(L, DIFF);
	CHECK(strncmp(diff, "same ", 5) == 0);
	if (strncmp(diff, "same ", 5) != 0)
		fprintf(stderr, "%s\n", diff);
	CHECK_STR(run(L, "return (('hello world'):gsub('o', { o = '0' }))"), "hell0 w0rld");
	CHECK_STR(run(L, "return select(2, pcall(string.rep, 'x', -1)) .. ('ab'):rep(3, ',') .. ('')"), "ab,ab,ab");

	/* A pattern that backtracks for ever (30 nested a* over 5000 a's and
	 * no b) runs in one C call: stopped by the instruction budget. */
	CHECK_STR(run(L, "local ok, err = sandbox.run(function() return string.rep('a', 5000):find(string.rep('a*', 30)"
			 " .. 'b') end, 1000000, 8000000, 600)\n"
			 "return tostring(ok) .. ': ' .. err"),
		  "false: instruction budget of 1000000 exceeded");
	/* Also inside gsub, gmatch and match, through the metatable, and a
	 * pcall inside the sandbox does not swallow it. */
	CHECK_STR(run(L, "local ok, err = sandbox.run(function()\n"
			 "  while true do pcall(function() local s = ('a'):rep(3000)\n"
			 "    s:gsub(('a*'):rep(20) .. 'b', 'x') end) end end, 1000000, 8000000, 600)\n"
			 "return tostring(ok) .. ': ' .. err"),
		  "false: instruction budget of 1000000 exceeded");
	CHECK_STR(run(L, "local ok, err = sandbox.run(function() for _ in ('a'):rep(3000):gmatch(('a-'):rep(20) .. 'b')"
			 " do end end, 1000000, 8000000, 600)\n"
			 "return tostring(ok) .. ': ' .. err"),
		  "false: instruction budget of 1000000 exceeded");
	CHECK_STR(run(L, "local ok, err = sandbox.run(function() return ('('):rep(100000):match('%b()') end,"
			 " 1000000, 8000000, 600)\n"
			 "return tostring(ok) .. ': ' .. err"),
		  "false: instruction budget of 1000000 exceeded");
	/* A plain search that compares long prefixes over and over. */
	CHECK_STR(run(L, "local ok, err = sandbox.run(function() local s = ('a'):rep(2000000)\n"
			 "  return s:find(('a'):rep(1000000) .. 'b', 1, true) end, 1000000, 8000000, 600)\n"
			 "return tostring(ok) .. ': ' .. err"),
		  "false: instruction budget of 1000000 exceeded");
	/* (""):rep(huge) copies nothing n times in Lua's own. */
	CHECK_STR(run(L, "local ok, r = sandbox.run(function() return ('').rep('', 2^62) .. ('').rep('', 2^62, '') end,"
			 " 1000000, 8000000, 600)\n"
			 "return tostring(ok) .. ': [' .. r .. ']'"),
		  "true: []");
	CHECK_STR(run(L, "local ok, err = sandbox.run(function() return ('x'):rep(2^50) end, 1000000, 8000000, 600)\n"
			 "return tostring(ok) .. ': ' .. err"),
		  "false: instruction budget of 1000000 exceeded");
	/* The wall clock: a loop with an instruction budget it cannot spend. */
	CHECK_STR(run(L, "local ok, err = sandbox.run(function() while true do end end, 2^60, 8000000, 0.2)\n"
			 "return tostring(ok) .. ': ' .. err"),
		  "false: time limit of 0.2 seconds exceeded");
	/* Outside a sandbox nothing is charged, and the state is usable after. */
	CHECK_STR(run(L, "return tostring(('ab'):rep(3):find('b', 3)) .. ' ' .. select(2, ('aaa'):gsub('a', 'b'))"),
		  "4 3");
	/* sandbox.outside: the hook's clock stops while the engine works. */
	CHECK_STR(run(L, "local t0 = os.clock()\n"
			 "local ok, r = sandbox.run(function() return sandbox.outside(function(x)\n"
			 "  while os.clock() - t0 < 0.4 do end return x .. '!' end, 'done') end, 1000000, 8000000, 0.2)\n"
			 "return tostring(ok) .. ': ' .. tostring(r)"),
		  "true: done!");
	lua_close(L);
	return check_done();
}
