/* Integration test of the SSH pool (src/ssh/, API src/ssh/pool.h) against
 * a real OpenSSH sshd on loopback (started by tests/fixtures/sshd-harness;
 * its forced command is the Dokku simulator). Skips (exit 77) when
 * MRPROV_SSH_PORT is unset. */
#include "check.h"
#include "ssh/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct ssh_pool_opts opts;

/* A syntactically valid ed25519 key that no server has. */
#define FOREIGN_ED25519 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ5Y2xvbmVkLWtleS1mb3ItdGVzdHMtMDAwMDAwMDA="

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = calloc(1, 65536);
	size_t n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void put(const char *path, const char *text, mode_t mode)
{
	unlink(path);
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_mode & 07777 : 0;
}

/* One command over a fresh pool; hk gets the accepted host key ("" if none). */
static int run_once(const struct ssh_pool_opts *o, struct ssh_result *r, char *hk, size_t hklen)
{
	char err[256];
	struct ssh_pool *p = ssh_pool_new(o, err, sizeof err);
	if (!p)
		return -2;
	int rc = ssh_pool_run(p, "version", 20, -1, r);
	ssh_pool_host_key(p, hk, hklen);
	ssh_pool_free(p);
	return rc;
}

/* The fingerprint ssh-keygen prints for a public key file ("SHA256:…"). */
static void keygen_fp(const char *pub, char *out, size_t outlen)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "ssh-keygen -l -E sha256 -f '%s'", pub);
	FILE *f = popen(cmd, "r");
	char line[512] = "";
	if (!fgets(line, sizeof line, f))
		line[0] = '\0';
	pclose(f);
	char *a = strchr(line, ' ');
	char *b = a ? strchr(a + 1, ' ') : NULL;
	snprintf(out, outlen, "%.*s", a && b ? (int)(b - a - 1) : 0, a ? a + 1 : "");
}

/* The host-key policy: a host with an entry accepts only a recorded key and
 * negotiates only recorded types; a host without one is recorded only with
 * host_key_tofu. dir is the harness directory (its sshd offers an ed25519
 * and an ECDSA key; its known_hosts records only the ed25519 one). */
static void host_key_policy(const char *dir, const char *port)
{
	char kh[600], pub[600], fp_ed[128], fp_ec[128], hk[128];
	struct ssh_result r;
	snprintf(kh, sizeof kh, "%s/known_hosts.policy", dir);
	snprintf(pub, sizeof pub, "%s/ssh_host_ed25519_key.pub", dir);
	keygen_fp(pub, fp_ed, sizeof fp_ed);
	snprintf(pub, sizeof pub, "%s/ssh_host_ecdsa_key.pub", dir);
	keygen_fp(pub, fp_ec, sizeof fp_ec);
	CHECK(strncmp(fp_ed, "SHA256:", 7) == 0 && strncmp(fp_ec, "SHA256:", 7) == 0);
	char *recorded = slurp(getenv("MRPROV_SSH_KNOWN_HOSTS")); /* "[127.0.0.1]:port ssh-ed25519 …\n" */
	CHECK(recorded && strstr(recorded, " ssh-ed25519 "));
	char other[4096], before[8192], want[300];
	snprintf(other, sizeof other, "# kept as it is\nother.example %s\n", FOREIGN_ED25519);
	struct ssh_pool_opts o = opts;
	o.known_hosts = kh;

	/* ed25519 recorded, the server offers ed25519 and ECDSA: accepted with the
	 * recorded type (libssh2 alone would pick ECDSA and take it for a new
	 * host), and the file is left as it was. */
	snprintf(before, sizeof before, "%s%s", other, recorded);
	put(kh, before, 0644);
	CHECK(run_once(&o, &r, hk, sizeof hk) == 0 && r.exit_code == 0);
	ssh_result_free(&r);
	snprintf(want, sizeof want, "ssh-ed25519 %s", fp_ed);
	CHECK_STR(hk, want);
	char *after = slurp(kh);
	CHECK_STR(after, before);
	free(after);
	CHECK(mode_of(kh) == 0644);

	/* The same with the host name hashed (ssh-keyscan -H, HashKnownHosts). */
	char cmd[1400];
	snprintf(cmd, sizeof cmd, "ssh-keygen -q -H -f '%s' >/dev/null 2>&1 && rm -f '%s.old'", kh, kh);
	CHECK(system(cmd) == 0);
	char *hashed = slurp(kh);
	CHECK(hashed && strstr(hashed, "|1|") && !strstr(hashed, "127.0.0.1"));
	CHECK(run_once(&o, &r, hk, sizeof hk) == 0 && r.exit_code == 0);
	ssh_result_free(&r);
	CHECK_STR(hk, want);
	after = slurp(kh);
	CHECK_STR(after, hashed);
	free(after);
	free(hashed);

	/* Only the ECDSA key recorded: that type is negotiated. */
	char line[1024], *ec = slurp(pub);
	snprintf(line, sizeof line, "[127.0.0.1]:%s %s", port, ec ? ec : "");
	free(ec);
	put(kh, line, 0600);
	CHECK(run_once(&o, &r, hk, sizeof hk) == 0 && r.exit_code == 0);
	ssh_result_free(&r);
	snprintf(want, sizeof want, "ecdsa-sha2-nistp256 %s", fp_ec);
	CHECK_STR(hk, want);

	/* An ed25519 key of another server recorded (same type, other key):
	 * refused for good, naming the presented key and the file; TOFU does
	 * not apply to a host that has an entry. */
	o.host_key_tofu = 1;
	snprintf(before, sizeof before, "[127.0.0.1]:%s %s\n", port, FOREIGN_ED25519);
	put(kh, before, 0600);
	CHECK(run_once(&o, &r, hk, sizeof hk) < 0);
	CHECK(!r.transient);
	CHECK(strstr(r.error, "does not match") && strstr(r.error, fp_ed) && strstr(r.error, "ssh-ed25519") &&
	      strstr(r.error, kh));
	ssh_result_free(&r);
	CHECK(hk[0] == '\0');
	after = slurp(kh);
	CHECK_STR(after, before);
	free(after);

	/* Only a type mrprov does not use recorded (DSA): refused, not "new". */
	snprintf(before, sizeof before, "[127.0.0.1]:%s ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2\n", port);
	put(kh, before, 0600);
	CHECK(run_once(&o, &r, hk, sizeof hk) < 0);
	CHECK(!r.transient && strstr(r.error, "no type mrprov can use"));
	ssh_result_free(&r);
	after = slurp(kh);
	CHECK_STR(after, before);
	free(after);

	/* No entry for the host and TOFU off: refused, naming the offered key
	 * and the way out; nothing written. */
	o.host_key_tofu = 0;
	put(kh, other, 0600);
	CHECK(run_once(&o, &r, hk, sizeof hk) < 0);
	CHECK(!r.transient);
	CHECK(strstr(r.error, "no key recorded") && strstr(r.error, "ssh-keyscan") &&
	      strstr(r.error, "DOKKU_HOST_KEY_TOFU=true") && strstr(r.error, fp_ed));
	ssh_result_free(&r);
	after = slurp(kh);
	CHECK_STR(after, other);
	free(after);
	unlink(kh);
	CHECK(run_once(&o, &r, hk, sizeof hk) < 0 && !r.transient);
	ssh_result_free(&r);
	CHECK(access(kh, F_OK) != 0);

	/* No entry and TOFU on: accepted, the ed25519 key appended as OpenSSH
	 * writes it; the lines before (the last without its newline) and the
	 * file's mode stay. */
	o.host_key_tofu = 1;
	snprintf(before, sizeof before, "# kept as it is\nother.example %s", FOREIGN_ED25519);
	put(kh, before, 0644);
	CHECK(run_once(&o, &r, hk, sizeof hk) == 0 && r.exit_code == 0);
	ssh_result_free(&r);
	snprintf(want, sizeof want, "ssh-ed25519 %s", fp_ed);
	CHECK_STR(hk, want);
	char expect[sizeof before + 4096];
	snprintf(expect, sizeof expect, "%s\n%s", before, recorded);
	after = slurp(kh);
	CHECK_STR(after, expect);
	free(after);
	CHECK(mode_of(kh) == 0644);
	/* and from then on it is a known host */
	o.host_key_tofu = 0;
	CHECK(run_once(&o, &r, hk, sizeof hk) == 0 && r.exit_code == 0);
	ssh_result_free(&r);

	/* A server that offers only ECDSA where ed25519 is recorded (a man in
	 * the middle without the ed25519 key): refused for good, TOFU or not,
	 * naming the type and fingerprint it offers and the file. */
	char dir2[] = "/tmp/mrprov-sshd-ecdsa-XXXXXX", out[512] = "";
	CHECK(mkdtemp(dir2) != NULL);
	snprintf(cmd, sizeof cmd, "SSHD_HARNESS_HOST_KEYS=ecdsa '%s' start '%s'", getenv("MRPROV_SSHD_HARNESS"), dir2);
	FILE *f = popen(cmd, "r");
	if (!fgets(out, sizeof out, f))
		out[0] = '\0';
	pclose(f);
	const char *p2 = strstr(out, "port=");
	CHECK(p2 != NULL);
	o.port = p2 ? atoi(p2 + 5) : 1;
	o.host_key_tofu = 1;
	char kh2[600], pub2[600], fp2[128], key2[600];
	/* its client key is authorized, as a man in the middle would accept any */
	snprintf(key2, sizeof key2, "%s/id_ed25519", dir2);
	o.key_path = key2;
	snprintf(kh2, sizeof kh2, "%s/known_hosts", dir2); /* its ed25519 key, which it does not offer */
	snprintf(pub2, sizeof pub2, "%s/ssh_host_ecdsa_key.pub", dir2);
	keygen_fp(pub2, fp2, sizeof fp2);
	o.known_hosts = kh2;
	char *kh2_before = slurp(kh2);
	CHECK(kh2_before && strstr(kh2_before, " ssh-ed25519 "));
	CHECK(run_once(&o, &r, hk, sizeof hk) < 0);
	CHECK(!r.transient);
	CHECK(strstr(r.error, "offers the ecdsa-sha2-nistp256 key") && strstr(r.error, fp2) &&
	      strstr(r.error, "(ssh-ed25519)") && strstr(r.error, kh2));
	fprintf(stderr, "refusal: %s\n", r.error);
	ssh_result_free(&r);
	CHECK(hk[0] == '\0');
	after = slurp(kh2);
	CHECK_STR(after, kh2_before);
	free(after);
	free(kh2_before);
	snprintf(cmd, sizeof cmd, "'%s' stop '%s' >/dev/null; rm -rf '%s'", getenv("MRPROV_SSHD_HARNESS"), dir2, dir2);
	CHECK(system(cmd) == 0);
	unlink(kh);
	free(recorded);
}

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

/* The harness's sshd (in dir) stops and comes back on the same port while
 * the pool is in its reconnect backoff: the first command after it is back
 * connects at once, on an attempt made for it, instead of failing with the
 * outage's error until the backoff has passed (a job's retries would be used
 * up against a server that answers). */
static void server_back(const char *dir)
{
	char cmd[1200], err[256];
	struct ssh_result r;
	struct ssh_pool_opts o = opts;
	o.sessions = 1;
	unlink(o.known_hosts); /* recorded again on first use */
	struct ssh_pool *p = ssh_pool_new(&o, err, sizeof err);
	CHECK(p != NULL);
	if (!p)
		return;
	CHECK(ssh_pool_run(p, "version", 20, -1, &r) == 0 && r.exit_code == 0);
	ssh_result_free(&r);
	snprintf(cmd, sizeof cmd, "'%s' stop '%s' >/dev/null", getenv("MRPROV_SSHD_HARNESS"), dir);
	CHECK(system(cmd) == 0);
	CHECK(ssh_pool_run(p, "version", 20, -1, &r) < 0 && r.transient);
	ssh_result_free(&r);
	/* The session thread retries in the background meanwhile, its backoff
	 * doubling from 0.2 s: attempts at about 0.1, 0.3, 0.7, 1.5 s, the next
	 * one only at 3.1 s. */
	nanosleep(&(struct timespec){ 1, 600000000 }, NULL);
	snprintf(cmd, sizeof cmd, "'%s' start '%s' >/dev/null", getenv("MRPROV_SSHD_HARNESS"), dir);
	CHECK(system(cmd) == 0);
	int rc = ssh_pool_run(p, "version", 20, -1, &r);
	if (rc < 0)
		fprintf(stderr, "server back: %s\n", r.error);
	CHECK(rc == 0 && r.exit_code == 0);
	ssh_result_free(&r);
	ssh_pool_free(p);
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
		.connect_timeout_s = 5, .host_key_tofu = 1,
	};
	char err[256];
	struct ssh_pool *p = ssh_pool_new(&opts, err, sizeof err);
	CHECK(p != NULL);

	/* An unknown host is recorded on first use (host_key_tofu), in a new
	 * file of mode 0600. */
	struct ssh_result r;
	CHECK(ssh_pool_run(p, "version", 20, -1, &r) == 0);
	CHECK(r.exit_code == 0);
	CHECK(r.out.data && strstr(r.out.data, "dokku version"));
	ssh_result_free(&r);
	CHECK(access(kh, R_OK) == 0);
	CHECK(mode_of(kh) == 0600);
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

	/* issue 14: stdin crosses the channel (git:from-archive --). 700 KiB
	 * is more than OpenSSH's and libssh2's initial channel windows, so the
	 * sending waits for window adjustments while the state machine goes
	 * on. The simulator keeps what it read (as Dokku's tee does) and
	 * prints its size (`wc -c`); the bytes are not a tar, so the build
	 * context cannot be made and the command fails after reading them. */
	CHECK(ssh_pool_run(p, "--quiet apps:create mr-stdin-12345678", 20, -1, &r) == 0 && r.exit_code == 0);
	ssh_result_free(&r);
	size_t in_len = 700 * 1024;
	char *in = malloc(in_len);
	for (size_t i = 0; i < in_len; i++)
		in[i] = (char)(i * 13 + (i >> 9));
	CHECK(ssh_pool_run_input(p, "--quiet git:from-archive --archive-type tar mr-stdin-12345678 --", in, in_len, 20,
				 -1, &r) == 0);
	CHECK(r.exit_code != 0);
	CHECK(r.out.data && strstr(r.out.data, "716800\n"));
	ssh_result_free(&r);
	char got_path[600];
	snprintf(got_path, sizeof got_path, "%s/received/mr-stdin-12345678.tar", getenv("MRPROV_SSH_STATE"));
	FILE *g = fopen(got_path, "rb");
	CHECK(g != NULL);
	char *got = malloc(in_len + 1);
	size_t got_len = g ? fread(got, 1, in_len + 1, g) : 0;
	if (g)
		fclose(g);
	CHECK(got_len == in_len && memcmp(got, in, in_len) == 0);
	free(got);
	/* Empty input: the EOF alone arrives. */
	CHECK(ssh_pool_run_input(p, "--quiet git:from-archive --archive-type tar mr-stdin-12345678 --", "", 0, 20, -1,
				 &r) == 0);
	CHECK(r.out.data && strstr(r.out.data, "\n0\n"));
	ssh_result_free(&r);
	/* A command that never reads its input still completes (the rest of
	 * the input is dropped). */
	CHECK(ssh_pool_run_input(p, "version", in, in_len, 20, -1, &r) == 0 && r.exit_code == 0);
	CHECK(r.out.data && strstr(r.out.data, "dokku version"));
	ssh_result_free(&r);
	/* issue 16: stdin read from a file as it is sent (a move's exports):
	 * 2.5 MiB, more than the in-memory bound, arrives whole. */
	{
		size_t big = 5 * 512 * 1024 + 3;
		char *data = malloc(big);
		for (size_t i = 0; i < big; i++)
			data[i] = (char)(i * 29 + (i >> 11));
		char ipath[] = "/tmp/mrprov-pool-in-XXXXXX";
		int ifd = mkstemp(ipath);
		CHECK(ifd >= 0 && write(ifd, data, big) == (ssize_t)big && lseek(ifd, 0, SEEK_SET) == 0);
		CHECK(ssh_pool_run_fd(p, "--quiet git:from-archive --archive-type tar mr-stdin-12345678 --", ifd, 30, -1,
				      &r) == 0);
		char want[32];
		snprintf(want, sizeof want, "%zu\n", big);
		CHECK(r.out.data && strstr(r.out.data, want));
		ssh_result_free(&r);
		g = fopen(got_path, "rb");
		CHECK(g != NULL);
		got = malloc(big + 1);
		got_len = g ? fread(got, 1, big + 1, g) : 0;
		if (g)
			fclose(g);
		CHECK(got_len == big && memcmp(got, data, big) == 0);
		free(got);
		/* a command that never reads it still completes */
		CHECK(lseek(ifd, 0, SEEK_SET) == 0);
		CHECK(ssh_pool_run_fd(p, "version", ifd, 20, -1, &r) == 0 && r.exit_code == 0);
		ssh_result_free(&r);
		close(ifd);
		unlink(ipath);
		free(data);
	}
	free(in);
	ssh_pool_free(p);

	/* A known key that does not match is refused, permanently; /ready
	 * reports the pool's last error. */
	f = fopen(kh, "w");
	fprintf(f, "[127.0.0.1]:%s %s\n", port, FOREIGN_ED25519);
	fclose(f);
	p = ssh_pool_new(&opts, err, sizeof err);
	CHECK(ssh_pool_run(p, "version", 20, -1, &r) < 0);
	CHECK(strstr(r.error, "does not match") != NULL);
	CHECK(!r.transient);
	char last[512];
	ssh_pool_last_error(p, last, sizeof last);
	CHECK(strstr(last, "does not match") != NULL);
	ssh_result_free(&r);
	ssh_pool_free(p);

	char dir[512];
	snprintf(dir, sizeof dir, "%s", getenv("MRPROV_SSH_KNOWN_HOSTS"));
	*strrchr(dir, '/') = '\0';
	host_key_policy(dir, port);
	server_back(dir);

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
