/* scratch: binding memory owned by the Lua stack (scratch.h). */
#include "lua/scratch.h"
#include "util/sbuf.h"

#include <lauxlib.h>
#include <stdalign.h>
#include <string.h>

#define SCRATCH_MT "mrprov.scratch"

struct scratch {
	void (*release)(void *block);
	alignas(max_align_t) unsigned char block[];
};

/* __close and __gc: runs release once. */
static int scratch_close(lua_State *L)
{
	struct scratch *s = luaL_checkudata(L, 1, SCRATCH_MT);
	void (*release)(void *) = s->release;
	s->release = NULL;
	if (release)
		release(s->block);
	return 0;
}

void *scratch_push(lua_State *L, size_t size, void (*release)(void *block))
{
	struct scratch *s = lua_newuserdatauv(L, sizeof *s + size, 0);
	s->release = NULL; /* nothing to release until the metatable is set */
	memset(s->block, 0, size);
	if (luaL_newmetatable(L, SCRATCH_MT)) {
		lua_pushcfunction(L, scratch_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, scratch_close);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	lua_toclose(L, -1);
	s->release = release;
	return s->block;
}

static void release_sbuf(void *block)
{
	sbuf_free(block);
}

struct sbuf *scratch_sbuf(lua_State *L)
{
	struct sbuf *b = scratch_push(L, sizeof *b, release_sbuf);
	sbuf_init(b);
	return b;
}
