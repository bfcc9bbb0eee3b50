/* bench_ssh_exec: time per Dokku command over the SSH pool against a bare
 * libssh2 exec loop, on the same sshd, in the same run (bench/README.md).
 *
 *   bench_ssh_exec [-n N] [-w WARMUP] [-r ROUNDS] [-c COMMAND]
 *
 * The server comes from the environment tests/fixtures/sshd-harness writes
 * into harness.env: MRPROV_SSH_PORT, MRPROV_SSH_USER, MRPROV_SSH_KEY,
 * MRPROV_SSH_KNOWN_HOSTS (MRPROV_SSH_HOST, default 127.0.0.1).
 *
 * (a) bare: one libssh2 session in blocking mode on a TCP_NODELAY socket;
 *     per command: open a session channel, exec, read stdout and stderr to
 *     EOF, close, wait for the close, read the exit status, free.
 * (b) pool: ssh_pool_new with one session, ssh_pool_run per command.
 *
 * Both run COMMAND (default "version") N times, sequentially, one command in
 * flight at a time. The N runs of each are split into ROUNDS blocks that
 * alternate (bare, pool, pool, bare, ...) so that drift of the machine does
 * not favour either side. WARMUP commands of each are run first, untimed
 * (the pool connects on its first command). Prints the figures for people
 * and one "RESULT key=value ..." line for bench/bench.lua. Exit 0 when every
 * command succeeded, 1 otherwise. */
#include "ssh/pool.h"

#include <libssh2.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_ssh_exec: %s\n", what);
	exit(1);
}

static const char *need_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v) {
		fprintf(stderr, "bench_ssh_exec: %s is not set (source the sshd-harness harness.env)\n", name);
		exit(2);
	}
	return v;
}

/* ---------------------------------------------------------------- bare */

struct bare {
	int sock;
	LIBSSH2_SESSION *s;
};

static const char *sess_err(LIBSSH2_SESSION *s)
{
	char *msg = NULL;
	libssh2_session_last_error(s, &msg, NULL, 0);
	return msg ? msg : "unknown libssh2 error";
}

static void bare_open(struct bare *b, const char *host, int port, const char *user, const char *key,
		      const char *known_hosts)
{
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		die("MRPROV_SSH_HOST must be an IPv4 address");
	b->sock = socket(AF_INET, SOCK_STREAM, 0);
	if (b->sock < 0)
		die("socket failed");
	int one = 1;
	if (setsockopt(b->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
		die("TCP_NODELAY failed");
	if (connect(b->sock, (struct sockaddr *)&sa, sizeof sa) != 0) {
		fprintf(stderr, "bench_ssh_exec: connect %s:%d: %s\n", host, port, strerror(errno));
		exit(1);
	}
	b->s = libssh2_session_init();
	if (!b->s)
		die("libssh2_session_init failed");
	libssh2_session_set_blocking(b->s, 1);
	/* The harness's sshd also offers ECDSA; known_hosts records ed25519. */
	if (libssh2_session_method_pref(b->s, LIBSSH2_METHOD_HOSTKEY, "ssh-ed25519") != 0)
		die("cannot restrict the host-key methods");
	if (libssh2_session_handshake(b->s, b->sock) != 0) {
		fprintf(stderr, "bench_ssh_exec: handshake: %s\n", sess_err(b->s));
		exit(1);
	}

	/* The host key must be the one in known_hosts, as for the pool. */
	LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(b->s);
	if (!kh || libssh2_knownhost_readfile(kh, known_hosts, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0)
		die("cannot read MRPROV_SSH_KNOWN_HOSTS");
	size_t klen = 0;
	int ktype = 0;
	const char *hk = libssh2_session_hostkey(b->s, &klen, &ktype);
	if (!hk)
		die("no host key");
	struct libssh2_knownhost *found = NULL;
	int rc = libssh2_knownhost_checkp(kh, host, port, hk, klen,
					  LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW, &found);
	libssh2_knownhost_free(kh);
	if (rc != LIBSSH2_KNOWNHOST_CHECK_MATCH)
		die("the host key does not match MRPROV_SSH_KNOWN_HOSTS");

	if (libssh2_userauth_publickey_fromfile(b->s, user, NULL, key, NULL) != 0) {
		fprintf(stderr, "bench_ssh_exec: authentication: %s\n", sess_err(b->s));
		exit(1);
	}
}

/* One command on a fresh exec channel; returns its exit status, -1 on a
 * transport error. out gets the first bytes of stdout. */
static int bare_exec(struct bare *b, const char *cmd, char *out, size_t outlen)
{
	LIBSSH2_CHANNEL *ch = libssh2_channel_open_session(b->s);
	if (!ch)
		return -1;
	if (libssh2_channel_exec(ch, cmd) != 0) {
		libssh2_channel_free(ch);
		return -1;
	}
	size_t used = 0;
	char buf[4096];
	ssize_t n;
	while ((n = libssh2_channel_read(ch, buf, sizeof buf)) > 0) {
		size_t take = (size_t)n;
		if (used + take >= outlen)
			take = outlen - 1 - used;
		memcpy(out + used, buf, take);
		used += take;
	}
	out[used] = '\0';
	if (n < 0) {
		libssh2_channel_free(ch);
		return -1;
	}
	while ((n = libssh2_channel_read_stderr(ch, buf, sizeof buf)) > 0)
		;
	int code = -1;
	if (libssh2_channel_close(ch) == 0 && libssh2_channel_wait_closed(ch) == 0)
		code = libssh2_channel_get_exit_status(ch);
	libssh2_channel_free(ch);
	return code;
}

static void bare_close(struct bare *b)
{
	libssh2_session_disconnect(b->s, "bench done");
	libssh2_session_free(b->s);
	close(b->sock);
}

/* ---------------------------------------------------------------- stats */

struct stats {
	double mean, median, p90, min, max, sd;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static struct stats stats_of(double *v, int n)
{
	struct stats s = { 0, 0, 0, 0, 0, 0 };
	if (n <= 0)
		return s;
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += v[i];
	s.mean = sum / n;
	s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	s.p90 = v[(int)((n - 1) * 0.9)];
	s.min = v[0];
	s.max = v[n - 1];
	double ss = 0;
	for (int i = 0; i < n; i++)
		ss += (v[i] - s.mean) * (v[i] - s.mean);
	s.sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
	return s;
}

static void print_stats(const char *name, const struct stats *s)
{
	printf("  %-5s mean %7.2f ms  median %7.2f ms  p90 %7.2f ms  min %7.2f ms  max %7.2f ms  sd %6.2f ms\n", name,
	       s->mean, s->median, s->p90, s->min, s->max, s->sd);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
	int n = 200, warmup = 5, rounds = 4;
	const char *cmd = "version";
	int opt;
	while ((opt = getopt(argc, argv, "n:w:r:c:")) != -1) {
		switch (opt) {
		case 'n': n = atoi(optarg); break;
		case 'w': warmup = atoi(optarg); break;
		case 'r': rounds = atoi(optarg); break;
		case 'c': cmd = optarg; break;
		default:
			fprintf(stderr, "usage: %s [-n N] [-w WARMUP] [-r ROUNDS] [-c COMMAND]\n", argv[0]);
			return 2;
		}
	}
	if (n < 1 || n > 100000 || warmup < 0 || warmup > 1000 || rounds < 1 || rounds > n) {
		fprintf(stderr, "bench_ssh_exec: need 1 <= N <= 100000, 0 <= WARMUP <= 1000, 1 <= ROUNDS <= N\n");
		return 2;
	}
	const char *host = getenv("MRPROV_SSH_HOST") ? getenv("MRPROV_SSH_HOST") : "127.0.0.1";
	int port = atoi(need_env("MRPROV_SSH_PORT"));
	const char *user = need_env("MRPROV_SSH_USER");
	const char *key = need_env("MRPROV_SSH_KEY");
	const char *kh = need_env("MRPROV_SSH_KNOWN_HOSTS");

	if (libssh2_init(0) != 0)
		die("libssh2_init failed");

	struct bare b;
	double t0 = now_s();
	bare_open(&b, host, port, user, key, kh);
	double bare_connect_ms = (now_s() - t0) * 1000;

	char err[256];
	struct ssh_pool_opts po = {
		.host = host, .port = port, .user = user, .key_path = key, .known_hosts = kh,
		.sessions = 1, .channels = 1, .connect_timeout_s = 10,
	};
	struct ssh_pool *p = ssh_pool_new(&po, err, sizeof err);
	if (!p) {
		fprintf(stderr, "bench_ssh_exec: ssh_pool_new: %s\n", err);
		return 1;
	}

	double *tb = calloc((size_t)n, sizeof *tb), *tp = calloc((size_t)n, sizeof *tp);
	if (!tb || !tp)
		die("out of memory");
	int failures = 0, nb = 0, np = 0;
	char out[256];

	/* warm-up (the pool connects here) */
	double pool_first_ms = 0;
	for (int i = 0; i < warmup || i < 1; i++) {
		if (bare_exec(&b, cmd, out, sizeof out) != 0)
			failures++;
		struct ssh_result r;
		double ts = now_s();
		if (ssh_pool_run(p, cmd, 30, -1, &r) != 0 || r.exit_code != 0)
			failures++;
		if (i == 0)
			pool_first_ms = (now_s() - ts) * 1000;
		ssh_result_free(&r);
	}
	if (failures) {
		fprintf(stderr, "bench_ssh_exec: `%s` failed during the warm-up (%d failures)\n", cmd, failures);
		return 1;
	}

	double wall0 = now_s();
	for (int round = 0; round < rounds; round++) {
		int lo = (int)((long)n * round / rounds), hi = (int)((long)n * (round + 1) / rounds);
		for (int side = 0; side < 2; side++) {
			int pool_side = (round % 2 == 0) ? side : 1 - side;
			for (int i = lo; i < hi; i++) {
				if (!pool_side) {
					double ts = now_s();
					int code = bare_exec(&b, cmd, out, sizeof out);
					tb[nb++] = (now_s() - ts) * 1000;
					if (code != 0 || (strcmp(cmd, "version") == 0 && !strstr(out, "dokku version")))
						failures++;
				} else {
					struct ssh_result r;
					double ts = now_s();
					int rc = ssh_pool_run(p, cmd, 30, -1, &r);
					tp[np++] = (now_s() - ts) * 1000;
					if (rc != 0 || r.exit_code != 0 ||
					    (strcmp(cmd, "version") == 0 &&
					     !(r.out.data && strstr(r.out.data, "dokku version"))))
						failures++;
					ssh_result_free(&r);
				}
			}
		}
	}
	double wall_s = now_s() - wall0;

	ssh_pool_free(p);
	bare_close(&b);
	libssh2_exit();

	struct stats sb = stats_of(tb, nb), sp = stats_of(tp, np);
	printf("per-command time: `%s` x %d each, sequential, %d alternating blocks, %d warm-up (%.1f s)\n", cmd, n,
	       rounds, warmup, wall_s);
	printf("  bare libssh2 connect+auth %.1f ms; pool's first command (connect+auth+exec) %.1f ms\n",
	       bare_connect_ms, pool_first_ms);
	print_stats("bare", &sb);
	print_stats("pool", &sp);
	double rmean = sb.mean > 0 ? sp.mean / sb.mean : 0, rmed = sb.median > 0 ? sp.median / sb.median : 0;
	printf("  pool/bare: mean %.3f, median %.3f (pool overhead %+.2f ms per command)\n", rmean, rmed,
	       sp.mean - sb.mean);
	if (failures)
		printf("  %d command(s) FAILED\n", failures);
	printf("RESULT n=%d bare_mean_ms=%.3f bare_median_ms=%.3f bare_p90_ms=%.3f pool_mean_ms=%.3f "
	       "pool_median_ms=%.3f pool_p90_ms=%.3f ratio_mean=%.4f ratio_median=%.4f failures=%d\n",
	       n, sb.mean, sb.median, sb.p90, sp.mean, sp.median, sp.p90, rmean, rmed, failures);
	free(tb);
	free(tp);
	return failures ? 1 : 0;
}
