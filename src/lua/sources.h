/* sources: the files of one configuration generation (LUA_DIR's modules,
 * TIERS_DIR, PROFILES_DIR, HOOKS_DIR, HOSTS_DIR), read into memory once when the generation is
 * loaded. Every state of the generation, however late it is built, compiles
 * these bytes and never the files on disk (DESIGN §4). Read-only once made;
 * shared between threads by reference count. */
#ifndef MRPROV_SOURCES_H
#define MRPROV_SOURCES_H

#include <stddef.h>

struct sources;

/* Reads the five directories (LUA_DIR recursively, the others' *.lua;
 * hosts_dir may be NULL). A directory or file that cannot be read is kept
 * as its error. */
struct sources *sources_read(const char *lua_dir, const char *tiers_dir, const char *profiles_dir,
			     const char *hooks_dir, const char *hosts_dir);
void sources_ref(struct sources *s);
void sources_unref(struct sources *s);

/* The sorted entry names of dir (no dot files) as read, or NULL with *err
 * ("dir: reason"). NULL and *err NULL when dir was not read at all. */
const char *const *sources_list(const struct sources *s, const char *dir, size_t *n, const char **err);
/* The bytes of path as read, or NULL with *err as sources_list. */
const char *sources_file(const struct sources *s, const char *path, size_t *len, const char **err);
/* The module file of LUA_DIR that require(name) loads ("a.b" → a/b.lua or
 * a/b/init.lua): its bytes and *path, or NULL when there is none. */
const char *sources_module(const struct sources *s, const char *name, size_t *len, const char **path,
			   const char **err);

#endif
