/* store: SQLite journal. Each thread owns a connection (pthread key), so no
 * connection is ever shared; WAL lets readers run beside the one writer.
 * This file: opening (and its checks), connections, the checkpointer and
 * transactions; the schema is migrate.c's, see store_internal.h. */
#include "store.h"
#include "store_internal.h"
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
	store_stmt_cache_drop(p);
	sqlite3_close_v2(p);
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

/* SQLite needs to write the file and, for its WAL and journal files, the
 * directory: say so plainly instead of "unable to open database file" (a
 * read-only mount reports EROFS even to root). */
static int check_writable_private(const char *path, char *err, size_t errlen)
{
	int rc = -1;
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
		goto out;
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
		goto out;
	}
	rc = 0;
out:
	free(dir);
	return rc;
}

int store_open(const char *path, int readonly, char *err, size_t errlen)
{
	pthread_once(&key_once, make_key);
	free(db_path);
	db_path = xstrdup(path);
	db_readonly = readonly;
	/* ":memory:" (the busted specs' store, tests/c/store_module.c) has no
	 * file or directory to create or check. */
	int on_disk = !readonly && strcmp(path, ":memory:") != 0;
	if (on_disk && fs_mkdirs(path, 0700, 0) < 0) {
		snprintf(err, errlen, "STATE_DB: cannot create the directory of %s: %s", path, strerror(errno));
		return -1;
	}
	if (on_disk && check_writable_private(path, err, errlen) < 0)
		return -1;
	sqlite3 *db = open_conn(err, errlen);
	if (!db)
		return -1;
	if (!readonly && store_migrate(db, db_path, err, errlen) < 0) {
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
int store_exec_sql(const char *sql)
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
	return store_exec_sql("BEGIN IMMEDIATE");
}

int store_read_begin(void)
{
	return store_exec_sql("BEGIN");
}

void store_read_end(void)
{
	sqlite3 *db = store_conn();
	if (db && !sqlite3_get_autocommit(db))
		store_exec_sql("COMMIT"); /* read-only: nothing to lose */
}

int store_commit(void)
{
	if (store_exec_sql("COMMIT") < 0)
		return -1;
	store_clear_problem();
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
