/* transport: dry-run and local execution of Dokku commands, and the named
 * Dokku hosts of SSH mode (one lazily opened ssh_pool each). */
#define _GNU_SOURCE
#include "transport.h"
#include "util/clock.h"
#include "metrics.h"
#include "util/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TOKEN (256 * 1024)

static enum transport_mode mode = TRANSPORT_DRY_RUN;
static char program[256] = "dokku";
static pthread_mutex_t ok_lock = PTHREAD_MUTEX_INITIALIZER;
static double last_ok; /* monotonic time of the last completed command (dry-run, local) */

/* The named Dokku hosts (SSH mode). An entry is never removed (a job of an
 * older configuration may still name it), only marked not configured; its
 * pool is opened on first use and freed at transport_shutdown only, so a
 * pool pointer read under hosts_lock stays valid without it. A pool whose
 * host's address changed on a reload is retired (kept until shutdown:
 * commands may still run on it) and a new one opened on next use. */
struct host {
	char name[TRANSPORT_HOST_NAME_MAX + 1];
	char *host, *user, *key_path, *known_hosts; /* owned */
	int port;
	struct ssh_pool *pool; /* NULL until first use */
	int configured;
	double last_ok; /* monotonic time of the last completed command on it */
};
static struct host hosts[TRANSPORT_MAX_HOSTS];
static int nhosts;
static struct ssh_pool **retired;
static int nretired;
static pthread_mutex_t hosts_lock = PTHREAD_MUTEX_INITIALIZER;
/* DOKKU_HOST's connection (the implicit host "default"), restored when the
 * host files are removed; pool-wide options every host shares. */
static struct transport_host implicit;
static int have_implicit;
static struct ssh_pool_opts shared;
static atomic_int cancelled; /* transport_cancel: shutdown gives up running commands */
static mode_t child_umask = 022;

void transport_child_umask(mode_t mask)
{
	child_umask = mask;
}

/* What a local `dokku` sees of mrprov's environment: enough to find its
 * programs and run as its user, none of mrprov's own settings (API keys,
 * webhook and Supabase secrets, PROVISIONER_SECRET). */
static const char *const child_env_names[] = { "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", NULL };
#define CHILD_ENV_MAX 16
#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

extern char **environ;

/* Fills envp (CHILD_ENV_MAX slots) with pointers into environ: nothing is
 * allocated, so the child can use it between fork and exec. */
static void child_env(char **envp)
{
	int n = 0, have_path = 0;
	for (char **e = environ; e && *e && n < CHILD_ENV_MAX - 2; e++) {
		for (int i = 0; child_env_names[i]; i++) {
			size_t len = strlen(child_env_names[i]);
			if (strncmp(*e, child_env_names[i], len) == 0 && (*e)[len] == '=') {
				envp[n++] = *e;
				have_path |= i == 0;
				break;
			}
		}
	}
	if (!have_path)
		envp[n++] = (char *)DEFAULT_PATH;
	envp[n] = NULL;
}

/* ---- the named hosts ---- */

/* The connection fields (owned); name, pool and state are kept. */
static void host_free_fields(struct host *h)
{
	free(h->host);
	free(h->user);
	free(h->key_path);
	free(h->known_hosts);
}

static void host_clear(struct host *h)
{
	host_free_fields(h);
	memset(h, 0, sizeof *h);
}

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The entry named name, or NULL; caller holds hosts_lock (or is init). */
static struct host *host_find(const char *name)
{
	for (int i = 0; i < nhosts; i++)
		if (strcmp(hosts[i].name, name) == 0)
			return &hosts[i];
	return NULL;
}

/* Adds or updates the entry of t (NULL when the table is full). A changed
 * address retires the entry's pool. Caller holds hosts_lock. */
static struct host *host_put(const struct transport_host *t)
{
	struct host *h = host_find(t->name);
	if (!h) {
		if (nhosts == TRANSPORT_MAX_HOSTS)
			return NULL;
		h = &hosts[nhosts++];
		snprintf(h->name, sizeof h->name, "%s", t->name);
	} else if (same(h->host, t->host) && h->port == t->port && same(h->user, t->user) &&
		   same(h->key_path, t->key_path) && same(h->known_hosts, t->known_hosts)) {
		return h;
	} else if (h->pool) {
		retired = xrealloc(retired, (size_t)(nretired + 1) * sizeof *retired);
		retired[nretired++] = h->pool;
		h->pool = NULL;
	}
	host_free_fields(h);
	h->host = xstrdup(t->host);
	h->port = t->port;
	h->user = xstrdup(t->user);
	h->key_path = xstrdup(t->key_path);
	h->known_hosts = xstrdup(t->known_hosts);
	return h;
}

static struct ssh_pool_opts pool_opts(const struct host *h)
{
	struct ssh_pool_opts o = shared;
	o.name = h->name;
	o.host = h->host;
	o.port = h->port;
	o.user = h->user;
	o.key_path = h->key_path;
	o.known_hosts = h->known_hosts;
	return o;
}

int transport_host_name_ok(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > TRANSPORT_HOST_NAME_MAX || !(name[0] >= 'a' && name[0] <= 'z'))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '-' ||
		      name[i] == '_'))
			return 0;
	return 1;
}

/* The private key must be readable by mrprov only, as DOKKU_SSH_KEY_PATH's
 * (src/config.c). */
static int key_ok(const struct transport_host *t, char *err, size_t errlen)
{
	struct stat st;
	if (stat(t->key_path, &st) < 0) {
		snprintf(err, errlen, "host %s: key_path: cannot read %s: %s", t->name, t->key_path, strerror(errno));
		return 0;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen, "host %s: key_path: %s has mode %04o; it must be 0600 or narrower", t->name,
			 t->key_path, (unsigned)(st.st_mode & 07777));
		return 0;
	}
	return 1;
}

int transport_hosts_set(const struct transport_host *list, int n, char *err, size_t errlen)
{
	if (n > TRANSPORT_MAX_HOSTS) {
		snprintf(err, errlen, "at most %d hosts", TRANSPORT_MAX_HOSTS);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		if (!transport_host_name_ok(list[i].name) || !list[i].host || !list[i].user || !list[i].key_path ||
		    !list[i].known_hosts || list[i].port < 1 || list[i].port > 65535) {
			snprintf(err, errlen, "host %d: incomplete or invalid", i + 1);
			return -1;
		}
		if (mode == TRANSPORT_SSH && !key_ok(&list[i], err, errlen))
			return -1;
	}
	pthread_mutex_lock(&hosts_lock);
	int rc = 0;
	/* Checked whole above; a full table is the one failure left, and the
	 * names it would refuse are new ones: count them before changing anything. */
	int fresh = 0;
	for (int i = 0; i < n; i++)
		fresh += host_find(list[i].name) == NULL;
	if (nhosts + fresh > TRANSPORT_MAX_HOSTS) {
		snprintf(err, errlen, "at most %d host names in one process's life; restart mrprov", TRANSPORT_MAX_HOSTS);
		rc = -1;
		goto out;
	}
	for (int i = 0; i < nhosts; i++)
		hosts[i].configured = 0;
	if (n == 0 && have_implicit) {
		host_put(&implicit)->configured = 1;
	}
	for (int i = 0; i < n; i++)
		host_put(&list[i])->configured = 1;
out:
	pthread_mutex_unlock(&hosts_lock);
	return rc;
}

/* The pool of the configured host named name (NULL: the implicit host),
 * opened on first use; NULL with err when there is no such host. */
static struct ssh_pool *host_pool(const char *name, char *err, size_t errlen)
{
	if (!name)
		name = TRANSPORT_DEFAULT_HOST;
	pthread_mutex_lock(&hosts_lock);
	struct ssh_pool *p = NULL;
	struct host *h = host_find(name);
	if (!h || !h->host) {
		snprintf(err, errlen, "no Dokku host named '%.64s'", name);
		goto out;
	}
	if (!h->pool) {
		struct ssh_pool_opts o = pool_opts(h);
		h->pool = ssh_pool_new(&o, err, errlen);
	}
	p = h->pool;
out:
	pthread_mutex_unlock(&hosts_lock);
	return p;
}

static void note_ok(const char *name)
{
	double now = clock_mono();
	pthread_mutex_lock(&ok_lock);
	last_ok = now;
	pthread_mutex_unlock(&ok_lock);
	pthread_mutex_lock(&hosts_lock);
	struct host *h = host_find(name ? name : TRANSPORT_DEFAULT_HOST);
	if (h)
		h->last_ok = now;
	pthread_mutex_unlock(&hosts_lock);
}

int transport_init(enum transport_mode m, const struct ssh_pool_opts *ssh, const char *prog, char *err,
		   size_t errlen)
{
	transport_shutdown();
	if (m == TRANSPORT_SSH) {
		if (!ssh) {
			snprintf(err, errlen, "DOKKU_HOST: SSH options missing");
			return -1;
		}
		shared = *ssh;
		if (ssh->host) {
			/* The implicit host opens at once, as before there were host
			 * files: its connection errors show at start-up. */
			implicit = (struct transport_host){ TRANSPORT_DEFAULT_HOST, xstrdup(ssh->host), ssh->port,
							    xstrdup(ssh->user), xstrdup(ssh->key_path),
							    xstrdup(ssh->known_hosts) };
			have_implicit = 1;
			struct host *h = host_put(&implicit);
			h->configured = 1;
			struct ssh_pool_opts o = pool_opts(h);
			h->pool = ssh_pool_new(&o, err, errlen);
			if (!h->pool)
				return -1;
		}
	}
	mode = m;
	snprintf(program, sizeof program, "%s", prog ? prog : "dokku");
	return 0;
}

void transport_cancel(void)
{
	atomic_store(&cancelled, 1);
	pthread_mutex_lock(&hosts_lock);
	for (int i = 0; i < nhosts; i++)
		ssh_pool_cancel(hosts[i].pool);
	for (int i = 0; i < nretired; i++)
		ssh_pool_cancel(retired[i]);
	pthread_mutex_unlock(&hosts_lock);
}

void transport_shutdown(void)
{
	pthread_mutex_lock(&hosts_lock);
	for (int i = 0; i < nhosts; i++) {
		ssh_pool_free(hosts[i].pool);
		host_clear(&hosts[i]);
	}
	nhosts = 0;
	for (int i = 0; i < nretired; i++)
		ssh_pool_free(retired[i]);
	free(retired);
	retired = NULL;
	nretired = 0;
	if (have_implicit) {
		free((char *)implicit.host);
		free((char *)implicit.user);
		free((char *)implicit.key_path);
		free((char *)implicit.known_hosts);
	}
	have_implicit = 0;
	pthread_mutex_unlock(&hosts_lock);
}

enum transport_mode transport_mode(void)
{
	return mode;
}

const char *transport_mode_name(void)
{
	return mode == TRANSPORT_DRY_RUN ? "dry-run" : mode == TRANSPORT_LOCAL ? "local" : "ssh";
}

int transport_token_ok(const char *tok, size_t len, const char **reason)
{
	if (len == 0) {
		*reason = "empty argument";
		return 0;
	}
	if (len > MAX_TOKEN) {
		*reason = "argument too long";
		return 0;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)tok[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			 strchr("._:/=+@,-", c) != NULL;
		if (!ok || c == '\0') {
			*reason = "argument contains a character that is not a safe token character";
			return 0;
		}
	}
	/* Dokku's SSH entry echoes each argument (`xargs -n 1` runs coreutils
	 * echo once per word): echo takes any word made only of its option
	 * letters n, e and E (-n, -e, -E, -ne, -eE, -nn, ...) as options and
	 * prints an empty line or nothing instead, so the word never arrives. */
	if (len >= 2 && tok[0] == '-') {
		size_t i = 1;
		while (i < len && (tok[i] == 'n' || tok[i] == 'e' || tok[i] == 'E'))
			i++; /* tok is not NUL-terminated at len (the fuzzer passes raw bytes) */
		if (i == len) {
			*reason = "argument cannot cross Dokku's SSH entry (echo takes it as an option)";
			return 0;
		}
	}
	/* ... and prints its help or version text for these two. */
	static const char *const lost[] = { "--help", "--version", NULL };
	for (int i = 0; lost[i]; i++) {
		if (strlen(lost[i]) == len && memcmp(tok, lost[i], len) == 0) {
			*reason = "argument cannot cross Dokku's SSH entry";
			return 0;
		}
	}
	return 1;
}

static void result_init(struct transport_result *res)
{
	memset(res, 0, sizeof *res);
	res->exit_code = -1;
	sbuf_init(&res->out);
	sbuf_init(&res->err);
}

void transport_result_free(struct transport_result *res)
{
	sbuf_free(&res->out);
	sbuf_free(&res->err);
}

/* Starts `program argv...` with stdout and stderr on pipes (*out_fd and
 * *err_fd, the parent's ends) and stdin on /dev/null, or with in_fd on a
 * pipe whose writing end (non-blocking) *in_fd gets; its pid, or -1. */
static pid_t spawn_local(const char *const *argv, int argc, int *out_fd, int *err_fd, int *in_fd)
{
	int outp[2], errp[2], inp[2] = { -1, -1 };
	if (pipe2(outp, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(errp, O_CLOEXEC) < 0) {
		close(outp[0]);
		close(outp[1]);
		return -1;
	}
	if (in_fd && pipe2(inp, O_CLOEXEC) < 0) {
		close(outp[0]);
		close(outp[1]);
		close(errp[0]);
		close(errp[1]);
		return -1;
	}
	char **args = xcalloc((size_t)argc + 2, sizeof *args);
	args[0] = program;
	for (int i = 0; i < argc; i++)
		args[i + 1] = (char *)argv[i];
	char *envp[CHILD_ENV_MAX];
	child_env(envp);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(outp[1], 1);
		dup2(errp[1], 2);
		int devnull = inp[0] >= 0 ? inp[0] : open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		/* mrprov's own files are private (umask 077); Dokku's are not. */
		umask(child_umask);
		execvpe(program, args, envp);
		dprintf(2, "cannot run %s: %s\n", program, strerror(errno));
		_exit(127);
	}
	free(args);
	close(outp[1]);
	close(errp[1]);
	if (inp[0] >= 0)
		close(inp[0]);
	if (pid < 0) {
		close(outp[0]);
		close(errp[0]);
		if (inp[1] >= 0)
			close(inp[1]);
		return -1;
	}
	*out_fd = outp[0];
	*err_fd = errp[0];
	if (in_fd) {
		fcntl(inp[1], F_SETFL, O_NONBLOCK);
		*in_fd = inp[1];
	}
	return pid;
}

/* One read from pipe i (0 stdout, 1 stderr) into res or out_fd; closes it
 * at its end. */
static void read_pipe(struct pollfd *fd, int i, int out_fd, struct transport_result *res, int *open_fds)
{
	char chunk[8192];
	ssize_t r = read(fd->fd, chunk, sizeof chunk);
	if (r > 0 && i == 0 && out_fd >= 0) {
		res->out_bytes += (size_t)r;
		if (write(out_fd, chunk, (size_t)r) != r && !res->error[0])
			snprintf(res->error, sizeof res->error, "cannot write the output: %s", strerror(errno));
	} else if (r > 0) {
		if (i == 0)
			res->out_bytes += (size_t)r;
		sbuf_add(i == 0 ? &res->out : &res->err, chunk, (size_t)r);
	} else if (r == 0 || errno != EINTR) {
		close(fd->fd);
		fd->fd = -1;
		(*open_fds)--;
	}
}

enum pump_end { PUMP_DONE, PUMP_TIMED_OUT, PUMP_CANCELLED };

/* The stdin being fed to a local command: data, or (src >= 0) a file
 * read into buf as it goes. */
struct feed {
	int fd; /* -1: none, or all sent and closed */
	const char *data;
	size_t len, off;
	int src;       /* -1, or the file stdin is read from */
	int src_errno; /* why src could not be read (0: it could) */
	char buf[8192];
};

/* The next chunk of a file-fed stdin: 1, or 0 at its end or on an error. */
static int feed_refill(struct feed *f)
{
	if (f->src < 0)
		return 0;
	ssize_t n;
	do
		n = read(f->src, f->buf, sizeof f->buf);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		f->src_errno = n < 0 ? errno : 0;
		f->src = -1; /* the caller's */
		return 0;
	}
	f->data = f->buf;
	f->len = (size_t)n;
	f->off = 0;
	return 1;
}

/* One write of what is left into the child's stdin; closes it at the end
 * or when the child stopped reading (EPIPE: mrprov ignores SIGPIPE; its
 * exit code tells). */
static void feed_pipe(struct feed *f)
{
	while (f->off < f->len || feed_refill(f)) {
		ssize_t w = write(f->fd, f->data + f->off, f->len - f->off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return;
		if (w < 0)
			break;
		f->off += (size_t)w;
	}
	close(f->fd);
	f->fd = -1;
}

/* Reads both pipes (feeding stdin, if any) until they close, the deadline
 * passes (timeout_s > 0) or transport_cancel; closes them. */
static enum pump_end pump_output(int out_pipe, int err_pipe, struct feed *feed, double timeout_s, int out_fd,
				 struct transport_result *res)
{
	struct pollfd fds[3] = { { out_pipe, POLLIN, 0 }, { err_pipe, POLLIN, 0 }, { -1, POLLOUT, 0 } };
	int open_fds = 2;
	double deadline = timeout_s > 0 ? clock_mono() + timeout_s : 0;
	enum pump_end end = PUMP_DONE;
	while (open_fds > 0) {
		int wait_ms = 200; /* notice transport_cancel */
		if (atomic_load(&cancelled)) {
			end = PUMP_CANCELLED;
			break;
		}
		if (deadline) {
			double left = deadline - clock_mono();
			if (left <= 0) {
				end = PUMP_TIMED_OUT;
				break;
			}
			wait_ms = (int)(left * 1000) + 1;
			if (wait_ms > 200)
				wait_ms = 200;
		}
		fds[2].fd = feed ? feed->fd : -1;
		int n = poll(fds, 3, wait_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < 2; i++)
			if (fds[i].fd >= 0 && fds[i].revents)
				read_pipe(&fds[i], i, out_fd, res, &open_fds);
		if (fds[2].fd >= 0 && fds[2].revents)
			feed_pipe(feed);
	}
	for (int i = 0; i < 2; i++)
		if (fds[i].fd >= 0)
			close(fds[i].fd);
	if (feed && feed->fd >= 0) {
		close(feed->fd);
		feed->fd = -1;
	}
	return end;
}

static int run_local(const char *const *argv, int argc, const char *in, size_t in_len, int in_fd, double timeout_s,
		     int out_fd, struct transport_result *res)
{
	int out_pipe, err_pipe;
	struct feed feed = { .fd = -1, .data = in, .len = in_len, .src = in_fd };
	if (in_fd >= 0)
		in = ""; /* fed from the file */
	pid_t pid = spawn_local(argv, argc, &out_pipe, &err_pipe, in ? &feed.fd : NULL);
	if (pid < 0) {
		snprintf(res->error, sizeof res->error, "cannot start %.100s: %.100s", program, strerror(errno));
		return -1;
	}
	enum pump_end end = pump_output(out_pipe, err_pipe, in ? &feed : NULL, timeout_s, out_fd, res);
	if (end != PUMP_DONE)
		kill(pid, SIGKILL);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (end == PUMP_CANCELLED) {
		snprintf(res->error, sizeof res->error, "cancelled: shutting down");
		res->transient = 1;
		return -1;
	}
	if (end == PUMP_TIMED_OUT) {
		snprintf(res->error, sizeof res->error, "timed out after %.0f s", timeout_s);
		res->transient = 1;
		return -1;
	}
	res->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (feed.src_errno && !res->error[0])
		snprintf(res->error, sizeof res->error, "cannot read the command's input: %s", strerror(feed.src_errno));
	return res->error[0] ? -1 : 0;
}

static int run_ssh(const char *host, const char *const *argv, int argc, const char *in, size_t in_len, int in_fd,
		   double timeout_s, int out_fd, struct transport_result *res)
{
	struct ssh_pool *pool = host_pool(host, res->error, sizeof res->error);
	if (!pool)
		return -1;
	/* Tokens are validated (no spaces, no quotes), so joining them with
	 * single spaces is exactly what Dokku's entry will split again. */
	struct sbuf cmd;
	sbuf_init(&cmd);
	for (int i = 0; i < argc; i++) {
		if (i)
			sbuf_addc(&cmd, ' ');
		sbuf_adds(&cmd, argv[i]);
	}
	struct ssh_result sr;
	int rc = in_fd >= 0 ? ssh_pool_run_fd(pool, cmd.data, in_fd, timeout_s, out_fd, &sr)
			    : ssh_pool_run_input(pool, cmd.data, in, in_len, timeout_s, out_fd, &sr);
	sbuf_free(&cmd);
	res->exit_code = sr.exit_code;
	res->out = sr.out;
	res->err = sr.err;
	res->out_bytes = sr.out_bytes;
	res->transient = sr.transient;
	snprintf(res->error, sizeof res->error, "%s", sr.error);
	return rc;
}

int transport_run(const char *const *argv, int argc, double timeout_s, int out_fd, struct transport_result *res)
{
	return transport_run_input(argv, argc, NULL, 0, timeout_s, out_fd, res);
}

int transport_run_input(const char *const *argv, int argc, const char *in, size_t in_len, double timeout_s,
			int out_fd, struct transport_result *res)
{
	return transport_run_on(NULL, argv, argc, in, in_len, timeout_s, out_fd, res);
}

static int run_on(const char *host, const char *const *argv, int argc, const char *in, size_t in_len, int in_fd,
		  double timeout_s, int out_fd, struct transport_result *res);

int transport_run_on(const char *host, const char *const *argv, int argc, const char *in, size_t in_len,
		     double timeout_s, int out_fd, struct transport_result *res)
{
	return run_on(host, argv, argc, in, in_len, -1, timeout_s, out_fd, res);
}

int transport_run_fd_on(const char *host, const char *const *argv, int argc, int in_fd, double timeout_s,
			int out_fd, struct transport_result *res)
{
	return run_on(host, argv, argc, NULL, 0, in_fd, timeout_s, out_fd, res);
}

static int run_on(const char *host, const char *const *argv, int argc, const char *in, size_t in_len, int in_fd,
		  double timeout_s, int out_fd, struct transport_result *res)
{
	result_init(res);
	if (in && in_len > TRANSPORT_MAX_INPUT) {
		snprintf(res->error, sizeof res->error,
			 "the command's input is %zu bytes; at most %d bytes cross to Dokku on stdin", in_len,
			 TRANSPORT_MAX_INPUT);
		return -1;
	}
	size_t line = 0;
	for (int i = 0; i < argc; i++) {
		const char *reason;
		size_t len = strlen(argv[i]);
		if (!transport_token_ok(argv[i], len, &reason)) {
			snprintf(res->error, sizeof res->error, "argument %d refused: %s", i + 1, reason);
			return -1;
		}
		line += len + (i ? 1 : 0);
	}
	if (line > TRANSPORT_MAX_COMMAND) {
		snprintf(res->error, sizeof res->error,
			 "the command is %zu bytes long; at most %d cross to Dokku in one command", line,
			 TRANSPORT_MAX_COMMAND);
		return -1;
	}
	if (mode != TRANSPORT_DRY_RUN && atomic_load(&cancelled)) {
		snprintf(res->error, sizeof res->error, "cancelled: shutting down");
		res->transient = 1;
		return -1;
	}
	double t0 = clock_mono();
	int rc = 0;
	if (mode == TRANSPORT_DRY_RUN)
		res->exit_code = 0;
	else if (mode == TRANSPORT_LOCAL)
		rc = run_local(argv, argc, in, in_len, in_fd, timeout_s, out_fd, res);
	else
		rc = run_ssh(host, argv, argc, in, in_len, in_fd, timeout_s, out_fd, res);
	res->duration_s = clock_mono() - t0;
	if (rc == 0 && mode != TRANSPORT_DRY_RUN)
		note_ok(host);
	const char *outcome = rc < 0 ? "error" : res->exit_code == 0 ? "ok" : "nonzero";
	struct sbuf labels;
	sbuf_init(&labels);
	const char *kv[] = { "outcome", outcome, "host", host ? host : TRANSPORT_DEFAULT_HOST };
	metrics_labels(&labels, kv, 2);
	metrics_add("mrprov_dokku_commands_total", labels.data, 1);
	metrics_observe("mrprov_dokku_command_duration_seconds", labels.data, res->duration_s);
	sbuf_free(&labels);
	return rc;
}

int transport_host_check(const char *name, double max_age_s, char *reason, size_t reasonlen)
{
	if (mode == TRANSPORT_DRY_RUN)
		return 0;
	if (!name)
		name = TRANSPORT_DEFAULT_HOST;
	double seen = 0;
	struct ssh_pool *pool = NULL;
	if (mode == TRANSPORT_SSH) {
		pthread_mutex_lock(&hosts_lock);
		struct host *h = host_find(name);
		seen = h ? h->last_ok : 0;
		pool = h ? h->pool : NULL;
		pthread_mutex_unlock(&hosts_lock);
	} else {
		pthread_mutex_lock(&ok_lock);
		seen = last_ok;
		pthread_mutex_unlock(&ok_lock);
	}
	/* A recent answer counts while a connection is still up: a host whose
	 * sessions all dropped is asked again at once (a stopped server fails
	 * that fast), so placement does not pick it for the next 30 s. */
	double age = clock_mono() - seen;
	if (seen > 0 && age <= max_age_s && (mode != TRANSPORT_SSH || (pool && ssh_pool_connected(pool) > 0)))
		return 0;
	static const char *const argv[] = { "version" };
	struct transport_result res;
	int rc = transport_run_on(name, argv, 1, NULL, 0, 5, -1, &res);
	if (rc == 0 && res.exit_code == 0) {
		transport_result_free(&res);
		return 0;
	}
	snprintf(reason, reasonlen, "Dokku did not answer: %s",
		 res.error[0] ? res.error : res.err.data ? res.err.data : "version failed");
	transport_result_free(&res);
	return -1;
}

int transport_hosts(char (*names)[TRANSPORT_HOST_NAME_MAX + 1], int max)
{
	int n = 0;
	if (mode != TRANSPORT_SSH) {
		if (max > 0)
			snprintf(names[n++], TRANSPORT_HOST_NAME_MAX + 1, "%s", TRANSPORT_DEFAULT_HOST);
		return n;
	}
	pthread_mutex_lock(&hosts_lock);
	for (int i = 0; i < nhosts && n < max; i++)
		if (hosts[i].configured)
			memcpy(names[n++], hosts[i].name, sizeof hosts[i].name);
	pthread_mutex_unlock(&hosts_lock);
	return n;
}

int transport_check(double max_age_s, char *reason, size_t reasonlen)
{
	char names[TRANSPORT_MAX_HOSTS][TRANSPORT_HOST_NAME_MAX + 1];
	int n = transport_hosts(names, TRANSPORT_MAX_HOSTS);
	if (n == 0) {
		snprintf(reason, reasonlen, "no Dokku host is configured");
		return -1;
	}
	for (int i = 0; i < n; i++)
		if (transport_host_check(names[i], max_age_s, reason, reasonlen) == 0)
			return 0;
	return -1;
}
