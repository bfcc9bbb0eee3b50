/* store jobs: the statements on the jobs table that C runs itself (the
 * workers' claim, crash recovery, a job whose script could not run). Lua
 * writes everything else about jobs through plain SQL. */
#include "store.h"
#include "store_internal.h"
#include "util/clock.h"
#include "util/log.h"

#include <stdio.h>
#include <string.h>

int store_job_claim(char *id, size_t idlen)
{
	sqlite3 *db = store_conn();
	if (!db)
		return -1;
	static const char sql[] =
		"UPDATE jobs SET state = 'running', started_at = ?1, attempts = attempts + 1"
		" WHERE id = (SELECT j.id FROM jobs j WHERE j.state = 'queued'"
		"  AND (j.not_before IS NULL OR j.not_before <= ?1) AND NOT EXISTS"
		"  (SELECT 1 FROM jobs r WHERE r.subscription_id = j.subscription_id AND r.state = 'running')"
		"  ORDER BY j.rowid LIMIT 1)"
		" RETURNING id";
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_error("store: claim: %s", sqlite3_errmsg(db));
		return -1;
	}
	char now[CLOCK_ISO_LEN];
	clock_iso(-1, now);
	sqlite3_bind_text(st, 1, now, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	int found = 0;
	if (rc == SQLITE_ROW) {
		snprintf(id, idlen, "%s", (const char *)sqlite3_column_text(st, 0));
		found = 1;
		rc = sqlite3_step(st);
	}
	if (rc != SQLITE_DONE) {
		store_note_error(sqlite3_extended_errcode(db));
		log_error("store: claim: %s", sqlite3_errmsg(db));
		found = -1;
	}
	sqlite3_finalize(st);
	return found;
}

int store_jobs_requeue(void)
{
	sqlite3 *db = store_conn();
	if (!db || store_exec_sql("UPDATE jobs SET state = 'queued' WHERE state = 'running'") < 0)
		return -1;
	return sqlite3_changes(db);
}

int store_job_finished(const char *id)
{
	sqlite3 *db = store_conn();
	sqlite3_stmt *st;
	if (!db || sqlite3_prepare_v2(db, "SELECT state FROM jobs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	int res = -1;
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(st, 0);
		res = strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0;
	}
	sqlite3_finalize(st);
	return res;
}

int store_job_fail(const char *id, const char *message)
{
	store_rollback(); /* first: it may reopen this thread's connection */
	sqlite3 *db = store_conn();
	sqlite3_stmt *st;
	if (!db)
		return -1;
	if (sqlite3_prepare_v2(db,
			       "UPDATE jobs SET state = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1",
			       -1, &st, NULL) != SQLITE_OK)
		return -1;
	char now[CLOCK_ISO_LEN];
	clock_iso(-1, now);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, message, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, now, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
	if (rc < 0) {
		store_note_error(sqlite3_extended_errcode(db));
		log_error("store: cannot mark job %s failed: %s", id, sqlite3_errmsg(db));
	}
	sqlite3_finalize(st);
	if (rc == 0)
		store_clear_problem();
	return rc;
}
