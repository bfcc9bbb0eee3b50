/* store statement cache: each thread keeps its connection's last prepared
 * statements, by SQL text. */
#include "store.h"
#include "store_internal.h"
#include "util/xalloc.h"

#include <stdlib.h>
#include <string.h>

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

void store_stmt_cache_drop(sqlite3 *db)
{
	if (stmt_cache_db == db)
		stmt_cache_clear();
}
