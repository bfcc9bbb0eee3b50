/* pgrst: a small PostgREST client on libcurl for Supabase's REST API. Owns
 * one easy handle (connection reuse), the apikey/Authorization headers and
 * timeouts. Not thread-safe: one client per thread. Knows no table. */
#ifndef MRPROV_SUPABASE_CLIENT_H
#define MRPROV_SUPABASE_CLIENT_H

#include "util/sbuf.h"

#include <stddef.h>

struct pgrst;

/* NULL with err when libcurl cannot be loaded (supabase/libcurl.h). */
struct pgrst *pgrst_new(const char *base_url, const char *key, char *err, size_t errlen);
void pgrst_free(struct pgrst *c);
/* Seconds each later request may take in all (0: the default 15); connecting
 * gets at most 5 of them. */
void pgrst_set_timeout(struct pgrst *c, double secs);
/* method: GET or POST. path: after /rest/v1/ (e.g. "instances?on_conflict=id").
 * prefer: the Prefer header or NULL. Returns 0 when the server answered
 * (*status set, body in resp), -1 on a transport failure (err says why). */
int pgrst_request(struct pgrst *c, const char *method, const char *path, const char *prefer, const char *body,
		  long *status, struct sbuf *resp, char *err, size_t errlen);
/* Formats a PostgREST error body ({"code","message","details","hint"}) or a
 * gateway error ({"message","hint"}) into one line; copies raw text else. */
void pgrst_error_line(const char *body, size_t len, char *out, size_t outlen);

#endif
