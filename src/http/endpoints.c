/* http operational endpoints, answered in C without a Lua state where they
 * can be: /health, /live, /ready (store, Lua configuration, Dokku, Supabase,
 * draining), /metrics (Prometheus text) and /openapi.json. */
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

static enum MHD_Result handle_ready(struct MHD_Connection *c, struct request *rq)
{
	struct sbuf b, reasons;
	sbuf_init(&b);
	sbuf_init(&reasons);
	int ready = 1;
	if (http_is_draining()) {
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
	/* Every configured Dokku host is checked: ready while one answers;
	 * each one that does not is a reason, named (issue 16). */
	const char *dokku_state = transport_mode() == TRANSPORT_DRY_RUN ? "dry-run" : "ok";
	struct sbuf host_states;
	sbuf_init(&host_states);
	char names[TRANSPORT_MAX_HOSTS][TRANSPORT_HOST_NAME_MAX + 1];
	int nhosts = transport_hosts(names, TRANSPORT_MAX_HOSTS), healthy = 0;
	for (int i = 0; i < nhosts; i++) {
		char why[300] = "";
		int ok = transport_host_check(names[i], 30, why, sizeof why) == 0;
		healthy += ok;
		if (host_states.len)
			sbuf_addc(&host_states, ',');
		sbuf_add_json_string(&host_states, names[i], strlen(names[i]));
		sbuf_printf(&host_states, ":\"%s\"", transport_mode() == TRANSPORT_DRY_RUN ? "dry-run"
						   : ok ? "ok" : "unreachable");
		if (!ok) {
			char m[400];
			/* the implicit host alone keeps the reason it always had */
			if (nhosts == 1 && strcmp(names[i], TRANSPORT_DEFAULT_HOST) == 0)
				snprintf(m, sizeof m, "%s", why);
			else
				snprintf(m, sizeof m, "Dokku host %s: %s", names[i], why);
			add_reason(&reasons, m);
		}
	}
	if (nhosts == 0)
		add_reason(&reasons, "no Dokku host is configured");
	if (healthy == 0) {
		dokku_state = "unreachable";
		ready = 0;
	}
	char sb_reason[300] = "";
	const char *sb_state = http_cfg->supabase_url ? "ok" : "not configured";
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
	sbuf_printf(&b, ",\"dokku_hosts\":{%s}", host_states.data ? host_states.data : "");
	sbuf_printf(&b, "},\"reasons\":[%s]", reasons.data ? reasons.data : "");
	if (!ready)
		sbuf_adds(&b, ",\"error\":{\"code\":\"not_ready\",\"message\":\"the service is not ready\"}");
	sbuf_addc(&b, '}');
	enum MHD_Result r = http_send_json(c, rq, ready ? 200 : 503, b.data, NULL);
	sbuf_free(&b);
	sbuf_free(&reasons);
	sbuf_free(&host_states);
	return r;
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
	return http_send_body(c, rq, 200, "application/json", openapi_json, openapi_json_len, NULL);
}
