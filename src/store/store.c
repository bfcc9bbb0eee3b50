/* store: SQLite journal. Each thread owns a connection (pthread key), so no
 * connection is ever shared; WAL lets readers run beside the one writer. */
#include "store.h"
#include "util/clock.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/xalloc.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>

static char *db_path;
static int db_readonly;
static pthread_key_t conn_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* Checkpoints in the background (serve): see store_checkpointer_start. */
static atomic_int bg_checkpoint;
static pthread_t ckpt_thread;
static pthread_mutex_t ckpt_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ckpt_cond = PTHREAD_COND_INITIALIZER;
static int ckpt_stop, ckpt_running;

static const char *const migrations[] = {
	/* version 1 */
	"CREATE TABLE IF NOT EXISTS instances ("
	" subscription_id TEXT PRIMARY KEY,"
	" account_id TEXT,"
	" app_name TEXT NOT NULL UNIQUE,"
	" tier TEXT NOT NULL,"
	" status TEXT NOT NULL,"
	" spec TEXT NOT NULL DEFAULT '{}',"
	" applied TEXT NOT NULL DEFAULT '{}',"
	" urls TEXT NOT NULL DEFAULT '{}',"
	" limits TEXT NOT NULL DEFAULT '{}',"
	" error TEXT,"
	" dry_run INTEGER NOT NULL DEFAULT 0,"
	" generation INTEGER,"
	" created_at TEXT NOT NULL,"
	" updated_at TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS jobs ("
	" id TEXT PRIMARY KEY,"
	" subscription_id TEXT NOT NULL,"
	" operation TEXT NOT NULL,"
	" state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed')),"
	" request TEXT NOT NULL DEFAULT '{}',"
	" result TEXT,"
	" error TEXT,"
	" generation INTEGER,"
	" step TEXT,"
	" steps_done INTEGER NOT NULL DEFAULT 0,"
	" steps_total INTEGER NOT NULL DEFAULT 0,"
	" attempts INTEGER NOT NULL DEFAULT 0,"
	" waiting_for TEXT,"
	" created_at TEXT NOT NULL,"
	" started_at TEXT,"
	" finished_at TEXT);"
	"CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);"
	"CREATE INDEX IF NOT EXISTS jobs_by_subscription ON jobs (subscription_id);"
	"CREATE TABLE IF NOT EXISTS steps ("
	" job_id TEXT NOT NULL REFERENCES jobs (id),"
	" seq INTEGER NOT NULL,"
	" resource TEXT NOT NULL,"
	" target TEXT NOT NULL,"
	" command TEXT NOT NULL,"
	" mutating INTEGER NOT NULL DEFAULT 1,"
	" state TEXT NOT NULL,"
	" exit_code INTEGER,"
	" duration_ms INTEGER,"
	" output TEXT,"
	" error TEXT,"
	" started_at TEXT,"
	" finished_at TEXT,"
	" PRIMARY KEY (job_id, seq));"
	"CREATE TABLE IF NOT EXISTS outbox ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" subscription_id TEXT NOT NULL,"
	" kind TEXT NOT NULL,"
	" payload TEXT NOT NULL,"
	" state TEXT NOT NULL DEFAULT 'pending',"
	" attempts INTEGER NOT NULL DEFAULT 0,"
	" next_attempt_at TEXT,"
	" last_error TEXT,"
	" created_at TEXT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, id);"
	"CREATE TABLE IF NOT EXISTS webhook_ids ("
	" id TEXT PRIMARY KEY,"
	" received_at TEXT NOT NULL);",
	/* version 2: the outbox names its PostgREST upsert key; kind is the table */
	"ALTER TABLE outbox ADD COLUMN upsert_on TEXT;",
	/* version 3: which instance serves each domain, so that two instances
	 * (two jobs at once included) cannot both claim one: claims are checked
	 * and written inside one BEGIN IMMEDIATE transaction. Existing
	 * instances' custom domains are claimed here; their other domains are
	 * claimed by their next job. */
	"CREATE TABLE IF NOT EXISTS domains ("
	" domain TEXT PRIMARY KEY,"
	" subscription_id TEXT NOT NULL);"
	"CREATE INDEX IF NOT EXISTS domains_by_subscription ON domains (subscription_id);"
	"INSERT OR IGNORE INTO domains (domain, subscription_id)"
	" SELECT lower(json_extract(spec, '$.custom_domain')), subscription_id FROM instances"
	" WHERE status <> 'deprovisioned' AND json_valid(spec)"
	" AND json_type(spec, '$.custom_domain') = 'text';",
};

/* Prepared statements of this thread's connection, by SQL text. Preparing
 * was a third of the CPU of a GET /api/v1/status (two short queries), so
 * each thread keeps its last STMT_CACHE statements. A connection is only
 * used and closed by its own thread, so the cache is thread-local too. */
#define STMT_CACHE 32
struct cached_stmt {
	char *sql;
	size_t len;
	sqlite3_stmt *st;
};
static _Thread_local struct cached_stmt stmt_cache[STMT_CACHE];
static _Thread_local sqlite3 *stmt_cache_db;
static _Thread_local unsigned stmt_cache_next;

static void stmt_cache_clear(void)
{
	for (int i = 0; i < STMT_CACHE; i++) {
		sqlite3_finalize(stmt_cache[i].st);
		free(stmt_cache[i].sql);
		stmt_cache[i] = (struct cached_stmt){ NULL, 0, NULL };
	}
	stmt_cache_db = NULL;
	stmt_cache_next = 0;
}

void store_stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

sqlite3_stmt *store_stmt(sqlite3 *db, const char *sql, size_t len)
{
	if (stmt_cache_db != db) {
		stmt_cache_clear();
		stmt_cache_db = db;
	}
	for (int i = 0; i < STMT_CACHE; i++)
		if (stmt_cache[i].st && stmt_cache[i].len == len && memcmp(stmt_cache[i].sql, sql, len) == 0) {
			/* Reset again: a Lua error between store_stmt and
			 * store_stmt_done must not leave it mid-step. */
			store_stmt_done(stmt_cache[i].st);
			return stmt_cache[i].st;
		}
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v3(db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
		return NULL;
	char *copy = xmalloc(len + 1);
	memcpy(copy, sql, len);
	copy[len] = '\0';
	struct cached_stmt *slot = &stmt_cache[stmt_cache_next++ % STMT_CACHE];
	sqlite3_finalize(slot->st);
	free(slot->sql);
	*slot = (struct cached_stmt){ copy, len, st };
	return st;
}

/* Waits for another connection's write lock, for up to 10 s. SQLite's own
 * busy timeout sleeps 1, 2, 5, 10, ... up to 100 ms between tries; every
 * writer is a thread of this process holding the lock for a millisecond or
 * two, so those sleeps were the long tail of webhook acknowledgements under
 * load (bench measurement 6). Tries every 0.25-1 ms instead. */
static int busy_wait(void *arg, int tries)
{
	(void)arg;
	long us = tries < 4 ? 250 : 1000;
	/* 10 s in all: 4 tries of 250 us, then 1 ms each */
	if (tries >= 4 + 10000)
		return 0;
	struct timespec ts = { 0, us * 1000 };
	nanosleep(&ts, NULL);
	return 1;
}

/* Runs on the connection's own thread (its key destructor, or store_close). */
static void close_conn(void *p)
{
	if (!p)
		return;
	if (stmt_cache_db == p)
		stmt_cache_clear();
	sqlite3_close_v2(p);
}

/* The last write the file system refused (disk full, I/O error, read-only),
 * until a transaction commits again or 60 s pass without another. Noted
 * where statements fail: exec_sql (COMMIT), the job claim, and Lua's
 * store.exec / store.tx. */
static pthread_mutex_t problem_lock = PTHREAD_MUTEX_INITIALIZER;
static char write_problem[160];
static double problem_at; /* clock_mono() of the last refusal */

void store_note_error(int code)
{
	int primary = code & 0xff;
	if (primary != SQLITE_FULL && primary != SQLITE_IOERR && primary != SQLITE_READONLY)
		return;
	pthread_mutex_lock(&problem_lock);
	snprintf(write_problem, sizeof write_problem, "%s", sqlite3_errstr(code));
	problem_at = clock_mono();
	pthread_mutex_unlock(&problem_lock);
}

static void clear_problem(void)
{
	pthread_mutex_lock(&problem_lock);
	write_problem[0] = '\0';
	pthread_mutex_unlock(&problem_lock);
}

static void make_key(void)
{
	pthread_key_create(&conn_key, close_conn);
	/* Every thread that touches the store has its own connection (workers,
	 * the checkpointer, HTTP threads), so what SQLite pre-allocates per
	 * connection is paid many times over, idle or not: no bulk allocation
	 * of 20 cache pages (about 90 KB) on a connection's first read; pages
	 * come as they are used. Only takes effect before SQLite's first use. */
	sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
}

int store_writable(char *reason, size_t reasonlen)
{
	pthread_mutex_lock(&problem_lock);
	int trouble = write_problem[0] != '\0' && clock_mono() - problem_at < 60;
	if (trouble)
		snprintf(reason, reasonlen, "the state store cannot be written: %s", write_problem);
	pthread_mutex_unlock(&problem_lock);
	return trouble ? -1 : 0;
}

static sqlite3 *open_conn(char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	int flags = db_readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	flags |= SQLITE_OPEN_NOMUTEX;
	int rc = sqlite3_open_v2(db_path, &db, flags, NULL);
	if (rc != SQLITE_OK) {
		if (err)
			snprintf(err, errlen, "STATE_DB: cannot open %s: %s", db_path,
				 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close_v2(db);
		return NULL;
	}
	sqlite3_busy_handler(db, busy_wait, NULL);
	sqlite3_extended_result_codes(db, 1);
	const char *pragmas = db_readonly ? "PRAGMA query_only=1;"
					  : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
					    " PRAGMA foreign_keys=ON;";
	char *msg = NULL;
	if (sqlite3_exec(db, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
		if (err)
			snprintf(err, errlen, "STATE_DB: %s: %s", db_path, msg ? msg : "pragma failed");
		sqlite3_free(msg);
		sqlite3_close_v2(db);
		return NULL;
	}
	if (!db_readonly && atomic_load(&bg_checkpoint))
		sqlite3_wal_autocheckpoint(db, 0);
	return db;
}

static int migrate(sqlite3 *db, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int version = 0;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			version = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	if (version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "STATE_DB: %s has schema version %d, newer than this mrprov (%d)",
			 db_path, version, STORE_SCHEMA_VERSION);
		return -1;
	}
	for (int v = version; v < STORE_SCHEMA_VERSION; v++) {
		char *msg = NULL;
		char sql[64];
		snprintf(sql, sizeof sql, "PRAGMA user_version=%d", v + 1);
		if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(db, migrations[v], NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
			snprintf(err, errlen, "STATE_DB: migration to version %d failed: %s", v + 1,
				 msg ? msg : "?");
			sqlite3_free(msg);
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return -1;
		}
		log_info("store: schema migrated to version %d", v + 1);
	}
	return 0;
}

int store_open(const char *path, int readonly, char *err, size_t errlen)
{
	pthread_once(&key_once, make_key);
	free(db_path);
	db_path = xstrdup(path);
	db_readonly = readonly;
	if (!readonly && fs_mkdirs(path, 0700, 0) < 0) {
		snprintf(err, errlen, "STATE_DB: cannot create the directory of %s: %s", path, strerror(errno));
		return -1;
	}
	/* SQLite needs to write the file and, for its WAL and journal files,
	 * the directory: say so plainly instead of "unable to open database file"
	 * (a read-only mount reports EROFS even to root). */
	if (!readonly) {
		char *dir = xstrdup(path);
		char *slash = strrchr(dir, '/');
		if (slash == dir)
			slash[1] = '\0';
		else if (slash)
			*slash = '\0';
		const char *what = NULL;
		if (access(slash ? dir : ".", W_OK | X_OK) < 0)
			what = "its directory is not writable";
		else if (access(path, F_OK) == 0 && access(path, W_OK) < 0)
			what = "the file is not writable";
		if (what) {
			snprintf(err, errlen, "STATE_DB: %s: %s (%s); the store needs to write the file and its directory",
				 path, what, strerror(errno));
			free(dir);
			return -1;
		}
		/* The store holds every instance's secrets, and SQLite creates
		 * its -wal and -shm files with the database file's mode: a
		 * directory others can enter would hand them out whatever mode
		 * an earlier run (or umask) left on the files. */
		struct stat st;
		const char *d = slash ? dir : ".";
		if (stat(d, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO))) {
			snprintf(err, errlen,
				 "STATE_DB: the directory %s is open to other users (mode %03o); the store holds "
				 "secrets: run chmod 700 %s",
				 d, (unsigned)(st.st_mode & 0777), d);
			free(dir);
			return -1;
		}
		free(dir);
	}
	sqlite3 *db = open_conn(err, errlen);
	if (!db)
		return -1;
	if (!readonly && migrate(db, err, errlen) < 0) {
		sqlite3_close_v2(db);
		return -1;
	}
	close_conn(pthread_getspecific(conn_key));
	pthread_setspecific(conn_key, db);
	return 0;
}

int store_is_open(void)
{
	return db_path != NULL;
}

sqlite3 *store_conn(void)
{
	if (!db_path)
		return NULL;
	sqlite3 *db = pthread_getspecific(conn_key);
	if (!db) {
		char err[256];
		db = open_conn(err, sizeof err);
		if (!db) {
			log_error("%s", err);
			return NULL;
		}
		pthread_setspecific(conn_key, db);
	}
	return db;
}

static void *checkpoint_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&ckpt_lock);
	while (!ckpt_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&ckpt_cond, &ckpt_lock, &ts);
		if (ckpt_stop)
			break;
		pthread_mutex_unlock(&ckpt_lock);
		sqlite3 *db = store_conn();
		if (db)
			sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		pthread_mutex_lock(&ckpt_lock);
	}
	pthread_mutex_unlock(&ckpt_lock);
	return NULL; /* the key destructor closes this thread's connection */
}

int store_checkpointer_start(void)
{
	if (!db_path || db_readonly || ckpt_running)
		return 0;
	atomic_store(&bg_checkpoint, 1);
	ckpt_stop = 0;
	if (pthread_create(&ckpt_thread, NULL, checkpoint_main, NULL) != 0) {
		atomic_store(&bg_checkpoint, 0);
		return -1;
	}
	ckpt_running = 1;
	return 0;
}

void store_checkpointer_stop(void)
{
	if (!ckpt_running)
		return;
	pthread_mutex_lock(&ckpt_lock);
	ckpt_stop = 1;
	pthread_cond_signal(&ckpt_cond);
	pthread_mutex_unlock(&ckpt_lock);
	pthread_join(ckpt_thread, NULL);
	ckpt_running = 0;
	atomic_store(&bg_checkpoint, 0);
}

void store_close(void)
{
	if (!db_path)
		return;
	close_conn(pthread_getspecific(conn_key));
	pthread_setspecific(conn_key, NULL);
	free(db_path);
	db_path = NULL;
}

/* One statement without parameters, prepared once per connection (the
 * statement cache): BEGIN and COMMIT run on every request that reads, and
 * sqlite3_exec would parse them each time. */
static int exec_sql(const char *sql)
{
	sqlite3 *db = store_conn();
	if (!db)
		return -1;
	sqlite3_stmt *st = store_stmt(db, sql, strlen(sql));
	int rc = SQLITE_ERROR;
	if (st) {
		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
			;
		store_stmt_done(st);
	}
	if (rc != SQLITE_DONE) {
		store_note_error(sqlite3_extended_errcode(db));
		log_error("store: %s: %s", sql, sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

int store_begin(void)
{
	return exec_sql("BEGIN IMMEDIATE");
}

int store_read_begin(void)
{
	return exec_sql("BEGIN");
}

void store_read_end(void)
{
	sqlite3 *db = store_conn();
	if (db && !sqlite3_get_autocommit(db))
		exec_sql("COMMIT"); /* read-only: nothing to lose */
}

int store_commit(void)
{
	if (exec_sql("COMMIT") < 0)
		return -1;
	clear_problem();
	return 0;
}

void store_rollback(void)
{
	sqlite3 *db = store_conn();
	if (db && !sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	/* A rollback can fail too (I/O error, full disk): a connection left in
	 * its transaction would hold the write lock for ever and make every
	 * later store.tx on it look nested (never committed). Closing it rolls
	 * back and releases the locks; the next use opens a fresh one. */
	if (db && !sqlite3_get_autocommit(db)) {
		log_error("store: rollback failed (%s); reopening this thread's connection", sqlite3_errmsg(db));
		pthread_setspecific(conn_key, NULL);
		close_conn(db);
	}
}

int store_job_claim(char *id, size_t idlen)
{
	sqlite3 *db = store_conn();
	if (!db)
		return -1;
	static const char sql[] =
		"UPDATE jobs SET state = 'running', started_at = ?1, attempts = attempts + 1"
		" WHERE id = (SELECT j.id FROM jobs j WHERE j.state = 'queued' AND NOT EXISTS"
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
	if (!db || exec_sql("UPDATE jobs SET state = 'queued' WHERE state = 'running'") < 0)
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
		clear_problem();
	return rc;
}
