/* Unit tests for src/store: schema creation and version, job claiming that
 * never hands out two jobs of one subscription, requeue after a crash. */
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
	exec("ALTER TABLE steps DROP COLUMN restart; ALTER TABLE steps DROP COLUMN deploys; PRAGMA user_version=3;"
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

	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
	return check_done();
}
