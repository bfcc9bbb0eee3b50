/* store_internal: what the files of src/store share and nothing outside
 * uses. store.c owns the connections (one per thread) and transactions;
 * migrate.c the schema (schema.sql) and its upgrades; stmt_cache.c the
 * per-thread prepared statements; errors.c the last refused write; jobs.c
 * the job-queue statements C runs itself. */
#ifndef MRPROV_STORE_INTERNAL_H
#define MRPROV_STORE_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>

/* src/store/schema.sql, embedded at build time (cmake/embed.cmake). */
extern const char store_schema_sql[];
extern const size_t store_schema_sql_len;

/* Brings the database at db (file path, for messages) to
 * STORE_SCHEMA_VERSION: a new one gets schema.sql, an older one its
 * upgrades, each in its own transaction. -1 with the reason in err. */
int store_migrate(sqlite3 *db, const char *path, char *err, size_t errlen);

/* Finalizes this thread's cached statements when they belong to db (its
 * connection is being closed). */
void store_stmt_cache_drop(sqlite3 *db);

/* A transaction committed: the last refused write is over. */
void store_clear_problem(void);

/* One statement without parameters through the statement cache; -1 (and
 * the error noted and logged) when it fails. */
int store_exec_sql(const char *sql);

#endif
