/* Unit tests for src/store: schema creation and version, job claiming that
 * never hands out two jobs of one subscription, requeue after a crash, and
 * upgrades that end where src/store/schema.sql starts. */
#include "check.h"
#include "store/store.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void exec(const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(store_conn(), sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "sql failed: %s: %s\n", sql, msg);
		sqlite3_free(msg);
		exit(2);
	}
}

static int user_version(void)
{
	sqlite3_stmt *st;
	sqlite3_prepare_v2(store_conn(), "PRAGMA user_version", -1, &st, NULL);
	sqlite3_step(st);
	int v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* The schema of version 1 exactly as mrprov created it (its first
 * migration, before schema.sql existed): a store of that age must upgrade
 * to exactly the schema a new store gets from src/store/schema.sql. */
static const char schema_v1[] =
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
	" received_at TEXT NOT NULL);";

/* The shape of db's schema, one line per table, index and column, with the
 * CREATE text stripped of spaces and case (an upgrade's ALTER TABLE appends
 * its column to the stored text). Caller frees. */
static char *schema_shape(sqlite3 *db)
{
	static const char sql[] =
		"SELECT m.type || ' ' || m.name || ' ' || m.tbl_name || ' '"
		"  || lower(replace(replace(replace(coalesce(m.sql, ''), ' ', ''), char(10), ''), char(9), ''))"
		" FROM sqlite_master m WHERE m.name NOT LIKE 'sqlite_%'"
		" UNION ALL SELECT 'column ' || m.name || '.' || p.cid || ' ' || p.name || ' ' || p.type || ' '"
		"  || p.\"notnull\" || ' ' || coalesce(p.dflt_value, '-') || ' ' || p.pk"
		" FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'"
		" ORDER BY 1";
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "schema_shape: %s\n", sqlite3_errmsg(db));
		exit(2);
	}
	size_t cap = 1 << 16, len = 0;
	char *out = calloc(1, cap);
	while (out && sqlite3_step(st) == SQLITE_ROW)
		len += (size_t)snprintf(out + len, cap - len, "%s\n", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return out;
}

/* A version-1 store upgrades to the tables, columns and indexes of a new
 * one (schema.sql): the upgrades and the schema file cannot drift apart. */
static void test_upgrade_matches_schema(const char *dir)
{
	char err[256], fresh[300], old[300];
	snprintf(fresh, sizeof fresh, "%s/fresh.db", dir);
	snprintf(old, sizeof old, "%s/v1.db", dir);
	CHECK(store_open(fresh, 0, err, sizeof err) == 0);
	char *want = schema_shape(store_conn());
	store_close();

	sqlite3 *db;
	CHECK(sqlite3_open(old, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, schema_v1, NULL, NULL, NULL) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "PRAGMA user_version=1", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	CHECK(store_open(old, 0, err, sizeof err) == 0);
	CHECK(user_version() == STORE_SCHEMA_VERSION);
	char *got = schema_shape(store_conn());
	store_close();
	CHECK(want && got && strstr(want, "table outbox") && strstr(want, "column outbox.9 upsert_on"));
	CHECK_STR(got, want);
	free(want);
	free(got);
}

int main(void)
{
	char dir[] = "/tmp/mrprov-store-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	char path[256];
	snprintf(path, sizeof path, "%s/sub/state.db", dir);
	char err[256];
	CHECK(store_open(path, 0, err, sizeof err) == 0);
	CHECK(user_version() == STORE_SCHEMA_VERSION);
	CHECK(access(path, F_OK) == 0);

	exec("INSERT INTO jobs (id, subscription_id, operation, state, created_at) VALUES"
	     " ('j1','s1','provision','queued','t'), ('j2','s1','update','queued','t'),"
	     " ('j3','s2','provision','queued','t')");
	char id[64];
	CHECK(store_job_claim(id, sizeof id) == 1);
	CHECK_STR(id, "j1");
	/* s1 already has a running job: the next claim skips j2. */
	CHECK(store_job_claim(id, sizeof id) == 1);
	CHECK_STR(id, "j3");
	CHECK(store_job_claim(id, sizeof id) == 0);
	CHECK(store_job_finished("j1") == 0);
	CHECK(store_job_finished("nope") == -1);

	store_job_fail("j1", "boom");
	CHECK(store_job_finished("j1") == 1);
	CHECK(store_job_claim(id, sizeof id) == 1);
	CHECK_STR(id, "j2");

	/* A crash leaves j2 and j3 running: requeue puts both back. */
	CHECK(store_jobs_requeue() == 2);
	CHECK(store_job_claim(id, sizeof id) == 1);

	/* Cached statements: the same SQL gives the same statement back, reset
	 * and unbound, even when the last use stopped mid-step. */
	const char *q = "SELECT id FROM jobs WHERE subscription_id = ? ORDER BY id";
	sqlite3_stmt *c1 = store_stmt(store_conn(), q, strlen(q));
	CHECK(c1 != NULL);
	sqlite3_bind_text(c1, 1, "s1", -1, SQLITE_STATIC);
	CHECK(sqlite3_step(c1) == SQLITE_ROW); /* left mid-step on purpose */
	sqlite3_stmt *c2 = store_stmt(store_conn(), q, strlen(q));
	CHECK(c2 == c1);
	CHECK(sqlite3_step(c2) == SQLITE_DONE); /* unbound: NULL matches nothing */
	store_stmt_done(c2);
	sqlite3_bind_text(c2, 1, "s2", -1, SQLITE_STATIC);
	CHECK(sqlite3_step(c2) == SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(c2, 0), "j3");
	store_stmt_done(c2);
	CHECK(store_stmt(store_conn(), "SELECT nope FROM jobs", 21) == NULL);

	/* Reopening keeps data and does not migrate twice (and drops the
	 * statement cache with the connection). */
	store_close();
	CHECK(store_open(path, 0, err, sizeof err) == 0);
	CHECK(user_version() == STORE_SCHEMA_VERSION);
	sqlite3_stmt *st;
	sqlite3_prepare_v2(store_conn(), "SELECT count(*) FROM jobs", -1, &st, NULL);
	sqlite3_step(st);
	CHECK(sqlite3_column_int(st, 0) == 3);
	sqlite3_finalize(st);

	/* Version 3 claims the custom domains of a version-2 store's instances
	 * (not a deprovisioned one's; a spec that is not JSON does not stop the
	 * migration). */
	exec("DROP TABLE domains; ALTER TABLE steps DROP COLUMN restart; ALTER TABLE steps DROP COLUMN deploys;"
	     "ALTER TABLE instances DROP COLUMN health_state; ALTER TABLE instances DROP COLUMN health_checked_at;"
	     "ALTER TABLE instances DROP COLUMN health_error; ALTER TABLE jobs DROP COLUMN not_before;"
	     "PRAGMA user_version=2;"
	     "INSERT INTO instances (subscription_id, app_name, tier, status, spec, created_at, updated_at) VALUES"
	     " ('s1','mr-a-00000001','enterprise','running','{\"custom_domain\":\"Shop.Example.com\"}','t','t'),"
	     " ('s2','mr-b-00000002','enterprise','deprovisioned','{\"custom_domain\":\"old.example\"}','t','t'),"
	     " ('s3','mr-c-00000003','free','running','{}','t','t'),"
	     " ('s4','mr-d-00000004','free','failed','not json','t','t')");
	store_close();
	CHECK(store_open(path, 0, err, sizeof err) == 0);
	CHECK(user_version() == STORE_SCHEMA_VERSION);
	sqlite3_prepare_v2(store_conn(), "SELECT group_concat(domain || '=' || subscription_id) FROM domains", -1, &st,
			   NULL);
	CHECK(sqlite3_step(st) == SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(st, 0), "shop.example.com=s1");
	sqlite3_finalize(st);

	/* Version 4 journals what a step does to its app (restart, deploys);
	 * a step journaled before says nothing (NULL: not known), a new one
	 * says what it is told, 0 by default. */
	exec("ALTER TABLE steps DROP COLUMN restart; ALTER TABLE steps DROP COLUMN deploys;"
	     "ALTER TABLE instances DROP COLUMN health_state; ALTER TABLE instances DROP COLUMN health_checked_at;"
	     "ALTER TABLE instances DROP COLUMN health_error; ALTER TABLE jobs DROP COLUMN not_before;"
	     "PRAGMA user_version=3;"
	     "INSERT INTO steps (job_id, seq, resource, target, command, state) VALUES"
	     " ('j1', 1, 'config', 'a', 'dokku --quiet config:set --no-restart a K=[set]', 'done')");
	store_close();
	CHECK(store_open(path, 0, err, sizeof err) == 0);
	CHECK(user_version() == STORE_SCHEMA_VERSION);
	exec("INSERT INTO steps (job_id, seq, resource, target, command, state) VALUES"
	     " ('j1', 2, 'domains', 'a', 'dokku --quiet domains:set a a.example', 'done');"
	     "INSERT INTO steps (job_id, seq, resource, target, command, state, restart, deploys) VALUES"
	     " ('j1', 3, 'image', 'a', 'dokku --quiet git:from-image a i:1', 'done', 0, 1)");
	sqlite3_prepare_v2(store_conn(),
			   "SELECT group_concat(seq || ':' || coalesce(restart, 'null') || ':' || coalesce(deploys, 'null'))"
			   " FROM (SELECT * FROM steps WHERE job_id = 'j1' ORDER BY seq)",
			   -1, &st, NULL);
	CHECK(sqlite3_step(st) == SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(st, 0), "1:null:null,2:0:0,3:0:1");
	sqlite3_finalize(st);

	/* Version 5: instances' health columns and jobs' not_before; a queued
	 * job is not claimed before its not_before. */
	exec("ALTER TABLE instances DROP COLUMN health_state; ALTER TABLE instances DROP COLUMN health_checked_at;"
	     "ALTER TABLE instances DROP COLUMN health_error; ALTER TABLE jobs DROP COLUMN not_before;"
	     "UPDATE instances SET spec = '{\"enable_matrix\":true}' WHERE subscription_id = 's3';"
	     "UPDATE instances SET spec = '{\"profile\":\"mindroom\"}' WHERE subscription_id = 's2';"
	     "PRAGMA user_version=4;");
	store_close();
	CHECK(store_open(path, 0, err, sizeof err) == 0);
	CHECK(user_version() == STORE_SCHEMA_VERSION);
	/* ... and every existing instance's layout is recorded: split, the only
	 * one before; a recorded one and a spec that is not JSON are left. */
	sqlite3_prepare_v2(store_conn(),
			   "SELECT group_concat(subscription_id || '=' || spec, ' ')"
			   " FROM (SELECT * FROM instances ORDER BY subscription_id)",
			   -1, &st, NULL);
	CHECK(sqlite3_step(st) == SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(st, 0),
		  "s1={\"custom_domain\":\"Shop.Example.com\",\"profile\":\"split\"}"
		  " s2={\"profile\":\"mindroom\"} s3={\"enable_matrix\":true,\"profile\":\"split\"} s4=not json");
	sqlite3_finalize(st);
	exec("UPDATE jobs SET state = 'succeeded';"
	     "INSERT INTO jobs (id, subscription_id, operation, state, created_at, not_before) VALUES"
	     " ('later','s7','health','queued','t','9999-01-01T00:00:00.000Z'),"
	     " ('due','s8','health','queued','t','2000-01-01T00:00:00.000Z');"
	     "UPDATE instances SET health_state = 'starting' WHERE subscription_id = 's1'");
	CHECK(store_job_claim(id, sizeof id) == 1);
	CHECK_STR(id, "due");
	CHECK(store_job_claim(id, sizeof id) == 0);
	exec("UPDATE jobs SET not_before = NULL WHERE id = 'later'");
	CHECK(store_job_claim(id, sizeof id) == 1);
	CHECK_STR(id, "later");

	/* Version 7 (issue 16): every instance that exists is on the implicit
	 * host; the hosts table (drains) is created. */
	exec("DROP INDEX instances_by_host; ALTER TABLE instances DROP COLUMN host; DROP TABLE hosts;"
	     "PRAGMA user_version=6;");
	store_close();
	CHECK(store_open(path, 0, err, sizeof err) == 0);
	CHECK(user_version() == STORE_SCHEMA_VERSION);
	sqlite3_prepare_v2(store_conn(),
			   "SELECT count(*), sum(host = 'default'), (SELECT count(*) FROM hosts) FROM instances", -1,
			   &st, NULL);
	CHECK(sqlite3_step(st) == SQLITE_ROW);
	CHECK(sqlite3_column_int(st, 0) == 4 && sqlite3_column_int(st, 1) == 4 && sqlite3_column_int(st, 2) == 0);
	sqlite3_finalize(st);

	/* Read-only mode refuses writes. */
	store_close();
	CHECK(store_open(path, 1, err, sizeof err) == 0);
	CHECK(sqlite3_exec(store_conn(), "DELETE FROM jobs", NULL, NULL, NULL) != SQLITE_OK);
	store_close();

	/* A newer schema than this binary knows is refused with a clear error. */
	CHECK(store_open(path, 0, err, sizeof err) == 0);
	exec("PRAGMA user_version=99");
	store_close();
	CHECK(store_open(path, 0, err, sizeof err) < 0 && strstr(err, "newer"));

	/* A directory other users can enter would hand them the store (its
	 * -wal and -shm files too): refused, naming the directory and the fix. */
	store_close();
	char open_dir[256], open_path[300];
	snprintf(open_dir, sizeof open_dir, "%s/open", dir);
	CHECK(mkdir(open_dir, 0700) == 0 && chmod(open_dir, 0750) == 0);
	snprintf(open_path, sizeof open_path, "%s/state.db", open_dir);
	CHECK(store_open(open_path, 0, err, sizeof err) < 0 && strstr(err, open_dir) && strstr(err, "chmod 700"));
	CHECK(access(open_path, F_OK) < 0);
	CHECK(chmod(open_dir, 0700) == 0);
	CHECK(store_open(open_path, 0, err, sizeof err) == 0);
	store_close();

	test_upgrade_matches_schema(dir);

	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
	return check_done();
}
