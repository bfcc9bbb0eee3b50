/* http routing: the route table, API-key and webhook-signature checks, and
 * dispatch of a whole request: refusals while draining, the endpoints
 * answered in C, everything under /api/v1 to Lua's api.handle in a Lua state
 * borrowed for the request. C never parses the JSON body. */
#include "http/server_internal.h"
#include "config.h"
#include "lua/runtime.h"
#include "metrics.h"
#include "util/crypto.h"
#include "util/log.h"
#include "webhook.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const struct route routes[] = {
	{ "GET", "/health", "health", R_C },
	{ "GET", "/live", "live", R_C },
	{ "GET", "/ready", "ready", R_C },
	{ "GET", "/metrics", "metrics", R_C },
	{ "GET", "/openapi.json", "openapi", R_C },
	{ "GET", "/ui", "ui", R_C | R_TREE },
	{ "GET", "/docs", "docs", R_C | R_TREE },
	{ "POST", "/api/v1/provision", "provision", R_AUTH | R_BODY },
	{ "DELETE", "/api/v1/deprovision", "deprovision", R_AUTH | R_BODY },
	{ "PUT", "/api/v1/update", "update", R_AUTH | R_BODY },
	{ "POST", "/api/v1/plan", "plan", R_AUTH | R_BODY },
	{ "GET", "/api/v1/tiers", "tiers", R_AUTH },
	{ "GET", "/api/v1/instances", "instances", R_AUTH },
	{ "GET", "/api/v1/jobs", "jobs", R_AUTH },
	{ "POST", "/api/v1/jobs/{}/retry", "job_retry", R_AUTH | R_PARAM },
	{ "GET", "/api/v1/system", "system", R_AUTH | R_C },
	{ "POST", "/api/v1/reload", "reload", R_AUTH | R_C },
	{ "GET", "/api/v1/status/", "status", R_AUTH | R_PARAM },
	{ "GET", "/api/v1/jobs/", "job", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/instances/{}/stop", "stop", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/instances/{}/start", "start", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/instances/{}/restart", "restart", R_AUTH | R_PARAM },
	{ "GET", "/api/v1/reconcile", "reconcile", R_AUTH },
	{ "POST", "/api/v1/reconcile", "reconcile_start", R_AUTH },
	{ "POST", "/api/v1/instances/{}/pin", "pin", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/instances/{}/unpin", "unpin", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/instances/{}/move", "move", R_AUTH | R_PARAM | R_BODY },
	{ "GET", "/api/v1/rollouts", "rollouts", R_AUTH },
	{ "POST", "/api/v1/rollouts", "rollout_create", R_AUTH | R_BODY },
	{ "GET", "/api/v1/rollouts/", "rollout", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/rollouts/{}/pause", "rollout_pause", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/rollouts/{}/resume", "rollout_resume", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/rollouts/{}/abort", "rollout_abort", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/rollouts/{}/rollback", "rollout_rollback", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/webhooks/supabase", "webhook", R_WEBHOOK | R_BODY },
	{ "POST", "/api/v1/subscriptions/sync", "subscriptions_sync", R_AUTH | R_BODY },
	{ "GET", "/api/v1/hosts", "hosts", R_AUTH },
	{ "POST", "/api/v1/hosts/{}/drain", "host_drain", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/hosts/{}/undrain", "host_undrain", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/hosts/{}/evacuate", "host_evacuate", R_AUTH | R_PARAM },
	{ NULL, NULL, NULL, 0 },
};

/* A path with a parameter is its prefix, the parameter (one non-empty path
 * segment) and, when the path holds "{}" where the parameter goes, the rest
 * after it; otherwise the parameter ends the path. *param points at the
 * parameter in url (it ends at the next '/' or at the end: http_param_len). */
static int path_matches(const struct route *r, const char *url, const char **param)
{
	if (r->flags & R_TREE) {
		size_t n = strlen(r->path);
		if (strncmp(url, r->path, n) != 0 || (url[n] != '\0' && url[n] != '/'))
			return 0;
		*param = url + n; /* "" or "/..." */
		return 1;
	}
	if (!(r->flags & R_PARAM))
		return strcmp(url, r->path) == 0;
	const char *hole = strstr(r->path, "{}");
	size_t n = hole ? (size_t)(hole - r->path) : strlen(r->path);
	const char *suffix = hole ? hole + 2 : "";
	if (strncmp(url, r->path, n) != 0)
		return 0;
	size_t plen = http_param_len(url + n);
	if (plen == 0 || strcmp(url + n + plen, suffix) != 0)
		return 0;
	*param = url + n;
	return 1;
}

size_t http_param_len(const char *param)
{
	return strcspn(param, "/");
}

const struct route *http_find_route(const char *method, const char *url, const char **param, char *allowed,
				    size_t allowedlen)
{
	allowed[0] = '\0';
	for (const struct route *r = routes; r->method; r++) {
		const char *p = NULL;
		if (!path_matches(r, url, &p))
			continue;
		/* a file is also asked for with HEAD (MHD sends no body then) */
		if (strcmp(r->method, method) == 0 || ((r->flags & R_TREE) && strcmp(method, "HEAD") == 0)) {
			*param = p;
			return r;
		}
		size_t l = strlen(allowed);
		snprintf(allowed + l, allowedlen - l, "%s%s", l ? ", " : "", r->method);
	}
	return NULL;
}

int http_authorized(struct MHD_Connection *c)
{
	if (http_cfg->n_api_keys == 0)
		return 1;
	const char *key = NULL;
	const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
		key = auth + 7;
	if (!key)
		key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-API-Key");
	if (!key || !*key)
		return 0;
	/* Compare against every key, so timing does not tell which one is close. */
	int ok = 0;
	size_t kl = strlen(key);
	for (int i = 0; i < http_cfg->n_api_keys; i++)
		ok |= crypto_ct_equal(key, kl, http_cfg->api_keys[i], strlen(http_cfg->api_keys[i]));
	return ok;
}

/* Each query argument into the table on top of the stack (the first of a
 * repeated name wins; at most QUERY_MAX names). */
#define QUERY_MAX 32
struct query_fill {
	lua_State *L;
	int n;
};

static enum MHD_Result add_query_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	struct query_fill *q = cls;
	if (!key || q->n >= QUERY_MAX)
		return MHD_YES;
	lua_getfield(q->L, -1, key);
	int seen = !lua_isnil(q->L, -1);
	lua_pop(q->L, 1);
	if (!seen) {
		lua_pushstring(q->L, value ? value : "");
		lua_setfield(q->L, -2, key);
		q->n++;
	}
	return MHD_YES;
}

/* api.handle's arguments: the route name and the request table (method,
 * param, body, request_id, query (name → value), webhook_id for a webhook,
 * prefer). */
static void push_request(lua_State *L, struct MHD_Connection *c, const struct request *rq)
{
	lua_pushstring(L, rq->route->name);
	lua_createtable(L, 0, 8);
	lua_pushstring(L, rq->route->method);
	lua_setfield(L, -2, "method");
	if (rq->param) {
		lua_pushlstring(L, rq->param, http_param_len(rq->param));
		lua_setfield(L, -2, "param");
	}
	lua_pushlstring(L, rq->body.data ? rq->body.data : "", rq->body.len);
	lua_setfield(L, -2, "body");
	lua_pushstring(L, rq->id);
	lua_setfield(L, -2, "request_id");
	lua_createtable(L, 0, 4);
	struct query_fill q = { L, 0 };
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_query_arg, &q);
	lua_setfield(L, -2, "query");
	const char *wid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
	if (wid && (rq->route->flags & R_WEBHOOK)) {
		lua_pushstring(L, wid);
		lua_setfield(L, -2, "webhook_id");
	}
	const char *prefer = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Prefer");
	if (prefer) {
		lua_pushstring(L, prefer);
		lua_setfield(L, -2, "prefer");
	}
}

/* The headers table api.handle returned (on top of the stack) as name,
 * value pairs into hdrs (at most max strings, then NULL): string keys and
 * values only. The table keeps the strings alive while it is on the stack. */
static void response_headers(lua_State *L, const char **hdrs, int max)
{
	int nh = 0;
	if (!lua_istable(L, -1))
		return;
	lua_pushnil(L);
	while (nh < max && lua_next(L, -2)) {
		if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
			hdrs[nh++] = lua_tostring(L, -2);
			hdrs[nh++] = lua_tostring(L, -1); /* the table keeps both alive */
		}
		lua_pop(L, 1);
	}
}

/* Calls api.handle(route, req) in a borrowed state; the script returns
 * status, body [, headers]. */
static enum MHD_Result handle_lua(struct MHD_Connection *c, struct request *rq)
{
	char err[1024];
	lua_State *L = rt_acquire(err, sizeof err);
	if (!L) {
		log_error("http: no Lua state: %s", err);
		return http_send_error(c, rq, 503, "not_ready", NULL, "the Lua configuration cannot be loaded");
	}
	if (rt_getfunc(L, "api", "handle", err, sizeof err) < 0)
		goto fail;
	push_request(L, c, rq);
	if (rt_pcall(L, 2, 3, err, sizeof err) < 0)
		goto fail;
	int status = (int)lua_tointeger(L, -3);
	size_t len;
	const char *body = lua_tolstring(L, -2, &len);
	if (status < 100 || status > 599 || !body) {
		snprintf(err, sizeof err, "api.handle returned no status or body");
		lua_settop(L, 0);
		goto fail;
	}
	const char *hdrs[17] = { NULL };
	response_headers(L, hdrs, 16);
	enum MHD_Result r = http_send_body(c, rq, status, "application/json", body, len, hdrs);
	lua_settop(L, 0);
	rt_release(L);
	return r;
fail:
	log_error("http: %s %s: %s", rq->route->method, rq->route->name, err);
	rt_release(L);
	return http_send_error(c, rq, 500, "internal", NULL, "internal error (request %s)", rq->id);
}

/* Supabase webhooks: the shared-secret header or a Standard Webhooks
 * signature over the raw body. Returns NULL when authentic, else why. */
static const char *webhook_refusal(struct MHD_Connection *c, struct request *rq, char *reason, size_t len)
{
	const char *secret = http_cfg->webhook_secret;
	const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
		if (webhook_bearer_ok(secret, auth + 7))
			return NULL;
		snprintf(reason, len, "wrong shared secret");
		return reason;
	}
	const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
	const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp");
	const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature");
	if (!id && !ts && !sig) {
		snprintf(reason, len, "no Authorization header and no webhook-signature");
		return reason;
	}
	if (webhook_verify(secret, id, ts, sig, rq->body.data ? rq->body.data : "", rq->body.len, (long long)time(NULL),
			   reason, len) < 0)
		return reason;
	return NULL;
}

enum MHD_Result http_dispatch(struct MHD_Connection *c, struct request *rq)
{
	/* Shutting down: requests that would start work are refused (503) so the
	 * client retries elsewhere; the rest (health, status, jobs) are still
	 * answered while jobs drain. A webhook is still taken on a connection
	 * already open (Supabase never retries one): its job is queued durably
	 * and runs on the next start. */
	if (http_is_draining() && rq->route->method[0] != 'G' && strcmp(rq->route->name, "plan") != 0 &&
	    !(rq->route->flags & R_WEBHOOK))
		return http_send_error(c, rq, 503, "shutting_down", NULL,
				       "the service is shutting down; retry against the next instance");
	if (rq->route->flags & R_WEBHOOK) {
		if (!http_cfg->webhook_secret)
			return http_send_error(c, rq, 503, "not_configured", NULL,
					       "webhooks are not configured: set WEBHOOK_SECRET");
		char reason[200];
		if (webhook_refusal(c, rq, reason, sizeof reason)) {
			metrics_add("mrprov_webhooks_total", "outcome=\"unauthorized\"", 1);
			log_warn("webhook refused: %s", reason);
			return http_send_error(c, rq, 401, "unauthorized", NULL, "webhook not authenticated: %s",
					       reason);
		}
	}
	if (rq->route->flags & R_TREE)
		return http_static(c, rq);
	if (rq->route->flags & R_C)
		return http_endpoint(c, rq);
	return handle_lua(c, rq);
}
