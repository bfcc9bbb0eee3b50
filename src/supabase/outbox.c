/* outbox: the sender thread. Each round takes the oldest pending row of
 * every subscription whose turn has come, POSTs it, and records the answer:
 * delivered rows are deleted; retryable failures get a later attempt;
 * requests PostgREST refuses (other 4xx) are parked with the error. */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "supabase/outbox.h"
#include "util/clock.h"
#include "metrics.h"
#include "store/store.h"
#include "supabase/client.h"
#include "util/log.h"
#include "config.h"
#include "util/xalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 32
#define BACKOFF_CAP 300.0
#define PROBE_EVERY 10.0
#define PROBE_WAITING 3.0

static struct pgrst *client;
static pthread_t thread;
static int running, stopping;
static double timeout_cfg = CONFIG_SUPABASE_TIMEOUT_S; /* SUPABASE_TIMEOUT: seconds per request */
static double final_until; /* monotonic deadline of the last delivery round at stop; 0: none */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned long notified;
static double last_answer; /* realtime of the last HTTP answer that was not an auth refusal */
static char last_problem[300];

/* Logs a Supabase problem when it differs from the one before (called with
 * lock held, after last_problem was set): a long outage logs its cause once,
 * not every probe. */
static char logged_problem[300];

static void log_problem_change(void)
{
	if (last_problem[0] && strcmp(last_problem, logged_problem) != 0) {
		log_warn("outbox: Supabase is failing: %s", last_problem);
		snprintf(logged_problem, sizeof logged_problem, "%s", last_problem);
	} else if (!last_problem[0] && logged_problem[0]) {
		log_info("outbox: Supabase answers again (the last problem was: %s)", logged_problem);
		logged_problem[0] = '\0';
	}
}

static void note_answer(long status, const char *problem)
{
	pthread_mutex_lock(&lock);
	if (status == 401 || status == 403) {
		snprintf(last_problem, sizeof last_problem, "Supabase refused the service key (%ld): %.200s", status,
			 problem ? problem : "");
	} else if (status >= 500) {
		/* a gateway that answers 5xx is up but failing: not ready, and
		 * /ready says what it answers */
		snprintf(last_problem, sizeof last_problem, "Supabase answers HTTP %ld: %.200s", status,
			 problem ? problem : "");
	} else {
		last_answer = clock_real();
		last_problem[0] = '\0';
	}
	log_problem_change();
	pthread_mutex_unlock(&lock);
}

static void note_failure(const char *problem)
{
	pthread_mutex_lock(&lock);
	snprintf(last_problem, sizeof last_problem, "%.290s", problem);
	log_problem_change();
	pthread_mutex_unlock(&lock);
}

struct row {
	long long id;
	char *table;
	char *upsert_on;
	char *payload;
	int attempts;
};

static int load_rows(struct row *rows, int max, int ignore_backoff)
{
	sqlite3 *db = store_conn();
	sqlite3_stmt *st;
	static const char sql[] =
		"SELECT o.id, o.kind, o.upsert_on, o.payload, o.attempts FROM outbox o"
		" WHERE o.state = 'pending' AND coalesce(CAST(o.next_attempt_at AS REAL), 0) <= ?1"
		" AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.subscription_id = o.subscription_id"
		"                 AND p.state = 'pending' AND p.id < o.id)"
		" ORDER BY o.id LIMIT ?2";
	if (!db || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_double(st, 1, ignore_backoff ? 1e300 : clock_real());
	sqlite3_bind_int(st, 2, max);
	int n = 0;
	while (n < max && sqlite3_step(st) == SQLITE_ROW) {
		rows[n].id = sqlite3_column_int64(st, 0);
		rows[n].table = xstrdup((const char *)sqlite3_column_text(st, 1));
		const unsigned char *u = sqlite3_column_text(st, 2);
		rows[n].upsert_on = u ? xstrdup((const char *)u) : NULL;
		rows[n].payload = xstrdup((const char *)sqlite3_column_text(st, 3));
		rows[n].attempts = sqlite3_column_int(st, 4);
		n++;
	}
	sqlite3_finalize(st);
	return n;
}

static void free_row(struct row *r)
{
	free(r->table);
	free(r->upsert_on);
	free(r->payload);
}

static void exec_row(const char *sql, long long id, double when, const char *error)
{
	sqlite3 *db = store_conn();
	sqlite3_stmt *st;
	if (!db || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_double(st, 2, when);
	sqlite3_bind_text(st, 3, error ? error : "", -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_error("outbox: cannot update row %lld: %s", id, sqlite3_errmsg(db));
	sqlite3_finalize(st);
}

static void update_depth(void)
{
	sqlite3 *db = store_conn();
	sqlite3_stmt *st;
	if (!db || sqlite3_prepare_v2(db, "SELECT state, count(*) FROM outbox GROUP BY state", -1, &st, NULL) != SQLITE_OK)
		return;
	double pending = 0, parked = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(st, 0);
		if (strcmp(s, "pending") == 0)
			pending = sqlite3_column_int(st, 1);
		else if (strcmp(s, "parked") == 0)
			parked = sqlite3_column_int(st, 1);
	}
	sqlite3_finalize(st);
	metrics_set("mrprov_outbox_depth", "state=\"pending\"", pending);
	metrics_set("mrprov_outbox_depth", "state=\"parked\"", parked);
}

static int retryable(long status)
{
	return status >= 500 || status == 408 || status == 429 || status == 401 || status == 403;
}

/* Delivers one row. Returns 1 when this subscription must wait (failure). */
static int deliver(struct row *r)
{
	char path[256];
	if (r->upsert_on)
		snprintf(path, sizeof path, "%s?on_conflict=%s", r->table, r->upsert_on);
	else
		snprintf(path, sizeof path, "%s", r->table);
	const char *prefer = r->upsert_on ? "return=minimal,resolution=merge-duplicates" : "return=minimal";
	struct sbuf resp;
	sbuf_init(&resp);
	long status = 0;
	char err[512];
	int rc = pgrst_request(client, "POST", path, prefer, r->payload, &status, &resp, err, sizeof err);
	int wait = 0;
	if (rc == 0 && status >= 200 && status < 300) {
		note_answer(status, NULL);
		exec_row("DELETE FROM outbox WHERE id = ?1", r->id, 0, NULL); /* ?2, ?3 unused: ignored */
		metrics_add("mrprov_outbox_deliveries_total", "outcome=\"delivered\"", 1);
	} else if (rc == 0 && !retryable(status)) {
		char line[400];
		pgrst_error_line(resp.data, resp.len, line, sizeof line);
		note_answer(status, line);
		char msg[480];
		snprintf(msg, sizeof msg, "HTTP %ld: %.400s", status, line);
		exec_row("UPDATE outbox SET state = 'parked', attempts = attempts + 1, next_attempt_at = ?2,"
			 " last_error = ?3 WHERE id = ?1",
			 r->id, clock_real(), msg);
		log_error("outbox: Supabase refused row %lld for table %s, parked (no retry): %s", r->id, r->table, msg);
		metrics_add("mrprov_outbox_deliveries_total", "outcome=\"parked\"", 1);
	} else {
		char msg[480];
		if (rc == 0) {
			char line[400];
			pgrst_error_line(resp.data, resp.len, line, sizeof line);
			note_answer(status, line);
			snprintf(msg, sizeof msg, "HTTP %ld: %.400s", status, line);
		} else {
			note_failure(err);
			snprintf(msg, sizeof msg, "%.470s", err);
		}
		double backoff = 1.0;
		for (int i = 0; i < r->attempts && backoff < BACKOFF_CAP; i++)
			backoff *= 2;
		if (backoff > BACKOFF_CAP)
			backoff = BACKOFF_CAP;
		backoff *= 0.5 + (double)(rand() % 1000) / 2000.0;
		exec_row("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
			 r->id, clock_real() + backoff, msg);
		if (r->attempts == 0 || r->attempts % 10 == 0)
			log_warn("outbox: delivery of row %lld to %s failed (%s); retrying in %.1f s", r->id, r->table,
				 msg, backoff);
		metrics_add("mrprov_outbox_deliveries_total", "outcome=\"retry\"", 1);
		wait = 1;
	}
	sbuf_free(&resp);
	return wait;
}

/* Rows waiting for a retry (their next attempt is later). */
static int waiting_rows(void)
{
	sqlite3 *db = store_conn();
	sqlite3_stmt *st;
	int n = 0;
	if (db && sqlite3_prepare_v2(db,
				     "SELECT count(*) FROM outbox WHERE state = 'pending' AND"
				     " coalesce(CAST(next_attempt_at AS REAL), 0) > ?1",
				     -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_double(st, 1, clock_real());
		if (sqlite3_step(st) == SQLITE_ROW)
			n = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	return n;
}

/* Asks Supabase whether it answers; returns 1 on a 2xx. */
static int probe(void)
{
	struct sbuf resp;
	sbuf_init(&resp);
	long status = 0;
	char err[512];
	if (pgrst_request(client, "GET", "instances?select=subscription_id&limit=1", NULL, NULL, &status, &resp, err,
			  sizeof err) == 0) {
		char line[400];
		pgrst_error_line(resp.data, resp.len, line, sizeof line);
		note_answer(status, line);
		sbuf_free(&resp);
		return status >= 200 && status < 300;
	}
	note_failure(err);
	sbuf_free(&resp);
	return 0;
}

/* At stop: one last attempt for every pending row (backoff ignored), in
 * order per subscription, until none is left, a round delivers nothing, or
 * the deadline passes. Each request is capped at the time left. */
static void final_round(double until)
{
	int delivered = 0, left = 0;
	for (;;) {
		double remaining = until - clock_mono();
		if (remaining <= 0.05)
			break;
		struct row rows[BATCH];
		int n = load_rows(rows, BATCH, 1);
		if (n <= 0)
			break;
		int failures = 0;
		for (int i = 0; i < n; i++) {
			remaining = until - clock_mono();
			if (remaining > 0.05) {
				pgrst_set_timeout(client, remaining < timeout_cfg ? remaining : timeout_cfg);
				int f = deliver(&rows[i]);
				failures += f;
				delivered += !f;
			} else {
				failures++;
			}
			free_row(&rows[i]);
		}
		if (failures == n)
			break;
	}
	sqlite3 *db = store_conn();
	sqlite3_stmt *st;
	if (db && sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox WHERE state = 'pending'", -1, &st, NULL) ==
			  SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			left = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	if (left)
		log_warn("shutdown: outbox delivered %d row(s); %d stay pending and go on the next start", delivered,
			 left);
	else
		log_info("shutdown: outbox delivered %d row(s); none pending", delivered);
}

static void *sender_main(void *arg)
{
	(void)arg;
	srand((unsigned)time(NULL));
	double last_probe = 0, last_depth = 0;
	unsigned long depth_seen = (unsigned long)-1;
	for (;;) {
		pthread_mutex_lock(&lock);
		int stop = stopping;
		unsigned long seen = notified;
		pthread_mutex_unlock(&lock);
		if (stop) {
			if (final_until > 0)
				final_round(final_until);
			break;
		}
		struct row rows[BATCH];
		int n = load_rows(rows, BATCH, 0);
		int failures = 0;
		for (int i = 0; i < n; i++) {
			failures += deliver(&rows[i]);
			free_row(&rows[i]);
		}
		/* The depth gauge changes when rows were written (notified) or
		 * delivered; not on every idle tick. */
		if (n > 0 || seen != depth_seen || clock_real() - last_depth > PROBE_WAITING) {
			update_depth();
			last_depth = clock_real();
			depth_seen = seen;
		}
		if (n > 0 && failures == 0)
			continue; /* more may be waiting */
		/* While rows wait out their backoff, ask every few seconds whether
		 * Supabase is back; when it is, they go at once instead of waiting. */
		if (clock_real() - last_probe > PROBE_WAITING) {
			int waiting = waiting_rows();
			if (waiting || (clock_real() - last_probe > PROBE_EVERY &&
					clock_real() - last_answer > PROBE_EVERY)) {
				if (probe() && waiting) {
					/* no parameters: exec_row's binds are ignored */
					exec_row("UPDATE outbox SET next_attempt_at = NULL WHERE state = 'pending'", 0, 0,
						 NULL);
					log_info("outbox: Supabase answers again; delivering %d waiting row(s)", waiting);
				}
				last_probe = clock_real();
			}
		}
		pthread_mutex_lock(&lock);
		if (!stopping && seen == notified) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 250 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&cond, &lock, &ts);
		}
		pthread_mutex_unlock(&lock);
	}
	return NULL;
}

int outbox_start(const char *url, const char *key, int timeout_s, char *err, size_t errlen)
{
	client = pgrst_new(url, key, err, errlen);
	if (!client)
		return -1;
	timeout_cfg = timeout_s > 0 ? timeout_s : CONFIG_SUPABASE_TIMEOUT_S;
	pgrst_set_timeout(client, timeout_cfg);
	if (pthread_create(&thread, NULL, sender_main, NULL) != 0) {
		snprintf(err, errlen, "cannot start the outbox sender");
		pgrst_free(client);
		client = NULL;
		return -1;
	}
	running = 1;
	return 0;
}

void outbox_notify(void)
{
	pthread_mutex_lock(&lock);
	notified++;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
}

void outbox_stop(void)
{
	outbox_stop_within(0);
}

int outbox_stop_within(double secs)
{
	if (!running)
		return 0;
	pthread_mutex_lock(&lock);
	final_until = secs > 0 ? clock_mono() + secs : 0;
	stopping = 1;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
	if (final_until > 0) {
		/* A request in flight is capped by SUPABASE_TIMEOUT: do not
		 * wait past the bound for it; the thread is left alone then. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		double until = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + (final_until - clock_mono()) + 0.5;
		ts.tv_sec = (time_t)until;
		ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
		if (pthread_timedjoin_np(thread, NULL, &ts) != 0) {
			log_warn("shutdown: the outbox sender is still in a request; leaving it");
			return -1;
		}
	} else {
		pthread_join(thread, NULL);
	}
	pgrst_free(client);
	client = NULL;
	running = 0;
	return 0;
}

int outbox_check(double max_age_s, char *reason, size_t reasonlen)
{
	if (!running)
		return 0;
	pthread_mutex_lock(&lock);
	double age = clock_real() - last_answer;
	int ok = last_answer > 0 && age <= max_age_s && !last_problem[0];
	if (!ok)
		snprintf(reason, reasonlen, "%s", last_problem[0] ? last_problem
					 : last_answer > 0 ? "Supabase has not answered for more than 30 s"
							   : "Supabase has not answered yet");
	pthread_mutex_unlock(&lock);
	return ok ? 0 : -1;
}
