/* http: the HTTP front door on libmicrohttpd. Owns routing, the 64 KiB body
 * limit, content-type checks, API-key auth (constant time, several keys),
 * the operational endpoints (/health, /live, /ready, /metrics,
 * /openapi.json), the JSON error model, and the defences against slow or
 * ambiguous clients: a deadline for each request to arrive
 * (HTTP_REQUEST_TIMEOUT), a per-address connection limit, and 400 for
 * requests two parsers could read differently. Everything under /api/v1 is
 * parsed and decided in Lua (`api.handle`); C never parses JSON. */
#ifndef MRPROV_HTTP_SERVER_H
#define MRPROV_HTTP_SERVER_H

#include <stddef.h>

struct config;

#define HTTP_MAX_BODY (64 * 1024)

int http_start(const struct config *cfg, char *err, size_t errlen);
/* The port actually bound (useful with PORT=0). */
int http_port(void);
/* Stops accepting new connections; requests in flight finish. */
void http_quiesce(void);
void http_stop(void);
/* What POST /api/v1/reload runs (the same as SIGHUP): 0, or -1 with why. */
void http_set_reload(int (*fn)(char *err, size_t errlen));

extern const char openapi_json[];
extern const size_t openapi_json_len;

#endif
