/* http operational endpoints, answered in C without a Lua state where they
 * can be: /health, /live, /ready (store, Lua configuration, Dokku, Supabase,
 * draining), /metrics (Prometheus text), /openapi.json, and the API's
 * /api/v1/system (the same checks, the reload's outcome, the outbox) and
 * /api/v1/reload (SIGHUP's reload, answered with its outcome). */
#include "http/server_internal.h"
#include "config.h"
#include "dokku/transport.h"
#include "lua/runtime.h"
#include "metrics.h"
#include "store/store.h"
#include "supabase/outbox.h"
#include "util/clock.h"

#include <stdio.h>
#include <string.h>

/* /health also carries the original service's fields (its HealthCheckResponse:
 * dokku_connected, supabase_connected, uptime_seconds) for its clients. The two
 * booleans are what /ready knows (an answer within the last 30 s, else one
 * probe): Dokku is not connected in dry-run (no Dokku at all), Supabase is not
 * connected when it is not configured (as the original, whose client was
 * never connected then). status stays "healthy": /ready says what is not. */
static enum MHD_Result handle_health(struct MHD_Connection *c, struct request *rq)
{
	struct sbuf b;
	sbuf_init(&b);
	char why[300];
	int dokku_ok = transport_mode() != TRANSPORT_DRY_RUN && transport_check(30, why, sizeof why) == 0;
	int supabase_ok = http_cfg->supabase_url && outbox_check(30, why, sizeof why) == 0;
	double up = rt_uptime();
	sbuf_printf(&b, "{\"status\":\"healthy\",\"version\":\"%s\",\"uptime_s\":%.3f,\"uptime_seconds\":%lld,"
			"\"config_generation\":%u,\"dokku_mode\":\"%s\",\"dokku_connected\":%s,"
			"\"supabase_connected\":%s}",
		    rt_version(), up, (long long)up, rt_generation(), transport_mode_name(),
		    dokku_ok ? "true" : "false", supabase_ok ? "true" : "false");
	enum MHD_Result r = http_send_json(c, rq, 200, b.data, NULL);
	sbuf_free(&b);
	return r;
}

/* /live: mrprov's `status` plus the original's `alive` and `timestamp`
 * (ISO 8601, UTC). */
static enum MHD_Result handle_live(struct MHD_Connection *c, struct request *rq)
{
	char now[CLOCK_ISO_LEN];
	clock_iso(-1, now);
	char body[96];
	snprintf(body, sizeof body, "{\"status\":\"alive\",\"alive\":true,\"timestamp\":\"%s\"}", now);
	return http_send_json(c, rq, 200, body, NULL);
}

/* Appends one reason to the JSON array body in reasons. */
static void add_reason(struct sbuf *reasons, const char *why)
{
	if (reasons->len)
		sbuf_addc(reasons, ',');
	sbuf_add_json_string(reasons, why, strlen(why));
}

/* What /ready and /api/v1/system check: the state store, the Lua
 * configuration, Dokku and Supabase (each answered within the last 30 s,
 * else probed once), and draining. */
struct readiness {
	int ready;
	const char *store, *lua, *dokku, *supabase;
	char dokku_reason[400], sb_reason[300];
	struct sbuf reasons; /* the JSON array's body */
	struct sbuf host_states; /* each Dokku host's state: the JSON object's body */
};

static void readiness_check(struct readiness *r)
{
	memset(r, 0, sizeof *r);
	sbuf_init(&r->reasons);
	sbuf_init(&r->host_states);
	r->ready = 1;
	if (http_is_draining()) {
		r->ready = 0;
		add_reason(&r->reasons, "shutting down");
	}
	r->store = "ok";
	sqlite3 *db = store_conn();
	if (!db || sqlite3_exec(db, "SELECT 1 FROM jobs LIMIT 1", NULL, NULL, NULL) != SQLITE_OK) {
		r->store = "unavailable";
		r->ready = 0;
		add_reason(&r->reasons, "the state store is not available");
	} else {
		char why[200];
		if (store_writable(why, sizeof why) < 0) {
			r->store = "unwritable";
			r->ready = 0;
			add_reason(&r->reasons, why);
		}
	}
	char err[1024];
	r->lua = "ok";
	lua_State *L = rt_acquire(err, sizeof err);
	if (!L) {
		r->lua = "error";
		r->ready = 0;
		char m[1100];
		snprintf(m, sizeof m, "the Lua configuration cannot be loaded: %s", err);
		add_reason(&r->reasons, m);
	} else {
		rt_release(L);
	}
	/* Every configured Dokku host is checked: ready while one answers;
	 * each one that does not is a reason, named (issue 16). */
	r->dokku = transport_mode() == TRANSPORT_DRY_RUN ? "dry-run" : "ok";
	char names[TRANSPORT_MAX_HOSTS][TRANSPORT_HOST_NAME_MAX + 1];
	int nhosts = transport_hosts(names, TRANSPORT_MAX_HOSTS), healthy = 0;
	for (int i = 0; i < nhosts; i++) {
		char why[300] = "";
		int ok = transport_host_check(names[i], 30, why, sizeof why) == 0;
		healthy += ok;
		if (r->host_states.len)
			sbuf_addc(&r->host_states, ',');
		sbuf_add_json_string(&r->host_states, names[i], strlen(names[i]));
		sbuf_printf(&r->host_states, ":\"%s\"", transport_mode() == TRANSPORT_DRY_RUN ? "dry-run"
							 : ok ? "ok" : "unreachable");
		if (!ok) {
			char m[400];
			/* the implicit host alone keeps the reason it always had */
			if (nhosts == 1 && strcmp(names[i], TRANSPORT_DEFAULT_HOST) == 0)
				snprintf(m, sizeof m, "%s", why);
			else
				snprintf(m, sizeof m, "Dokku host %s: %s", names[i], why);
			add_reason(&r->reasons, m);
			if (!r->dokku_reason[0])
				snprintf(r->dokku_reason, sizeof r->dokku_reason, "%s", m);
		}
	}
	if (nhosts == 0)
		add_reason(&r->reasons, "no Dokku host is configured");
	if (healthy == 0) {
		r->dokku = "unreachable";
		r->ready = 0;
	}
	r->supabase = http_cfg->supabase_url ? "ok" : "not configured";
	if (outbox_check(30, r->sb_reason, sizeof r->sb_reason) < 0) {
		r->supabase = "unreachable";
		r->ready = 0;
		add_reason(&r->reasons, r->sb_reason);
	}
}

static enum MHD_Result handle_ready(struct MHD_Connection *c, struct request *rq)
{
	struct sbuf b;
	sbuf_init(&b);
	struct readiness r;
	readiness_check(&r);
	char reload_err[1024];
	rt_last_error(reload_err, sizeof reload_err);
	sbuf_printf(&b,
		    "{\"ready\":%s,\"checks\":{\"store\":\"%s\",\"lua\":\"%s\",\"dokku\":\"%s\",\"supabase\":\"%s\","
		    "\"config_generation\":%u",
		    r.ready ? "true" : "false", r.store, r.lua, r.dokku, r.supabase, rt_generation());
	if (reload_err[0]) {
		sbuf_adds(&b, ",\"config_error\":");
		sbuf_add_json_string(&b, reload_err, strlen(reload_err));
	}
	sbuf_printf(&b, ",\"dokku_hosts\":{%s}", r.host_states.data ? r.host_states.data : "");
	sbuf_printf(&b, "},\"reasons\":[%s]", r.reasons.data ? r.reasons.data : "");
	if (!r.ready)
		sbuf_adds(&b, ",\"error\":{\"code\":\"not_ready\",\"message\":\"the service is not ready\"}");
	sbuf_addc(&b, '}');
	enum MHD_Result ret = http_send_json(c, rq, r.ready ? 200 : 503, b.data, NULL);
	sbuf_free(&b);
	sbuf_free(&r.reasons);
	sbuf_free(&r.host_states);
	return ret;
}

/* A JSON string, or null for NULL or "". */
static void add_string_or_null(struct sbuf *b, const char *s)
{
	if (s && *s)
		sbuf_add_json_string(b, s, strlen(s));
	else
		sbuf_adds(b, "null");
}

/* The outbox's rows by state (pending, parked) and the oldest pending
 * row's time, into b as an object; null when the store cannot be read. */
static void add_outbox(struct sbuf *b)
{
	static const char sql[] = "SELECT state, count(*), min(created_at) FROM outbox GROUP BY state";
	sqlite3 *db = store_conn();
	sqlite3_stmt *st = db ? store_stmt(db, sql, sizeof sql - 1) : NULL;
	if (!st) {
		sbuf_adds(b, "null");
		return;
	}
	long long pending = 0, parked = 0;
	char oldest[64] = "";
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *state = (const char *)sqlite3_column_text(st, 0);
		long long n = sqlite3_column_int64(st, 1);
		if (state && strcmp(state, "pending") == 0) {
			pending = n;
			const char *t = (const char *)sqlite3_column_text(st, 2);
			snprintf(oldest, sizeof oldest, "%s", t ? t : "");
		} else if (state && strcmp(state, "parked") == 0) {
			parked = n;
		}
	}
	store_stmt_done(st);
	sbuf_printf(b, "{\"pending\":%lld,\"parked\":%lld,\"oldest_pending_at\":", pending, parked);
	add_string_or_null(b, oldest);
	sbuf_addc(b, '}');
}

/* GET /api/v1/system: what an operator's console shows of the service
 * itself: readiness as /ready knows it, the configuration generation and
 * the last reload's outcome and error, Dokku, and Supabase with the
 * outbox's depth and parked rows. Always 200: "ready" says the rest. */
static enum MHD_Result handle_system(struct MHD_Connection *c, struct request *rq)
{
	struct sbuf b;
	sbuf_init(&b);
	struct readiness r;
	readiness_check(&r);
	double at = 0;
	int ok = 0;
	char reload_err[1024];
	rt_last_reload(&at, &ok, reload_err, sizeof reload_err);
	char when[CLOCK_ISO_LEN] = "";
	if (at > 0)
		clock_iso(at, when);
	double up = rt_uptime();
	sbuf_printf(&b, "{\"version\":\"%s\",\"uptime_s\":%.3f,\"ready\":%s,\"reasons\":[%s],"
			"\"checks\":{\"store\":\"%s\",\"lua\":\"%s\",\"dokku\":\"%s\",\"supabase\":\"%s\"},"
			"\"config\":{\"generation\":%u,\"last_reload\":{\"at\":",
		    rt_version(), up, r.ready ? "true" : "false", r.reasons.data ? r.reasons.data : "", r.store, r.lua,
		    r.dokku, r.supabase, rt_generation());
	add_string_or_null(&b, when);
	sbuf_printf(&b, ",\"outcome\":\"%s\",\"error\":", at <= 0 ? "none" : ok ? "success" : "failure");
	add_string_or_null(&b, reload_err);
	sbuf_printf(&b, "}},\"dokku\":{\"mode\":\"%s\",\"state\":\"%s\",\"error\":", transport_mode_name(),
		    r.dokku);
	add_string_or_null(&b, r.dokku_reason);
	sbuf_printf(&b, ",\"hosts\":{%s}", r.host_states.data ? r.host_states.data : "");
	sbuf_printf(&b, "},\"supabase\":{\"configured\":%s,\"state\":\"%s\",\"error\":",
		    http_cfg->supabase_url ? "true" : "false", r.supabase);
	add_string_or_null(&b, r.sb_reason);
	sbuf_adds(&b, ",\"outbox\":");
	add_outbox(&b);
	sbuf_adds(&b, "}}");
	enum MHD_Result ret = http_send_json(c, rq, 200, b.data, NULL);
	sbuf_free(&b);
	sbuf_free(&r.reasons);
	sbuf_free(&r.host_states);
	return ret;
}

static int (*reload_fn)(char *err, size_t errlen);

void http_set_reload(int (*fn)(char *err, size_t errlen))
{
	reload_fn = fn;
}

/* POST /api/v1/reload: what SIGHUP does (main.c's reload), answered with
 * its outcome: 200 and the new generation, or 422 and why the running
 * generation keeps serving. */
static enum MHD_Result handle_reload(struct MHD_Connection *c, struct request *rq)
{
	char err[2048];
	int rc = reload_fn ? reload_fn(err, sizeof err) : rt_reload(err, sizeof err, NULL);
	if (rc < 0)
		return http_send_error(c, rq, 422, "reload_failed", NULL,
				       "reload refused, generation %u keeps serving: %s", rt_generation(), err);
	char body[96];
	snprintf(body, sizeof body, "{\"reloaded\":true,\"generation\":%u}", rt_generation());
	return http_send_json(c, rq, 200, body, NULL);
}

static enum MHD_Result handle_metrics(struct MHD_Connection *c, struct request *rq)
{
	struct sbuf b;
	sbuf_init(&b);
	metrics_render(&b);
	enum MHD_Result r = http_send_body(c, rq, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
	sbuf_free(&b);
	return r;
}

enum MHD_Result http_endpoint(struct MHD_Connection *c, struct request *rq)
{
	const char *name = rq->route->name;
	if (strcmp(name, "health") == 0)
		return handle_health(c, rq);
	if (strcmp(name, "live") == 0)
		return handle_live(c, rq);
	if (strcmp(name, "ready") == 0)
		return handle_ready(c, rq);
	if (strcmp(name, "metrics") == 0)
		return handle_metrics(c, rq);
	if (strcmp(name, "system") == 0)
		return handle_system(c, rq);
	if (strcmp(name, "reload") == 0)
		return handle_reload(c, rq);
	return http_send_body(c, rq, 200, "application/json", openapi_json, openapi_json_len, NULL);
}
