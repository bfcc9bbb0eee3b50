/* sbuf: a growable byte buffer for building text (logs, metrics, JSON).
 * Owns its memory; never shared between threads. Allocation failure aborts:
 * a daemon that cannot allocate a few KiB cannot do anything useful. */
#ifndef MRPROV_SBUF_H
#define MRPROV_SBUF_H

#include <stdarg.h>
#include <stddef.h>

struct sbuf {
	char *data;
	size_t len;
	size_t cap;
};

void sbuf_init(struct sbuf *b);
void sbuf_free(struct sbuf *b);
void sbuf_add(struct sbuf *b, const void *p, size_t n);
void sbuf_adds(struct sbuf *b, const char *s);
void sbuf_addc(struct sbuf *b, char c);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included. */
void sbuf_add_json_string(struct sbuf *b, const char *s, size_t n);
/* Detaches the NUL-terminated contents; the caller frees them. */
char *sbuf_take(struct sbuf *b);

#endif
