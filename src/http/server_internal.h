/* http internals, shared by the files of src/http/ only: the route table's
 * entries, one request's state, and the calls between the daemon
 * (server.c), request deadlines (deadline.c), framing checks (framing.c),
 * routing and dispatch (router.c), the operational endpoints (endpoints.c),
 * static files (static.c) and answers (response.c). Nothing outside src/http/ includes it. */
#ifndef MRPROV_HTTP_SERVER_INTERNAL_H
#define MRPROV_HTTP_SERVER_INTERNAL_H

#include "http/server.h"
#include "util/sbuf.h"

#include <microhttpd.h>
#include <stddef.h>

enum {
	R_AUTH = 1,	/* API key required when keys are configured */
	R_BODY = 2,	/* JSON body expected */
	R_PARAM = 4,	/* path = prefix + one parameter [+ rest, where the path holds "{}"] */
	R_C = 8,	/* answered in C */
	R_WEBHOOK = 16, /* signed by Supabase (WEBHOOK_SECRET), not an API key */
	R_TREE = 32,	/* the path and everything under it (path + "/..."); GET and HEAD */
};

struct route {
	const char *method;
	const char *path;
	const char *name;
	int flags;
};

struct request {
	const struct route *route;
	const char *param;
	struct sbuf body;
	int too_large;
	int status;
	int started;		/* the access handler has seen this request */
	const char *raw_uri;	/* the request target as MHD first showed it */
	size_t raw_len;		/* its strlen then, before MHD decoded it */
	int pct_nul;		/* it holds "%00" */
	int pct_path;		/* its path (before any '?') holds a '%' */
	double t0;
	char id[17];
};

/* ---- server.c: the daemon ---- */

/* The configuration http_start was given (lives as long as the server). */
extern const struct config *http_cfg;
/* 1 once http_quiesce was called. */
int http_is_draining(void);

/* ---- deadline.c: connection tracking and the request deadline ---- */

/* MHD's connection notification: tracks each open connection. */
void http_deadline_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
				 enum MHD_ConnectionNotificationCode toe);
/* receiving = 1: the connection now awaits a new request (from now);
 * 0: its request has arrived whole, and the answer may take its time. */
void http_deadline_mark(struct MHD_Connection *c, int receiving);
/* Starts the thread that closes connections that have not delivered a
 * whole request within limit_s seconds; -1 with err. */
int http_deadline_start(int limit_s, char *err, size_t errlen);
void http_deadline_stop(void);

/* ---- framing.c: requests two parsers could read differently ---- */

/* Why a request cannot be taken as MHD parsed it, or NULL. */
const char *http_malformed(struct MHD_Connection *c, const struct request *rq, const char *url,
			   const char *version);
/* A Content-Type of application/json (any parameters). */
int http_is_json_type(const char *ct);

/* ---- router.c: routes, authentication, dispatch ---- */

/* The route for (method, url); *allowed lists the methods the path takes. */
/* The length of a route's parameter (where rq->param points): up to the
 * next '/' of the path, or its end. */
size_t http_param_len(const char *param);
const struct route *http_find_route(const char *method, const char *url, const char **param, char *allowed,
				    size_t allowedlen);
/* The API key of the request is one of API_KEYS (or none is configured). */
int http_authorized(struct MHD_Connection *c);
/* Answers a whole request: refusals while draining, webhook signatures,
 * the endpoints answered in C, everything else through Lua's api.handle. */
enum MHD_Result http_dispatch(struct MHD_Connection *c, struct request *rq);

/* ---- endpoints.c: the operational endpoints answered in C ---- */

/* /health, /live, /ready, /metrics, /openapi.json by route name. */
enum MHD_Result http_endpoint(struct MHD_Connection *c, struct request *rq);

/* ---- static.c: the console (/ui) and the documentation (/docs) ---- */

/* A file of UI_DIR or DOCS_DIR by route name ("ui", "docs"). */
enum MHD_Result http_static(struct MHD_Connection *c, struct request *rq);
/* 1 when rel (the part of the path after "/ui/") may name a file: plain
 * characters, no empty, hidden, "." or ".." segment. */
int http_static_name_ok(const char *rel);
/* The Content-Type of a file name, by its extension. */
const char *http_static_type(const char *name);
/* The security headers of a static page (name, value, ..., NULL). */
extern const char *const http_static_headers[];

/* ---- response.c: answers and the JSON error model ---- */

/* Queues resp (taken: destroyed here) with the common headers, ctype (may
 * be NULL) and headers; Cache-Control: no-store unless headers set it. */
enum MHD_Result http_queue(struct MHD_Connection *c, struct request *rq, int status, struct MHD_Response *resp,
			   const char *ctype, const char *const *headers);

/* headers: NULL or name, value, ..., NULL. rq may be NULL. */
enum MHD_Result http_send_body(struct MHD_Connection *c, struct request *rq, int status, const char *ctype,
			       const char *body, size_t len, const char *const *headers);
enum MHD_Result http_send_json(struct MHD_Connection *c, struct request *rq, int status, const char *json,
			       const char *const *headers);
/* {"error":{"code":code,"message":fmt...}} */
enum MHD_Result http_send_error(struct MHD_Connection *c, struct request *rq, int status, const char *code,
				const char *const *headers, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

#endif
