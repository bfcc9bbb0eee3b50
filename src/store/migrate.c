/* store migrate: a new database gets the current schema from schema.sql; an
 * existing one is upgraded one version at a time, each upgrade a function
 * of its own below and its own transaction with the new user_version. */
#include "store.h"
#include "store_internal.h"
#include "util/log.h"

#include <stdio.h>

/* Each upgrade takes a database at version N-1 to version N (inside the
 * transaction migrate() opened); SQLite's error message in *msg. The
 * database's final shape must equal schema.sql's (test_store checks). */
typedef int (*store_upgrade_fn)(sqlite3 *db, char **msg);

/* version 2: the outbox names its PostgREST upsert key; kind is the table. */
static int upgrade_to_v2(sqlite3 *db, char **msg)
{
	return sqlite3_exec(db, "ALTER TABLE outbox ADD COLUMN upsert_on TEXT;", NULL, NULL, msg);
}

/* version 3: which instance serves each domain, so that two instances (two
 * jobs at once included) cannot both claim one. Existing instances' custom
 * domains are claimed here; their other domains are claimed by their next
 * job. */
static int upgrade_to_v3(sqlite3 *db, char **msg)
{
	static const char sql[] =
		"CREATE TABLE IF NOT EXISTS domains ("
		" domain TEXT PRIMARY KEY,"
		" subscription_id TEXT NOT NULL);"
		"CREATE INDEX IF NOT EXISTS domains_by_subscription ON domains (subscription_id);"
		"INSERT OR IGNORE INTO domains (domain, subscription_id)"
		" SELECT lower(json_extract(spec, '$.custom_domain')), subscription_id FROM instances"
		" WHERE status <> 'deprovisioned' AND json_valid(spec)"
		" AND json_type(spec, '$.custom_domain') = 'text';";
	return sqlite3_exec(db, sql, NULL, NULL, msg);
}

/* version 4: what a step's command does to its app, as the resource module
 * that planned it said: takes effect on the app's next start (restart), or
 * starts it with its current settings (deploys). A resumed job reads them
 * instead of guessing from the command text. Steps journaled before keep
 * NULL, "not known": the journal reader counts such a step as a change
 * still owed a restart. */
static int upgrade_to_v4(sqlite3 *db, char **msg)
{
	return sqlite3_exec(db,
			    "ALTER TABLE steps ADD COLUMN restart INTEGER DEFAULT 0;"
			    "ALTER TABLE steps ADD COLUMN deploys INTEGER DEFAULT 0;"
			    "UPDATE steps SET restart = NULL, deploys = NULL;",
			    NULL, NULL, msg);
}

/* version 5: readiness. An instance's last health check (state, time, the
 * last answer or error), and a queued job's earliest start (not_before), so
 * that a job waiting between checks re-queues itself instead of holding a
 * worker. Existing rows keep NULL: never checked; claimable at once.
 * And the profile (layout) of an instance is recorded in its spec when it
 * is provisioned, and kept: every instance that exists before this version
 * was laid out by `split` (the only layout there was), so it is recorded as
 * that, and a new default PROFILE never re-lays out an existing customer
 * (lua/plan.lua desired_state). A spec that is not a JSON object is left. */
static int upgrade_to_v5(sqlite3 *db, char **msg)
{
	return sqlite3_exec(db,
			    "ALTER TABLE instances ADD COLUMN health_state TEXT;"
			    "ALTER TABLE instances ADD COLUMN health_checked_at TEXT;"
			    "ALTER TABLE instances ADD COLUMN health_error TEXT;"
			    "ALTER TABLE jobs ADD COLUMN not_before TEXT;"
			    "UPDATE instances SET spec = json_set(spec, '$.profile', 'split')"
			    " WHERE json_valid(spec) AND json_type(spec) = 'object'"
			    " AND json_type(spec, '$.profile') IS NULL;",
			    NULL, NULL, msg);
}

/* version 6: the drift sweep (lua/reconcile.lua) records, per instance, when
 * it was last probed and which resources differed from the desired state
 * (a JSON array of {resource, type, app, commands}; [] when in sync). */
static int upgrade_to_v6(sqlite3 *db, char **msg)
{
	return sqlite3_exec(db,
			    "CREATE TABLE IF NOT EXISTS drift (subscription_id TEXT PRIMARY KEY,"
			    " checked_at TEXT NOT NULL, resources TEXT NOT NULL DEFAULT '[]');",
			    NULL, NULL, msg);
}

/* version 7: fleet rollouts (lua/rollout.lua). A rollout (its validated
 * request in spec, its state and progress) and one row per selected
 * instance: its wave, its step's state, the image it had before (restored
 * by a rollback) and the job that changed it. next_wave_at: the end of
 * the pause before the wave under way starts. */
static int upgrade_to_v7(sqlite3 *db, char **msg)
{
	return sqlite3_exec(db,
			    "CREATE TABLE IF NOT EXISTS rollouts (id TEXT PRIMARY KEY, state TEXT NOT NULL,"
			    " spec TEXT NOT NULL DEFAULT '{}', wave INTEGER NOT NULL DEFAULT 1,"
			    " failures INTEGER NOT NULL DEFAULT 0, reason TEXT, created_at TEXT NOT NULL,"
			    " updated_at TEXT NOT NULL, finished_at TEXT, next_wave_at TEXT);"
			    "CREATE TABLE IF NOT EXISTS rollout_instances (rollout_id TEXT NOT NULL,"
			    " subscription_id TEXT NOT NULL, wave INTEGER NOT NULL, position INTEGER NOT NULL,"
			    " state TEXT NOT NULL, from_image TEXT, job_id TEXT, error TEXT, started_at TEXT,"
			    " finished_at TEXT, PRIMARY KEY (rollout_id, subscription_id));",
			    NULL, NULL, msg);
}

/* version 8: Dokku hosts (issue 16). Each instance's host, decided by
 * placement before any command is sent and changed only by a move: the
 * instances that exist already are on the implicit host, "default". A
 * host's drain, set through the API, survives a restart. */
static int upgrade_to_v8(sqlite3 *db, char **msg)
{
	/* (a store whose version was set back by hand may have the column:
	 * the upgrade then only fills what is missing, as v6's IF NOT EXISTS) */
	sqlite3_stmt *st;
	int have = 0;
	if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('instances') WHERE name = 'host'", -1, &st, NULL) ==
	    SQLITE_OK) {
		have = sqlite3_step(st) == SQLITE_ROW;
		sqlite3_finalize(st);
	}
	if (!have) {
		int rc = sqlite3_exec(db, "ALTER TABLE instances ADD COLUMN host TEXT;", NULL, NULL, msg);
		if (rc != SQLITE_OK)
			return rc;
	}
	return sqlite3_exec(db,
			    "UPDATE instances SET host = 'default' WHERE host IS NULL;"
			    "CREATE INDEX IF NOT EXISTS instances_by_host ON instances (host);"
			    "CREATE TABLE IF NOT EXISTS hosts (name TEXT PRIMARY KEY,"
			    " draining INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL);",
			    NULL, NULL, msg);
}

/* version 9: a rollout may set field values besides the image (the MindRoom
 * app's environment, lua/rollout.lua): each selected instance's values
 * before it, restored by a rollback. Rows of earlier rollouts keep NULL:
 * they set none. */
static int upgrade_to_v9(sqlite3 *db, char **msg)
{
	/* (a store whose version was set back by hand may have the column, as
	 * in v8) */
	sqlite3_stmt *st;
	int have = 0;
	if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('rollout_instances') WHERE name = 'from_fields'",
			       -1, &st, NULL) == SQLITE_OK) {
		have = sqlite3_step(st) == SQLITE_ROW;
		sqlite3_finalize(st);
	}
	if (have)
		return SQLITE_OK;
	return sqlite3_exec(db, "ALTER TABLE rollout_instances ADD COLUMN from_fields TEXT;", NULL, NULL, msg);
}

/* upgrades[v] takes a database from version v-1 to v. Version 1 exists only
 * as the first schema: a new database gets schema.sql at once. */
static const store_upgrade_fn upgrades[STORE_SCHEMA_VERSION + 1] = {
	[2] = upgrade_to_v2,
	[3] = upgrade_to_v3,
	[4] = upgrade_to_v4,
	[5] = upgrade_to_v5,
	[6] = upgrade_to_v6,
	[7] = upgrade_to_v7,
	[8] = upgrade_to_v8,
	[9] = upgrade_to_v9,
};

static int create_current(sqlite3 *db, char **msg)
{
	return sqlite3_exec(db, store_schema_sql, NULL, NULL, msg);
}

static int schema_version(sqlite3 *db)
{
	sqlite3_stmt *st;
	int version = 0;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			version = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	return version;
}

/* Runs step and sets user_version to `to` in one transaction. */
static int run_step(sqlite3 *db, store_upgrade_fn step, int to, char *err, size_t errlen)
{
	char *msg = NULL;
	char sql[64];
	snprintf(sql, sizeof sql, "PRAGMA user_version=%d", to);
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK || step(db, &msg) != SQLITE_OK ||
	    sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK ||
	    sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "STATE_DB: migration to version %d failed: %s", to, msg ? msg : "?");
		sqlite3_free(msg);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

int store_migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
	int version = schema_version(db);
	if (version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "STATE_DB: %s has schema version %d, newer than this mrprov (%d)", path,
			 version, STORE_SCHEMA_VERSION);
		return -1;
	}
	if (version == 0) {
		if (run_step(db, create_current, STORE_SCHEMA_VERSION, err, errlen) < 0)
			return -1;
		log_info("store: schema version %d created", STORE_SCHEMA_VERSION);
		return 0;
	}
	for (int v = version + 1; v <= STORE_SCHEMA_VERSION; v++) {
		if (!upgrades[v]) { /* a version bumped without its upgrade */
			snprintf(err, errlen, "STATE_DB: no upgrade to schema version %d", v);
			return -1;
		}
		if (run_step(db, upgrades[v], v, err, errlen) < 0)
			return -1;
		log_info("store: schema migrated to version %d", v);
	}
	return 0;
}
