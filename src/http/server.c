/* http: libmicrohttpd, one thread per connection; Lua states are borrowed
 * from the runtime's pool for the length of one request.
 *
 * Slow clients: MHD's own connection timeout is an idle timeout, reset by
 * every byte, so a client sending one header byte every few seconds holds a
 * thread (and one of HTTP_MAX_CONNECTIONS) for ever. Each connection is
 * therefore tracked here (notify-connection callback) with the time its
 * current request began; a reaper thread shuts down the socket of one that
 * has not delivered a whole request (headers and body) within
 * HTTP_REQUEST_TIMEOUT, and MHD's per-IP limit keeps one address from taking
 * every connection. */
#include "http/server.h"
#include "util/clock.h"
#include "config.h"
#include "dokku/transport.h"
#include "lua/runtime.h"
#include "metrics.h"
#include "store/store.h"
#include "supabase/outbox.h"
#include "util/crypto.h"
#include "util/log.h"
#include "util/sbuf.h"
#include "webhook.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
	R_AUTH = 1,	/* API key required when keys are configured */
	R_BODY = 2,	/* JSON body expected */
	R_PARAM = 4,	/* path = prefix + one parameter */
	R_C = 8,	/* answered in C */
	R_WEBHOOK = 16, /* signed by Supabase (WEBHOOK_SECRET), not an API key */
};

struct route {
	const char *method;
	const char *path;
	const char *name;
	int flags;
};

static atomic_int draining; /* http_quiesce was called */

static const struct route routes[] = {
	{ "GET", "/health", "health", R_C },
	{ "GET", "/live", "live", R_C },
	{ "GET", "/ready", "ready", R_C },
	{ "GET", "/metrics", "metrics", R_C },
	{ "GET", "/openapi.json", "openapi", R_C },
	{ "POST", "/api/v1/provision", "provision", R_AUTH | R_BODY },
	{ "DELETE", "/api/v1/deprovision", "deprovision", R_AUTH | R_BODY },
	{ "PUT", "/api/v1/update", "update", R_AUTH | R_BODY },
	{ "POST", "/api/v1/plan", "plan", R_AUTH | R_BODY },
	{ "GET", "/api/v1/tiers", "tiers", R_AUTH },
	{ "GET", "/api/v1/status/", "status", R_AUTH | R_PARAM },
	{ "GET", "/api/v1/jobs/", "job", R_AUTH | R_PARAM },
	{ "POST", "/api/v1/webhooks/supabase", "webhook", R_WEBHOOK | R_BODY },
	{ NULL, NULL, NULL, 0 },
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
	double t0;
	char id[17];
};

/* One open connection, for the request deadline. The list is guarded by
 * conns_mu; a connection is unlinked in MHD's CLOSED notification, which
 * MHD calls before it closes the socket, so fd is open while listed. */
struct conn {
	struct conn *prev, *next;
	MHD_socket fd;
	double since;	/* when the request now awaited began */
	int receiving;	/* waiting for a request's headers or body */
	int reaped;	/* shut down by the reaper */
};

static struct MHD_Daemon *daemon_;
static const struct config *cfg;
static int bound_port;

static pthread_mutex_t conns_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reaper_cv;
static struct conn *conns;
static pthread_t reaper;
static int reaper_running, reaper_stop;

/* A request id: unique, not secret. A per-thread xorshift64* seeded from
 * getrandom, instead of OpenSSL's locked DRBG on every request (and its
 * initialisation, megabytes of libcrypto pages, in a service that has not
 * needed crypto yet). */
static void request_id(char out[17])
{
	static _Thread_local uint64_t s;
	if (!s) {
		if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
			s = (uint64_t)(clock_real() * 1e9) ^ (uint64_t)(uintptr_t)&s;
		s |= 1;
	}
	s ^= s >> 12;
	s ^= s << 25;
	s ^= s >> 27;
	uint64_t v = s * 0x2545F4914F6CDD1DULL;
	unsigned char b[8];
	memcpy(b, &v, sizeof b);
	crypto_hex(b, sizeof b, out);
}

/* The reaper: shuts down (does not close: MHD owns the descriptor) the
 * socket of every connection that has waited for one request longer than
 * HTTP_REQUEST_TIMEOUT; the connection's thread then sees the end of its
 * input and MHD closes the connection. Sleeps until the earliest deadline. */
static void *reaper_main(void *arg)
{
	(void)arg;
	double limit = cfg->http_request_timeout;
	pthread_mutex_lock(&conns_mu);
	while (!reaper_stop) {
		double now = clock_mono(), next = now + limit;
		int n = 0;
		for (struct conn *k = conns; k; k = k->next) {
			if (!k->receiving || k->reaped)
				continue;
			if (k->since + limit <= now) {
				shutdown(k->fd, SHUT_RDWR);
				k->reaped = 1;
				n++;
			} else if (k->since + limit < next) {
				next = k->since + limit;
			}
		}
		if (n) {
			metrics_add("mrprov_http_request_timeouts_total", NULL, n);
			log_info("http: closed %d connection(s) that sent no complete request within %d s", n,
				  cfg->http_request_timeout);
		}
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		double wait = next - now + 0.01;
		ts.tv_sec += (time_t)wait;
		ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&reaper_cv, &conns_mu, &ts);
	}
	pthread_mutex_unlock(&conns_mu);
	return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		struct conn *k = calloc(1, sizeof *k);
		if (!k || !info) {
			free(k);
			return; /* untracked: MHD's idle timeout still applies */
		}
		k->fd = info->connect_fd;
		k->since = clock_mono();
		k->receiving = 1;
		pthread_mutex_lock(&conns_mu);
		k->next = conns;
		if (conns)
			conns->prev = k;
		conns = k;
		pthread_mutex_unlock(&conns_mu);
		*socket_context = k;
		return;
	}
	struct conn *k = *socket_context;
	if (!k)
		return;
	pthread_mutex_lock(&conns_mu);
	if (k->prev)
		k->prev->next = k->next;
	else
		conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	pthread_mutex_unlock(&conns_mu);
	free(k);
	*socket_context = NULL;
}

/* receiving = 1: the connection now awaits a new request (from now);
 * 0: its request has arrived whole, and the answer may take its time. */
static void conn_mark(struct MHD_Connection *c, int receiving)
{
	const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *k = info ? info->socket_context : NULL;
	if (!k)
		return;
	pthread_mutex_lock(&conns_mu);
	k->receiving = receiving;
	k->since = clock_mono();
	pthread_mutex_unlock(&conns_mu);
}

static int path_matches(const struct route *r, const char *url, const char **param)
{
	size_t n = strlen(r->path);
	if (!(r->flags & R_PARAM))
		return strcmp(url, r->path) == 0;
	if (strncmp(url, r->path, n) != 0 || url[n] == '\0' || strchr(url + n, '/'))
		return 0;
	*param = url + n;
	return 1;
}

/* The route for (method, url); *allowed lists the methods the path takes. */
static const struct route *find_route(const char *method, const char *url, const char **param,
				      char *allowed, size_t allowedlen)
{
	allowed[0] = '\0';
	for (const struct route *r = routes; r->method; r++) {
		const char *p = NULL;
		if (!path_matches(r, url, &p))
			continue;
		if (strcmp(r->method, method) == 0) {
			*param = p;
			return r;
		}
		size_t l = strlen(allowed);
		snprintf(allowed + l, allowedlen - l, "%s%s", l ? ", " : "", r->method);
	}
	return NULL;
}

static enum MHD_Result send_body(struct MHD_Connection *c, struct request *rq, int status,
				 const char *ctype, const char *body, size_t len, const char *const *headers)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (rq)
		MHD_add_response_header(resp, "X-Request-Id", rq->id);
	for (int i = 0; headers && headers[i]; i += 2)
		MHD_add_response_header(resp, headers[i], headers[i + 1]);
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	if (rq)
		rq->status = status;
	return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, struct request *rq, int status, const char *json,
				 const char *const *headers)
{
	return send_body(c, rq, status, "application/json", json, strlen(json), headers);
}

static enum MHD_Result send_error(struct MHD_Connection *c, struct request *rq, int status, const char *code,
				  const char *const *headers, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static enum MHD_Result send_error(struct MHD_Connection *c, struct request *rq, int status, const char *code,
				  const char *const *headers, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
	sbuf_add_json_string(&b, msg, strlen(msg));
	sbuf_adds(&b, "}}");
	enum MHD_Result r = send_json(c, rq, status, b.data, headers);
	sbuf_free(&b);
	return r;
}

static int authorized(struct MHD_Connection *c)
{
	if (cfg->n_api_keys == 0)
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
	for (int i = 0; i < cfg->n_api_keys; i++)
		ok |= crypto_ct_equal(key, kl, cfg->api_keys[i], strlen(cfg->api_keys[i]));
	return ok;
}

static int is_json_type(const char *ct)
{
	if (!ct)
		return 0;
	while (*ct == ' ')
		ct++;
	size_t n = strlen("application/json");
	if (strncasecmp(ct, "application/json", n) != 0)
		return 0;
	return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

static enum MHD_Result handle_health(struct MHD_Connection *c, struct request *rq)
{
	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "{\"status\":\"healthy\",\"version\":\"%s\",\"uptime_s\":%.3f,\"config_generation\":%u,"
			"\"dokku_mode\":\"%s\"}",
		    rt_version(), rt_uptime(), rt_generation(), transport_mode_name());
	enum MHD_Result r = send_json(c, rq, 200, b.data, NULL);
	sbuf_free(&b);
	return r;
}

/* Appends one reason to the JSON array body in reasons. */
static void add_reason(struct sbuf *reasons, const char *why)
{
	if (reasons->len)
		sbuf_addc(reasons, ',');
	sbuf_add_json_string(reasons, why, strlen(why));
}

static enum MHD_Result handle_ready(struct MHD_Connection *c, struct request *rq)
{
	struct sbuf b, reasons;
	sbuf_init(&b);
	sbuf_init(&reasons);
	int ready = 1;
	if (atomic_load(&draining)) {
		ready = 0;
		add_reason(&reasons, "shutting down");
	}
	const char *store_state = "ok";
	sqlite3 *db = store_conn();
	if (!db || sqlite3_exec(db, "SELECT 1 FROM jobs LIMIT 1", NULL, NULL, NULL) != SQLITE_OK) {
		store_state = "unavailable";
		ready = 0;
		add_reason(&reasons, "the state store is not available");
	} else {
		char why[200];
		if (store_writable(why, sizeof why) < 0) {
			store_state = "unwritable";
			ready = 0;
			add_reason(&reasons, why);
		}
	}
	char err[1024];
	const char *lua_state = "ok";
	lua_State *L = rt_acquire(err, sizeof err);
	if (!L) {
		lua_state = "error";
		ready = 0;
		char m[1100];
		snprintf(m, sizeof m, "the Lua configuration cannot be loaded: %s", err);
		add_reason(&reasons, m);
	} else {
		rt_release(L);
	}
	char dokku_reason[300] = "";
	const char *dokku_state = transport_mode() == TRANSPORT_DRY_RUN ? "dry-run" : "ok";
	if (transport_check(30, dokku_reason, sizeof dokku_reason) < 0) {
		dokku_state = "unreachable";
		ready = 0;
		add_reason(&reasons, dokku_reason);
	}
	char sb_reason[300] = "";
	const char *sb_state = cfg->supabase_url ? "ok" : "not configured";
	if (outbox_check(30, sb_reason, sizeof sb_reason) < 0) {
		sb_state = "unreachable";
		ready = 0;
		add_reason(&reasons, sb_reason);
	}
	char reload_err[1024];
	rt_last_error(reload_err, sizeof reload_err);
	sbuf_printf(&b,
		    "{\"ready\":%s,\"checks\":{\"store\":\"%s\",\"lua\":\"%s\",\"dokku\":\"%s\",\"supabase\":\"%s\","
		    "\"config_generation\":%u",
		    ready ? "true" : "false", store_state, lua_state, dokku_state, sb_state, rt_generation());
	if (reload_err[0]) {
		sbuf_adds(&b, ",\"config_error\":");
		sbuf_add_json_string(&b, reload_err, strlen(reload_err));
	}
	sbuf_printf(&b, "},\"reasons\":[%s]", reasons.data ? reasons.data : "");
	if (!ready)
		sbuf_adds(&b, ",\"error\":{\"code\":\"not_ready\",\"message\":\"the service is not ready\"}");
	sbuf_addc(&b, '}');
	enum MHD_Result r = send_json(c, rq, ready ? 200 : 503, b.data, NULL);
	sbuf_free(&b);
	sbuf_free(&reasons);
	return r;
}

static enum MHD_Result handle_metrics(struct MHD_Connection *c, struct request *rq)
{
	struct sbuf b;
	sbuf_init(&b);
	metrics_render(&b);
	enum MHD_Result r = send_body(c, rq, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
	sbuf_free(&b);
	return r;
}

/* Calls api.handle(route, req) in a borrowed state; the script returns
 * status, body [, headers]. */
static enum MHD_Result handle_lua(struct MHD_Connection *c, struct request *rq)
{
	char err[1024];
	lua_State *L = rt_acquire(err, sizeof err);
	if (!L) {
		log_error("http: no Lua state: %s", err);
		return send_error(c, rq, 503, "not_ready", NULL, "the Lua configuration cannot be loaded");
	}
	if (rt_getfunc(L, "api", "handle", err, sizeof err) < 0)
		goto fail;
	lua_pushstring(L, rq->route->name);
	lua_createtable(L, 0, 8);
	lua_pushstring(L, rq->route->method);
	lua_setfield(L, -2, "method");
	if (rq->param) {
		lua_pushstring(L, rq->param);
		lua_setfield(L, -2, "param");
	}
	lua_pushlstring(L, rq->body.data ? rq->body.data : "", rq->body.len);
	lua_setfield(L, -2, "body");
	lua_pushstring(L, rq->id);
	lua_setfield(L, -2, "request_id");
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
	int nh = 0;
	if (lua_istable(L, -1)) {
		lua_pushnil(L);
		while (nh < 16 && lua_next(L, -2)) {
			if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
				hdrs[nh++] = lua_tostring(L, -2);
				hdrs[nh++] = lua_tostring(L, -1); /* the table keeps both alive */
			}
			lua_pop(L, 1);
		}
	}
	enum MHD_Result r = send_body(c, rq, status, "application/json", body, len, hdrs);
	lua_settop(L, 0);
	rt_release(L);
	return r;
fail:
	log_error("http: %s %s: %s", rq->route->method, rq->route->name, err);
	rt_release(L);
	return send_error(c, rq, 500, "internal", NULL, "internal error (request %s)", rq->id);
}

/* Supabase webhooks: the shared-secret header or a Standard Webhooks
 * signature over the raw body. Returns NULL when authentic, else why. */
static const char *webhook_refusal(struct MHD_Connection *c, struct request *rq, char *reason, size_t len)
{
	const char *secret = cfg->webhook_secret;
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

static enum MHD_Result dispatch(struct MHD_Connection *c, struct request *rq)
{
	/* Shutting down: requests that would start work are refused (503) so the
	 * client retries elsewhere; the rest (health, status, jobs) are still
	 * answered while jobs drain. A webhook is still taken on a connection
	 * already open (Supabase never retries one): its job is queued durably
	 * and runs on the next start. */
	if (atomic_load(&draining) && rq->route->method[0] != 'G' && strcmp(rq->route->name, "plan") != 0 &&
	    !(rq->route->flags & R_WEBHOOK))
		return send_error(c, rq, 503, "shutting_down", NULL,
				  "the service is shutting down; retry against the next instance");
	if (rq->route->flags & R_WEBHOOK) {
		if (!cfg->webhook_secret)
			return send_error(c, rq, 503, "not_configured", NULL,
					  "webhooks are not configured: set WEBHOOK_SECRET");
		char reason[200];
		if (webhook_refusal(c, rq, reason, sizeof reason)) {
			metrics_add("mrprov_webhooks_total", "outcome=\"unauthorized\"", 1);
			log_warn("webhook refused: %s", reason);
			return send_error(c, rq, 401, "unauthorized", NULL, "webhook not authenticated: %s", reason);
		}
	}
	const char *name = rq->route->name;
	if (rq->route->flags & R_C) {
		if (strcmp(name, "health") == 0)
			return handle_health(c, rq);
		if (strcmp(name, "live") == 0)
			return send_json(c, rq, 200, "{\"status\":\"alive\"}", NULL);
		if (strcmp(name, "ready") == 0)
			return handle_ready(c, rq);
		if (strcmp(name, "metrics") == 0)
			return handle_metrics(c, rq);
		return send_body(c, rq, 200, "application/json", openapi_json, openapi_json_len, NULL);
	}
	return handle_lua(c, rq);
}

/* MHD's URI log callback: the first sight of a request, before MHD splits
 * off the query and percent-decodes the target in place. Its answer becomes
 * the request's context. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	(void)cls;
	(void)c;
	struct request *rq = calloc(1, sizeof *rq);
	if (!rq)
		return NULL;
	sbuf_init(&rq->body);
	rq->t0 = clock_mono();
	request_id(rq->id);
	if (uri) {
		rq->raw_uri = uri;
		rq->raw_len = strlen(uri);
		rq->pct_nul = strstr(uri, "%00") != NULL;
	}
	return rq;
}

struct framing {
	int hosts;		/* Host headers */
	const char *length;	/* the first Content-Length */
	int lengths_differ;	/* another Content-Length says otherwise */
	int chunked;		/* a Transfer-Encoding header */
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	struct framing *f = cls;
	if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
		f->hosts++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		if (!f->length)
			f->length = value ? value : "";
		else if (strcmp(f->length, value ? value : "") != 0)
			f->lengths_differ = 1;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->chunked = 1;
	}
	return MHD_YES;
}

/* Why a request cannot be taken as MHD parsed it, or NULL. MHD 0.9.75
 * (Debian's) takes the first of two Content-Length headers and reads the
 * rest of the body as the next request, accepts HTTP/1.1 without Host, and
 * hands the target on as a C string, so a NUL in it ("%00" or a raw byte)
 * cuts the path that routing sees. */
static const char *malformed(struct MHD_Connection *c, struct request *rq, const char *url, const char *version)
{
	/* MHD parsed the target up to the space before the version, within its
	 * one read buffer (parse_initial_message_line): a raw NUL makes the
	 * string on_uri saw shorter than that span. */
	if (rq->pct_nul ||
	    (rq->raw_uri == url && version > url && (size_t)(version - url) - 1 != rq->raw_len))
		return "the request target contains a NUL byte";
	struct framing f = { 0, NULL, 0, 0 };
	MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &f);
	if (f.hosts > 1)
		return "more than one Host header";
	if (f.hosts == 0 && strcmp(version, MHD_HTTP_VERSION_1_0) != 0)
		return "an HTTP/1.1 request needs a Host header";
	if (f.lengths_differ)
		return "conflicting Content-Length headers";
	if (f.length && f.chunked)
		return "both Content-Length and Transfer-Encoding";
	return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
	(void)cls;
	struct request *rq = *con_cls;
	if (!rq) /* on_uri could not allocate */
		return MHD_NO;
	if (!rq->started) {
		rq->started = 1;
		const char *why = malformed(c, rq, url, version);
		if (why) {
			/* Answered before the body is read: MHD then closes the
			 * connection instead of guessing where the next request
			 * starts. */
			return send_error(c, rq, 400, "bad_request", NULL, "malformed request: %s", why);
		}

		char allowed[64];
		rq->route = find_route(method, url, &rq->param, allowed, sizeof allowed);
		if (!rq->route) {
			if (allowed[0]) {
				const char *h[] = { "Allow", allowed, NULL };
				return send_error(c, rq, 405, "method_not_allowed", h, "%s is not allowed here; use %s",
						  method, allowed);
			}
			return send_error(c, rq, 404, "not_found", NULL, "no such route");
		}
		if ((rq->route->flags & R_AUTH) && !authorized(c)) {
			const char *h[] = { "WWW-Authenticate", "Bearer", NULL };
			return send_error(c, rq, 401, "unauthorized", h, "missing or invalid API key");
		}
		if (rq->route->flags & R_BODY) {
			const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
			if (!is_json_type(ct))
				return send_error(c, rq, 415, "unsupported_media_type", NULL,
						  "Content-Type must be application/json");
			const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
			if (cl && strtoull(cl, NULL, 10) > HTTP_MAX_BODY)
				return send_error(c, rq, 413, "payload_too_large", NULL,
						  "request body is larger than %d bytes", HTTP_MAX_BODY);
		}
		return MHD_YES;
	}
	if (rq->status) { /* already answered; discard what is still arriving */
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		if (rq->body.len + *upload_size > HTTP_MAX_BODY)
			rq->too_large = 1;
		else
			sbuf_add(&rq->body, upload_data, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	conn_mark(c, 0); /* the whole request is here: no deadline for the answer */
	if (rq->too_large)
		return send_error(c, rq, 413, "payload_too_large", NULL, "request body is larger than %d bytes",
				  HTTP_MAX_BODY);
	return dispatch(c, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)toe;
	conn_mark(c, 1); /* the next request's deadline runs from here */
	struct request *rq = *con_cls;
	if (!rq)
		return;
	const char *route = rq->route ? rq->route->name : "unknown";
	char labels[128];
	snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", route, rq->status);
	metrics_add("mrprov_http_requests_total", labels, 1);
	snprintf(labels, sizeof labels, "route=\"%s\"", route);
	metrics_observe("mrprov_http_request_duration_seconds", labels, clock_mono() - rq->t0);
	sbuf_free(&rq->body);
	free(rq);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_write(LOG_WARNING, msg, "\"component\":\"http\"");
}

int http_start(const struct config *c, char *err, size_t errlen)
{
	cfg = c;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG |
			 MHD_USE_ITC;
	const char *host = strcmp(c->host, "localhost") == 0 ? "127.0.0.1" : c->host;
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)c->port);
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)c->port);
		flags |= MHD_USE_IPv6;
	} else {
		snprintf(err, errlen, "HOST: %s is not an address", c->host);
		return -1;
	}
	daemon_ = MHD_start_daemon(flags, (uint16_t)c->port, NULL, NULL, on_request, NULL,
				   MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				   MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
				   MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
				   MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
				   MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
				   MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)c->http_max_per_ip,
				   MHD_OPTION_END);
	if (!daemon_) {
		snprintf(err, errlen, "PORT: cannot listen on %s:%d (in use, or not permitted)", c->host, c->port);
		return -1;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&reaper_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&reaper, NULL, reaper_main, NULL) != 0) {
		snprintf(err, errlen, "http: cannot start the request-deadline thread");
		MHD_stop_daemon(daemon_);
		daemon_ = NULL;
		return -1;
	}
	reaper_running = 1;
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
	bound_port = info ? info->port : c->port;
	return 0;
}

int http_port(void)
{
	return bound_port;
}

void http_quiesce(void)
{
	atomic_store(&draining, 1);
	if (!daemon_)
		return;
	/* The listening socket is closed, so new connections are refused at
	 * once instead of waiting in the backlog until the process exits. */
	MHD_socket fd = MHD_quiesce_daemon(daemon_);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

void http_stop(void)
{
	if (daemon_)
		MHD_stop_daemon(daemon_);
	daemon_ = NULL;
	if (reaper_running) {
		pthread_mutex_lock(&conns_mu);
		reaper_stop = 1;
		pthread_cond_signal(&reaper_cv);
		pthread_mutex_unlock(&conns_mu);
		pthread_join(reaper, NULL);
		pthread_cond_destroy(&reaper_cv);
		reaper_running = 0;
	}
}
