/* metrics: a fixed registry of families with labelled series. */
#include "metrics.h"
#include "util/xalloc.h"

#include <math.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum kind { COUNTER, GAUGE, HISTOGRAM };

#define MAX_BUCKETS 14

struct series {
	struct series *next;
	char *labels;
	double value; /* counter/gauge; histogram sum */
	unsigned long long count;
	unsigned long long buckets[MAX_BUCKETS];
};

struct family {
	const char *name;
	const char *help;
	enum kind kind;
	const double *bounds; /* histogram upper bounds, ascending */
	int nbounds;
	struct series *series;
};

static const double dur_job[] = { 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200 };
static const double dur_cmd[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300 };
static const double dur_http[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5 };
static const double dur_reload[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5 };

#define NB(a) (int)(sizeof(a) / sizeof(a[0]))

static struct family families[] = {
	{ "mrprov_provision_duration_seconds", "Time from a provision job's start to its end, by tier.",
	  HISTOGRAM, dur_job, NB(dur_job), NULL },
	{ "mrprov_jobs_total", "Jobs finished, by operation and outcome.", COUNTER, NULL, 0, NULL },
	{ "mrprov_provision_failures_total", "Failed provisioning attempts, by tier.", COUNTER, NULL, 0, NULL },
	{ "mrprov_active_instances", "Instances in the running state, by tier.", GAUGE, NULL, 0, NULL },
	{ "mrprov_jobs_queued", "Jobs waiting for a worker.", GAUGE, NULL, 0, NULL },
	{ "mrprov_dokku_commands_total", "Dokku commands run, by outcome and Dokku host.", COUNTER, NULL, 0, NULL },
	{ "mrprov_dokku_command_duration_seconds", "Duration of Dokku commands, by outcome and Dokku host.", HISTOGRAM,
	  dur_cmd, NB(dur_cmd), NULL },
	{ "mrprov_ssh_connections_open", "SSH connections open, by Dokku host.", GAUGE, NULL, 0, NULL },
	{ "mrprov_config_generation", "The Lua configuration generation in use for new work.", GAUGE, NULL, 0,
	  NULL },
	{ "mrprov_config_reloads_total", "Configuration reloads, by outcome.", COUNTER, NULL, 0, NULL },
	{ "mrprov_config_reload_duration_seconds", "Time to build and check a configuration generation, by outcome.",
	  HISTOGRAM, dur_reload, NB(dur_reload), NULL },
	{ "mrprov_http_requests_total", "HTTP requests answered, by route and status.", COUNTER, NULL, 0, NULL },
	{ "mrprov_outbox_depth", "Outbox rows for Supabase, by state (pending, parked).", GAUGE, NULL, 0, NULL },
	{ "mrprov_outbox_deliveries_total", "Outbox delivery attempts, by outcome (delivered, retry, parked).",
	  COUNTER, NULL, 0, NULL },
	{ "mrprov_webhooks_total", "Supabase webhook deliveries, by outcome.", COUNTER, NULL, 0, NULL },
	{ "mrprov_http_request_duration_seconds", "HTTP request handling time, by route.", HISTOGRAM, dur_http,
	  NB(dur_http), NULL },
	/* Readiness (lua/health.lua). Per instance: one series each, labelled by
	 * app name only (not by state: one series per instance, not three),
	 * dropped when the instance is deprovisioned. */
	{ "mrprov_instance_ready", "1 when the instance's last health check answered 200, 0 while starting or "
	  "unhealthy, by app.", GAUGE, NULL, 0, NULL },
	{ "mrprov_instance_health_checked_timestamp_seconds", "Unix time of the instance's last health check, by app.",
	  GAUGE, NULL, 0, NULL },
	{ "mrprov_instances_health", "Instances by health state (starting, healthy, unhealthy).", GAUGE, NULL, 0,
	  NULL },
	{ "mrprov_health_checks_total", "Health checks made, by outcome (ok, not_ready).", COUNTER, NULL, 0, NULL },
	/* Stop and suspension (lua/lifecycle.lua). */
	{ "mrprov_instances_stopped", "Instances whose apps are stopped on purpose, by status (stopped, suspended).",
	  GAUGE, NULL, 0, NULL },
	/* The drift sweep (lua/reconcile.lua): figures of the last finished sweep. */
	{ "mrprov_drift_instances", "Instances whose last probe differed from their desired state.", GAUGE, NULL, 0,
	  NULL },
	{ "mrprov_orphans", "Dokku apps and services named like an instance's that belong to no instance, by kind "
	  "(app, postgres, redis); never destroyed automatically.", GAUGE, NULL, 0, NULL },
	{ "mrprov_reconcile_duration_seconds", "Duration of the last finished drift sweep.", GAUGE, NULL, 0, NULL },
	{ "mrprov_reconcile_instances_checked", "Instances probed by the last finished drift sweep.", GAUGE, NULL, 0,
	  NULL },
	{ "mrprov_reconcile_last_timestamp_seconds", "Unix time the last drift sweep finished.", GAUGE, NULL, 0,
	  NULL },
	{ "mrprov_reconcile_sweeps_total", "Drift sweeps finished, by outcome (ok, errors).", COUNTER, NULL, 0,
	  NULL },
	{ "mrprov_reconcile_repairs_total", "Repair jobs queued by the drift sweep.", COUNTER, NULL, 0, NULL },
	/* Fleet rollouts (lua/rollout.lua), labelled by rollout id (a handful). */
	{ "mrprov_rollouts", "Rollouts by state (running, paused, halted, aborted, finished, rolling_back, "
	  "rolled_back).", GAUGE, NULL, 0, NULL },
	{ "mrprov_rollout_instances", "A rollout's instances by step state (pending, updating, checking, done, "
	  "failed, skipped, unchanged, reverting, rolled_back, rollback_failed).", GAUGE, NULL, 0, NULL },
	{ "mrprov_rollout_wave", "The wave a rollout is at (1-based).", GAUGE, NULL, 0, NULL },
	{ "mrprov_rollout_failures_total", "Instances of a rollout that failed their update or readiness.", COUNTER,
	  NULL, 0, NULL },
	{ "mrprov_http_request_timeouts_total",
	  "Connections closed because a request's headers and body did not arrive within HTTP_REQUEST_TIMEOUT.",
	  COUNTER, NULL, 0, NULL },
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static struct family *find_family(const char *name, enum kind kind)
{
	for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
		if (strcmp(families[i].name, name) == 0)
			return families[i].kind == kind ? &families[i] : NULL;
	return NULL;
}

/* Caller holds lock. */
static struct series *get_series(struct family *f, const char *labels)
{
	if (!labels)
		labels = "";
	for (struct series *s = f->series; s; s = s->next)
		if (strcmp(s->labels, labels) == 0)
			return s;
	struct series *s = xcalloc(1, sizeof *s);
	s->labels = xstrdup(labels);
	/* Keep series sorted by labels so the output is stable. */
	struct series **pp = &f->series;
	while (*pp && strcmp((*pp)->labels, labels) < 0)
		pp = &(*pp)->next;
	s->next = *pp;
	*pp = s;
	return s;
}

static int update(const char *name, enum kind kind, const char *labels, double v)
{
	struct family *f = find_family(name, kind);
	if (!f || !isfinite(v))
		return -1;
	pthread_mutex_lock(&lock);
	struct series *s = get_series(f, labels);
	switch (kind) {
	case COUNTER:
		if (v > 0)
			s->value += v;
		break;
	case GAUGE:
		s->value = v;
		break;
	case HISTOGRAM:
		s->value += v;
		s->count++;
		for (int i = 0; i < f->nbounds; i++)
			if (v <= f->bounds[i])
				s->buckets[i]++;
		break;
	}
	pthread_mutex_unlock(&lock);
	return 0;
}

int metrics_add(const char *name, const char *labels, double v)
{
	return update(name, COUNTER, labels, v);
}

int metrics_drop(const char *name, const char *labels)
{
	struct family *f = find_family(name, GAUGE);
	if (!f)
		return -1;
	if (!labels)
		labels = "";
	pthread_mutex_lock(&lock);
	for (struct series **pp = &f->series; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->labels, labels) == 0) {
			struct series *gone = *pp;
			*pp = gone->next;
			free(gone->labels);
			free(gone);
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	return 0;
}

int metrics_set(const char *name, const char *labels, double v)
{
	return update(name, GAUGE, labels, v);
}

int metrics_observe(const char *name, const char *labels, double v)
{
	return update(name, HISTOGRAM, labels, v);
}

void metrics_labels(struct sbuf *out, const char *const *kv, int npairs)
{
	for (int i = 0; i < npairs; i++) {
		if (i)
			sbuf_addc(out, ',');
		sbuf_adds(out, kv[2 * i]);
		sbuf_adds(out, "=\"");
		for (const char *p = kv[2 * i + 1]; *p; p++) {
			if (*p == '\\' || *p == '"')
				sbuf_addc(out, '\\');
			if (*p == '\n')
				sbuf_adds(out, "\\n");
			else
				sbuf_addc(out, *p);
		}
		sbuf_addc(out, '"');
	}
}

static void sample(struct sbuf *out, const char *name, const char *suffix, const char *labels,
		   const char *extra, double v)
{
	sbuf_adds(out, name);
	sbuf_adds(out, suffix);
	int has = labels && *labels;
	if (has || extra) {
		sbuf_addc(out, '{');
		if (has)
			sbuf_adds(out, labels);
		if (has && extra)
			sbuf_addc(out, ',');
		if (extra)
			sbuf_adds(out, extra);
		sbuf_addc(out, '}');
	}
	if (v == floor(v) && fabs(v) < 1e15)
		sbuf_printf(out, " %.0f\n", v);
	else
		sbuf_printf(out, " %.9g\n", v);
}

void metrics_render(struct sbuf *out)
{
	static const char *const kinds[] = { "counter", "gauge", "histogram" };
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
		struct family *f = &families[i];
		sbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, kinds[f->kind]);
		for (struct series *s = f->series; s; s = s->next) {
			if (f->kind != HISTOGRAM) {
				sample(out, f->name, "", s->labels, NULL, s->value);
				continue;
			}
			char le[48];
			for (int b = 0; b < f->nbounds; b++) {
				snprintf(le, sizeof le, "le=\"%g\"", f->bounds[b]);
				sample(out, f->name, "_bucket", s->labels, le, (double)s->buckets[b]);
			}
			sample(out, f->name, "_bucket", s->labels, "le=\"+Inf\"", (double)s->count);
			sample(out, f->name, "_sum", s->labels, NULL, s->value);
			sample(out, f->name, "_count", s->labels, NULL, (double)s->count);
		}
	}
	pthread_mutex_unlock(&lock);
}

void metrics_reset(void)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
		struct series *s = families[i].series;
		while (s) {
			struct series *next = s->next;
			free(s->labels);
			free(s);
			s = next;
		}
		families[i].series = NULL;
	}
	pthread_mutex_unlock(&lock);
}
