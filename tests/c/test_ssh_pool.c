/* Integration test of src/ssh/pool.c against a real OpenSSH sshd on
 * loopback (started by tests/fixtures/sshd-harness; its forced command is
 * the Dokku simulator). Skips (exit 77) when MRPROV_SSH_PORT is unset. */
#include "check.h"
#include "ssh/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static struct ssh_pool_opts opts;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct job {
	struct ssh_pool *p;
	int ok;
};

static void *worker(void *arg)
{
	struct job *j = arg;
	for (int i = 0; i < 5; i++) {
		struct ssh_result r;
		if (ssh_pool_run(j->p, "version", 20, -1, &r) == 0 && r.exit_code == 0 &&
		    strstr(r.out.data ? r.out.data : "", "dokku version"))
			j->ok++;
		ssh_result_free(&r);
	}
	return NULL;
}

int main(void)
{
	const char *port = getenv("MRPROV_SSH_PORT");
	if (!port) {
		printf("MRPROV_SSH_PORT not set: skipped\n");
		return 77;
	}
	char kh[512];
	snprintf(kh, sizeof kh, "%s.test", getenv("MRPROV_SSH_KNOWN_HOSTS"));
	unlink(kh);
	opts = (struct ssh_pool_opts){
		.host = "127.0.0.1", .port = atoi(port), .user = getenv("MRPROV_SSH_USER"),
		.key_path = getenv("MRPROV_SSH_KEY"), .known_hosts = kh, .sessions = 2, .channels = 4,
		.connect_timeout_s = 5,
	};
	char err[256];
	struct ssh_pool *p = ssh_pool_new(&opts, err, sizeof err);
	CHECK(p != NULL);

	/* An unknown host is recorded on first use. */
	struct ssh_result r;
	CHECK(ssh_pool_run(p, "version", 20, -1, &r) == 0);
	CHECK(r.exit_code == 0);
	CHECK(r.out.data && strstr(r.out.data, "dokku version"));
	ssh_result_free(&r);
	CHECK(access(kh, R_OK) == 0);
	CHECK(ssh_pool_connected(p) >= 1);
	CHECK(ssh_pool_last_ok(p) > 0);

	/* Exit codes and stderr come back as Dokku sent them. */
	CHECK(ssh_pool_run(p, "--quiet apps:exists mr-nope-12345678", 20, -1, &r) == 0);
	CHECK(r.exit_code == 20);
	CHECK(r.err.data && strstr(r.err.data, "does not exist"));
	ssh_result_free(&r);

	/* Several threads share the pool; every command completes. */
	pthread_t t[6];
	struct job jobs[6];
	double t0 = now_s();
	for (int i = 0; i < 6; i++) {
		jobs[i] = (struct job){ p, 0 };
		pthread_create(&t[i], NULL, worker, &jobs[i]);
	}
	int ok = 0;
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		ok += jobs[i].ok;
	}
	CHECK(ok == 30);
	printf("30 commands over the pool in %.3f s\n", now_s() - t0);

	/* A command that never returns times out (transient), and the pool goes on. */
	char faults[600];
	snprintf(faults, sizeof faults, "%s/faults.json", getenv("MRPROV_SSH_STATE"));
	FILE *f = fopen(faults, "w");
	fputs("[{\"match\":\"^ps:report\",\"action\":\"hang\"}]", f);
	fclose(f);
	t0 = now_s();
	CHECK(ssh_pool_run(p, "ps:report mr-x-12345678", 1, -1, &r) < 0);
	CHECK(r.transient && strstr(r.error, "timed out"));
	CHECK(now_s() - t0 < 5);
	ssh_result_free(&r);
	unlink(faults);
	CHECK(ssh_pool_run(p, "version", 20, -1, &r) == 0 && r.exit_code == 0);
	ssh_result_free(&r);

	/* Streaming stdout to a file. */
	char path[] = "/tmp/mrprov-ssh-XXXXXX";
	int fd = mkstemp(path);
	CHECK(ssh_pool_run(p, "version", 20, fd, &r) == 0 && r.out.len == 0 && r.out_bytes > 10);
	ssh_result_free(&r);
	CHECK(lseek(fd, 0, SEEK_END) > 10);
	close(fd);
	unlink(path);
	ssh_pool_free(p);

	/* A known key that does not match is refused, permanently. */
	f = fopen(kh, "w");
	fprintf(f, "[127.0.0.1]:%s ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ5Y2xvbmVkLWtleS1mb3ItdGVzdHMtMDAwMDAwMDA=\n", port);
	fclose(f);
	p = ssh_pool_new(&opts, err, sizeof err);
	CHECK(ssh_pool_run(p, "version", 20, -1, &r) < 0);
	CHECK(strstr(r.error, "does not match") != NULL);
	CHECK(!r.transient);
	ssh_result_free(&r);
	ssh_pool_free(p);

	/* Nobody listening: a transient error, quickly. */
	struct ssh_pool_opts closed = opts;
	closed.port = 1;
	p = ssh_pool_new(&closed, err, sizeof err);
	CHECK(ssh_pool_run(p, "version", 20, -1, &r) < 0);
	CHECK(r.transient);
	CHECK(strstr(r.error, "connect") != NULL);
	ssh_result_free(&r);
	ssh_pool_free(p);
	unlink(kh);
	return check_done();
}
