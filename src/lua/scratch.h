/* scratch: C memory a binding needs while it runs, owned by the Lua stack,
 * so that a binding that raises (a bad argument, a __tostring that errors,
 * a state out of memory while the result is pushed) leaks nothing. The
 * block is a userdata pushed on the stack and marked to-be-closed: its
 * release function runs when the binding returns or raises (lua_toclose),
 * or at the latest when the userdata is collected. */
#ifndef MRPROV_SCRATCH_H
#define MRPROV_SCRATCH_H

#include <lua.h>
#include <stddef.h>

struct sbuf;

/* Pushes a zeroed block of size bytes; release(block) frees what the
 * binding hangs on it (may be NULL). Raises when out of memory, before any
 * C memory is at stake. Keep it on the stack until the binding returns. */
void *scratch_push(lua_State *L, size_t size, void (*release)(void *block));
/* A scratch block holding an empty sbuf, freed with it. */
struct sbuf *scratch_sbuf(lua_State *L);

#endif
