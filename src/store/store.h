/* store: the local durable journal in SQLite (WAL): instances, jobs, steps,
 * outbox, seen webhook ids. Owns the schema (src/store/schema.sql, compiled
 * in) and its version, and one connection per thread. Knows job states (the job system's vocabulary) but
 * no product: instance columns are written by Lua through plain SQL. */
#ifndef MRPROV_STORE_H
#define MRPROV_STORE_H

#include <sqlite3.h>
#include <stddef.h>

/* The version schema.sql describes; older stores are upgraded (migrate.c). */
#define STORE_SCHEMA_VERSION 9

/* Opens (creating when missing, with its directory) and migrates the database.
 * readonly: open an existing file without creating or migrating anything. */
int store_open(const char *path, int readonly, char *err, size_t errlen);
int store_is_open(void);
/* The calling thread's connection, opened on first use; NULL when closed. */
sqlite3 *store_conn(void);
void store_close(void);
/* sql prepared on db (this thread's connection), from a per-thread cache:
 * never finalize it; hand it back with store_stmt_done (reset, bindings
 * cleared) before the next store_stmt. NULL on error (sqlite3_errmsg(db)). */
sqlite3_stmt *store_stmt(sqlite3 *db, const char *sql, size_t len);
void store_stmt_done(sqlite3_stmt *st);

/* WAL checkpoints on a thread of their own, once a second, instead of in
 * whichever commit crosses SQLite's 1000-page mark: that commit's fsyncs
 * held every other writer (bench 6, webhook ack p99: ~75 -> ~37 ms).
 * Connections opened after start do not checkpoint themselves. Stop it
 * before store_close. */
int store_checkpointer_start(void);
void store_checkpointer_stop(void);

/* -1 and why (disk full, I/O error, read-only) when a write was refused in
 * the last 60 s and no transaction committed since; else 0. */
int store_writable(char *reason, size_t reasonlen);
/* Records a failed statement's (extended) result code for store_writable. */
void store_note_error(int code);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK on this thread's connection. */
int store_begin(void);
int store_commit(void);
/* A deferred BEGIN (a read snapshot in WAL mode) and its COMMIT. */
int store_read_begin(void);
void store_read_end(void);
void store_rollback(void);

/* Jobs. Claiming marks a queued job running, skipping subscriptions that
 * already have a running job and jobs whose not_before is still ahead. Returns 1 and the id, 0 when none, -1 on error. */
int store_job_claim(char *id, size_t idlen);
/* Puts jobs left `running` by a crash back in the queue; returns how many. */
int store_jobs_requeue(void);
/* 1 when the job has finished (succeeded or failed), 0 if not, -1 unknown. */
int store_job_finished(const char *id);
/* Marks a job failed with a message (used when its script could not run);
 * 0, or -1 when the store refused the write. */
int store_job_fail(const char *id, const char *message);

#endif
