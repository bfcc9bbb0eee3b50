/* xalloc: checked allocation. Each wrapper aborts with a message on stderr
 * when the C library cannot allocate, as redis's zmalloc does: a daemon
 * that cannot get a few KiB cannot do anything useful, and a NULL passed
 * on would fail later, far from its cause. Lua states keep their own
 * allocator (runtime.c), whose NULL Lua turns into a memory error. */
#ifndef MRPROV_XALLOC_H
#define MRPROV_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
