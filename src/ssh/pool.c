/* ssh_pool: libssh2 sessions, one thread each, channels multiplexed in
 * non-blocking mode. A request is handed to the least loaded session; its
 * thread opens a channel, execs, drains stdout and stderr, collects the exit
 * status and wakes the caller. */
#define _GNU_SOURCE
#include "ssh/pool.h"
#include "util/clock.h"
#include "metrics.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libssh2.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHANNELS 32
#define KEEPALIVE_S 15

enum rq_state { RQ_OPEN, RQ_EXEC, RQ_READ, RQ_CLOSE, RQ_WAIT_CLOSED, RQ_FREE };

struct request {
	struct request *next;
	char *cmd;
	double deadline; /* 0: none */
	int out_fd;
	struct ssh_result *res; /* NULL once the caller has gone (timeout) */
	int done;		/* set under pool->lock; the caller may then return */
	double expired_at;	/* when the deadline passed (detached requests) */
	int detached;		/* the session frees it after cleaning up its channel */
	int cancelled;		/* given up because the pool was cancelled (shutdown) */
	pthread_cond_t cond;
	LIBSSH2_CHANNEL *ch;
	enum rq_state st;
};

struct session {
	struct ssh_pool *pool;
	int index;
	pthread_t thread;
	int wake[2];
	struct request *queue, *queue_tail; /* pending, under pool->lock */
	int queued;
	struct request *active[MAX_CHANNELS]; /* owned by the thread */
	int nactive;
	int max_ch;
	int sock;
	LIBSSH2_SESSION *s;
	int connected;
	double next_connect;
	double backoff;
	double last_keepalive;
	int abandoned; /* channels of expired commands given up on; see recycle */
};

struct ssh_pool {
	char *host, *user, *key_path, *known_hosts;
	int port;
	double connect_timeout_s;
	pthread_mutex_t lock;
	pthread_mutex_t kh_lock; /* known_hosts file */
	struct session *sess;
	int n;
	int stopping;
	int cancelled; /* ssh_pool_cancel: running commands are given up, new ones refused */
	double last_ok;
	char last_error[256];
	int refused; /* a permanent refusal (host key mismatch, auth): no retry */
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
	libssh2_init(0);
}

static void update_gauge(struct ssh_pool *p)
{
	int n = 0;
	for (int i = 0; i < p->n; i++)
		n += p->sess[i].connected;
	metrics_set("mrprov_ssh_connections_open", NULL, n);
}

static void wake(struct session *s)
{
	char c = 1;
	ssize_t r = write(s->wake[1], &c, 1);
	(void)r;
}

/* Finishes a request: the caller may return once done is set. */
static void complete(struct session *s, struct request *rq)
{
	struct ssh_pool *p = s->pool;
	pthread_mutex_lock(&p->lock);
	if (rq->detached) {
		pthread_mutex_unlock(&p->lock);
		pthread_cond_destroy(&rq->cond);
		free(rq->cmd);
		free(rq);
		return;
	}
	rq->done = 1;
	pthread_cond_signal(&rq->cond);
	pthread_mutex_unlock(&p->lock);
}

static void fail_request(struct session *s, struct request *rq, const char *msg, int transient)
{
	if (rq->res) {
		snprintf(rq->res->error, sizeof rq->res->error, "%.250s", msg);
		rq->res->transient = transient;
		rq->res->exit_code = -1;
	}
	complete(s, rq);
}

static void set_last_error(struct ssh_pool *p, const char *msg, int refused)
{
	pthread_mutex_lock(&p->lock);
	snprintf(p->last_error, sizeof p->last_error, "%.250s", msg);
	if (refused)
		p->refused = 1;
	pthread_mutex_unlock(&p->lock);
}

static const char *ssh_error(LIBSSH2_SESSION *s)
{
	char *msg = NULL;
	libssh2_session_last_error(s, &msg, NULL, 0);
	return msg ? msg : "unknown libssh2 error";
}

/* ---- connecting ---- */

static int tcp_connect(struct ssh_pool *p, char *err, size_t errlen)
{
	char port[16];
	snprintf(port, sizeof port, "%d", p->port);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC };
	struct addrinfo *ai = NULL;
	int rc = getaddrinfo(p->host, port, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", p->host, gai_strerror(rc));
		return -1;
	}
	int fd = -1;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 || errno == EINPROGRESS) {
			struct pollfd pfd = { fd, POLLOUT, 0 };
			int soerr = 0;
			socklen_t sl = sizeof soerr;
			if (poll(&pfd, 1, (int)(p->connect_timeout_s * 1000)) == 1 &&
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
				break;
			snprintf(err, errlen, "cannot connect to %s:%d: %s", p->host, p->port,
				 soerr ? strerror(soerr) : "timed out");
		} else {
			snprintf(err, errlen, "cannot connect to %s:%d: %s", p->host, p->port, strerror(errno));
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return -1;
	int one = 1;
	/* Without TCP_NODELAY each exec channel costs ~46 ms instead of ~3 ms. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
	int flags = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
	return fd;
}

static int knownhost_type(int hostkey_type)
{
	switch (hostkey_type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
	case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
	case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519;
	default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
	}
}

/* Returns 0 when the host key is known and matches (or was recorded now),
 * -1 with err otherwise; *refused is set for a mismatch. */
static int check_host_key(struct ssh_pool *p, LIBSSH2_SESSION *s, char *err, size_t errlen, int *refused)
{
	size_t len;
	int type;
	const char *key = libssh2_session_hostkey(s, &len, &type);
	if (!key) {
		snprintf(err, errlen, "%s:%d sent no host key", p->host, p->port);
		return -1;
	}
	int mask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | knownhost_type(type);
	pthread_mutex_lock(&p->kh_lock);
	LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(s);
	int rc = -1;
	if (!kh) {
		snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot initialise the host-key check");
		goto out;
	}
	struct stat st;
	if (stat(p->known_hosts, &st) == 0 &&
	    libssh2_knownhost_readfile(kh, p->known_hosts, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
		snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot read %s", p->known_hosts);
		*refused = 1;
		goto out;
	}
	const char *fp = libssh2_hostkey_hash(s, LIBSSH2_HOSTKEY_HASH_SHA256);
	char fphex[65] = "";
	for (int i = 0; fp && i < 32; i++)
		snprintf(fphex + 2 * i, 3, "%02x", (unsigned char)fp[i]);
	switch (libssh2_knownhost_checkp(kh, p->host, p->port, key, len, mask, NULL)) {
	case LIBSSH2_KNOWNHOST_CHECK_MATCH:
		rc = 0;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
		snprintf(err, errlen,
			 "DOKKU_KNOWN_HOSTS: the host key of %s:%d (sha256 %.16s…) does not match the one recorded "
			 "in %s; refusing to connect. If the server's key really changed, remove its line there",
			 p->host, p->port, fphex, p->known_hosts);
		*refused = 1;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND: {
		char name[300];
		if (p->port == 22)
			snprintf(name, sizeof name, "%s", p->host);
		else
			snprintf(name, sizeof name, "[%s]:%d", p->host, p->port);
		if (libssh2_knownhost_addc(kh, name, NULL, key, len, NULL, 0, mask, NULL) != 0 ||
		    libssh2_knownhost_writefile(kh, p->known_hosts, LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0) {
			snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot record the host key of %s in %s", name,
				 p->known_hosts);
			*refused = 1;
			break;
		}
		log_warn("ssh: recorded the host key of %s (sha256 %s) in %s on first use", name, fphex,
			 p->known_hosts);
		rc = 0;
		break;
	}
	default:
		snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot check the host key of %s:%d", p->host, p->port);
	}
out:
	if (kh)
		libssh2_knownhost_free(kh);
	pthread_mutex_unlock(&p->kh_lock);
	return rc;
}

static void disconnect(struct session *s)
{
	if (s->s) {
		libssh2_session_set_blocking(s->s, 0);
		libssh2_session_disconnect(s->s, "bye");
		/* Non-blocking, libssh2_session_free returns EAGAIN (and frees
		 * nothing) while it still has channels to close, e.g. those of
		 * given-up commands: with the socket shut down those sends fail at
		 * once and the session is freed. */
		if (s->sock >= 0)
			shutdown(s->sock, SHUT_RDWR);
		for (int i = 0; i < 100 && libssh2_session_free(s->s) == LIBSSH2_ERROR_EAGAIN; i++)
			;
		s->s = NULL;
	}
	if (s->sock >= 0)
		close(s->sock);
	s->sock = -1;
	if (s->connected) {
		s->connected = 0;
		update_gauge(s->pool);
	}
}

static int session_connect(struct session *s, char *err, size_t errlen, int *refused)
{
	struct ssh_pool *p = s->pool;
	s->sock = tcp_connect(p, err, errlen);
	if (s->sock < 0)
		return -1;
	s->s = libssh2_session_init();
	if (!s->s) {
		snprintf(err, errlen, "cannot create an SSH session");
		goto fail;
	}
	libssh2_session_set_blocking(s->s, 1);
	libssh2_session_set_timeout(s->s, (long)(p->connect_timeout_s * 1000));
	if (libssh2_session_handshake(s->s, s->sock) != 0) {
		snprintf(err, errlen, "SSH handshake with %s:%d failed: %s", p->host, p->port, ssh_error(s->s));
		goto fail;
	}
	if (check_host_key(p, s->s, err, errlen, refused) < 0)
		goto fail;
	char pub[1100];
	snprintf(pub, sizeof pub, "%s.pub", p->key_path);
	struct stat st;
	if (libssh2_userauth_publickey_fromfile(s->s, p->user, stat(pub, &st) == 0 ? pub : NULL, p->key_path,
						NULL) != 0) {
		snprintf(err, errlen, "SSH authentication as %s@%s:%d with %s failed: %s", p->user, p->host,
			 p->port, p->key_path, ssh_error(s->s));
		*refused = 1;
		goto fail;
	}
	libssh2_keepalive_config(s->s, 0, KEEPALIVE_S);
	libssh2_session_set_timeout(s->s, 0);
	libssh2_session_set_blocking(s->s, 0);
	s->connected = 1;
	s->backoff = 0;
	s->last_keepalive = clock_mono();
	update_gauge(p);
	return 0;
fail:
	disconnect(s);
	return -1;
}

/* ---- driving channels ---- */

static int write_all(int fd, const char *buf, size_t n)
{
	while (n) {
		ssize_t w = write(fd, buf, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Session-level failure: every channel on it is lost. */
static void session_broken(struct session *s, const char *why)
{
	char msg[256];
	snprintf(msg, sizeof msg, "connection to %s:%d lost: %s", s->pool->host, s->pool->port, why);
	log_warn("ssh: %s", msg);
	set_last_error(s->pool, msg, 0);
	for (int i = 0; i < s->nactive; i++)
		fail_request(s, s->active[i], msg, 1);
	s->nactive = 0;
	/* The channels die with the session; libssh2 frees them with it. */
	disconnect(s);
	s->next_connect = clock_mono() + 0.1;
}

/* Advances one request as far as it goes without blocking.
 * Returns 1 when finished (removed), 0 when waiting, -1 on a session error. */
static int progress(struct session *s, struct request *rq)
{
	LIBSSH2_SESSION *ss = s->s;
	char buf[32768];
	for (;;) {
		switch (rq->st) {
		case RQ_OPEN:
			rq->ch = libssh2_channel_open_session(ss);
			if (!rq->ch) {
				int e = libssh2_session_last_errno(ss);
				if (e == LIBSSH2_ERROR_EAGAIN)
					return 0;
				if (e == LIBSSH2_ERROR_CHANNEL_FAILURE && s->nactive > 1) {
					/* The server's MaxSessions is lower than ours: wait for a slot. */
					s->max_ch = s->nactive - 1;
					return 2;
				}
				if (e == LIBSSH2_ERROR_CHANNEL_FAILURE) {
					fail_request(s, rq, "the server refused a channel", 1);
					return 1;
				}
				return -1;
			}
			rq->st = RQ_EXEC;
			break;
		case RQ_EXEC: {
			int rc = libssh2_channel_exec(rq->ch, rq->cmd);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (rc < 0) {
				rq->st = RQ_CLOSE;
				if (rq->res)
					snprintf(rq->res->error, sizeof rq->res->error, "exec refused by the server");
				break;
			}
			rq->st = RQ_READ;
			break;
		}
		case RQ_READ: {
			int got = 0;
			for (;;) {
				ssize_t n = libssh2_channel_read(rq->ch, buf, sizeof buf);
				if (n == LIBSSH2_ERROR_EAGAIN || n == 0)
					break;
				if (n < 0)
					return -1;
				got = 1;
				if (rq->res) {
					rq->res->out_bytes += (size_t)n;
					if (rq->out_fd >= 0) {
						if (write_all(rq->out_fd, buf, (size_t)n) < 0 && !rq->res->error[0])
							snprintf(rq->res->error, sizeof rq->res->error,
								 "cannot write the output: %s", strerror(errno));
					} else {
						sbuf_add(&rq->res->out, buf, (size_t)n);
					}
				}
			}
			for (;;) {
				ssize_t n = libssh2_channel_read_stderr(rq->ch, buf, sizeof buf);
				if (n == LIBSSH2_ERROR_EAGAIN || n == 0)
					break;
				if (n < 0)
					return -1;
				got = 1;
				if (rq->res && rq->res->err.len < 1024 * 1024)
					sbuf_add(&rq->res->err, buf, (size_t)n);
			}
			if (!libssh2_channel_eof(rq->ch))
				return 0;
			if (got)
				continue; /* drain what arrived with the EOF */
			rq->st = RQ_CLOSE;
			break;
		}
		case RQ_CLOSE: {
			int rc = libssh2_channel_close(rq->ch);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			rq->st = RQ_WAIT_CLOSED;
			break;
		}
		case RQ_WAIT_CLOSED: {
			int rc = libssh2_channel_wait_closed(rq->ch);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (rq->res && !rq->res->error[0]) {
				int code = libssh2_channel_get_exit_status(rq->ch);
				char *sig = NULL;
				libssh2_channel_get_exit_signal(rq->ch, &sig, NULL, NULL, NULL, NULL, NULL);
				if (sig) {
					code = code ? code : 128 + 9;
					libssh2_free(ss, sig);
				}
				rq->res->exit_code = code;
			}
			rq->st = RQ_FREE;
			break;
		}
		case RQ_FREE: {
			int rc = libssh2_channel_free(rq->ch);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			rq->ch = NULL;
			pthread_mutex_lock(&s->pool->lock);
			if (rq->res && !rq->res->error[0])
				s->pool->last_ok = clock_mono();
			pthread_mutex_unlock(&s->pool->lock);
			complete(s, rq);
			return 1;
		}
		}
	}
}

/* A request past its deadline: the caller is told now; the channel is
 * closed in the background and the request freed afterwards. Returns 1
 * when the request is gone already (it had no channel yet). */
static int expire(struct session *s, struct request *rq, int cancelled)
{
	struct ssh_pool *p = s->pool;
	pthread_mutex_lock(&p->lock);
	rq->cancelled = cancelled;
	rq->res = NULL;
	rq->detached = 1;
	rq->done = 1;
	rq->expired_at = clock_mono();
	pthread_cond_signal(&rq->cond);
	pthread_mutex_unlock(&p->lock);
	if (rq->st == RQ_OPEN) {
		complete(s, rq); /* detached: frees it */
		return 1;
	}
	if (rq->st < RQ_CLOSE)
		rq->st = RQ_CLOSE;
	return 0;
}

static void *session_main(void *arg)
{
	struct session *s = arg;
	struct ssh_pool *p = s->pool;
	char err[512];
	for (;;) {
		pthread_mutex_lock(&p->lock);
		int stopping = p->stopping;
		int cancelled = p->cancelled;
		int refused = p->refused;
		int pending = s->queued;
		pthread_mutex_unlock(&p->lock);
		if (stopping && pending == 0 && s->nactive == 0)
			break;

		double now = clock_mono();
		if (!s->connected && (pending > 0 || !stopping) && now >= s->next_connect && !refused) {
			int ref = 0;
			if (session_connect(s, err, sizeof err, &ref) < 0) {
				set_last_error(p, err, ref);
				s->backoff = s->backoff ? s->backoff * 2 : 0.2;
				if (s->backoff > 10)
					s->backoff = 10;
				s->next_connect = now + s->backoff;
				if (s->index == 0 || pending)
					log_warn("ssh: %s (retrying in %.1f s)", err, s->backoff);
			}
		}
		/* Without a connection, queued commands fail at once (transient): the
		 * job retries with its own backoff and says what it waits for. */
		if (!s->connected) {
			pthread_mutex_lock(&p->lock);
			struct request *q = s->queue;
			s->queue = s->queue_tail = NULL;
			s->queued = 0;
			snprintf(err, sizeof err, "%s", p->last_error[0] ? p->last_error : "not connected");
			refused = p->refused;
			pthread_mutex_unlock(&p->lock);
			while (q) {
				struct request *next = q->next;
				fail_request(s, q, err, !refused);
				q = next;
			}
		}
		if (cancelled) {
			pthread_mutex_lock(&p->lock);
			struct request *q = s->queue;
			s->queue = s->queue_tail = NULL;
			s->queued = 0;
			pthread_mutex_unlock(&p->lock);
			while (q) {
				struct request *next = q->next;
				fail_request(s, q, "cancelled: shutting down", 1);
				q = next;
			}
		}
		if (s->connected) {
			pthread_mutex_lock(&p->lock);
			while (s->queue && s->nactive < s->max_ch) {
				struct request *rq = s->queue;
				s->queue = rq->next;
				if (!s->queue)
					s->queue_tail = NULL;
				s->queued--;
				rq->next = NULL;
				s->active[s->nactive++] = rq;
			}
			pthread_mutex_unlock(&p->lock);
			now = clock_mono();
			for (int i = 0; i < s->nactive && s->connected; i++) {
				struct request *rq = s->active[i];
				if (((rq->deadline && now > rq->deadline) || cancelled) && !rq->detached &&
				    expire(s, rq, cancelled)) {
					s->active[i--] = s->active[--s->nactive];
					continue;
				}
				/* The server confirms a channel's close only when the
				 * command ends, which an expired command may never do:
				 * give the channel up (the session frees it when it is
				 * recycled) instead of holding the slot. */
				if (rq->detached && rq->st >= RQ_CLOSE && (stopping || now - rq->expired_at > 5)) {
					s->abandoned++;
					s->active[i--] = s->active[--s->nactive];
					complete(s, rq);
					continue;
				}
				int r = progress(s, rq);
				if (r == 1) {
					s->active[i--] = s->active[--s->nactive];
				} else if (r == 2) {
					/* back to the head of the queue until a channel frees up */
					s->active[i--] = s->active[--s->nactive];
					pthread_mutex_lock(&p->lock);
					rq->next = s->queue;
					s->queue = rq;
					if (!s->queue_tail)
						s->queue_tail = rq;
					s->queued++;
					pthread_mutex_unlock(&p->lock);
				} else if (r < 0) {
					session_broken(s, ssh_error(s->s));
				}
			}
			if (s->connected) {
				int next = 0;
				if (libssh2_keepalive_send(s->s, &next) < 0 &&
				    libssh2_session_last_errno(s->s) != LIBSSH2_ERROR_EAGAIN)
					session_broken(s, "keepalive failed");
			}
		}

		/* Recycle a session holding abandoned channels once nothing runs on it. */
		if (s->connected && s->abandoned && s->nactive == 0) {
			pthread_mutex_lock(&p->lock);
			int idle = s->queued == 0;
			pthread_mutex_unlock(&p->lock);
			if (idle) {
				log_info("ssh: reconnecting session %d to release %d expired channel(s)", s->index,
					 s->abandoned);
				disconnect(s);
				s->abandoned = 0;
				s->next_connect = 0;
			}
		}

		/* Sleep until the socket is ready, a request arrives, or 100 ms. */
		struct pollfd fds[2] = { { s->wake[0], POLLIN, 0 }, { -1, 0, 0 } };
		if (s->connected && s->nactive > 0) {
			int dir = libssh2_session_block_directions(s->s);
			fds[1].fd = s->sock;
			fds[1].events = (short)(((dir & LIBSSH2_SESSION_BLOCK_INBOUND) ? POLLIN : 0) |
						((dir & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? POLLOUT : 0));
			if (!fds[1].events)
				fds[1].events = POLLIN;
		} else if (s->connected) {
			fds[1].fd = s->sock; /* notice a server that hangs up */
			fds[1].events = POLLIN;
		}
		int timeout = 100;
		if (!s->connected && !p->refused && s->next_connect > clock_mono())
			timeout = (int)((s->next_connect - clock_mono()) * 1000) + 1;
		if (timeout > 1000)
			timeout = 1000;
		if (poll(fds, 2, timeout) > 0 && (fds[0].revents & POLLIN)) {
			char drain[64];
			while (read(s->wake[0], drain, sizeof drain) > 0)
				;
		}
		if (s->connected && s->nactive == 0 && fds[1].fd >= 0 && (fds[1].revents & (POLLHUP | POLLERR)))
			session_broken(s, "the server closed the connection");
	}
	disconnect(s);
	return NULL;
}

struct ssh_pool *ssh_pool_new(const struct ssh_pool_opts *o, char *err, size_t errlen)
{
	pthread_once(&init_once, lib_init);
	struct ssh_pool *p = calloc(1, sizeof *p);
	if (!p)
		abort();
	p->host = strdup(o->host);
	p->user = strdup(o->user);
	p->key_path = strdup(o->key_path);
	p->known_hosts = strdup(o->known_hosts);
	p->port = o->port;
	p->connect_timeout_s = o->connect_timeout_s > 0 ? o->connect_timeout_s : 10;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->kh_lock, NULL);
	p->n = o->sessions > 0 ? o->sessions : 1;
	p->sess = calloc((size_t)p->n, sizeof *p->sess);
	if (!p->sess)
		abort();
	int channels = o->channels > 0 ? o->channels : 8;
	if (channels > MAX_CHANNELS)
		channels = MAX_CHANNELS;
	for (int i = 0; i < p->n; i++) {
		struct session *s = &p->sess[i];
		s->pool = p;
		s->index = i;
		s->sock = -1;
		s->max_ch = channels;
		if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
			snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
			p->n = i;
			ssh_pool_free(p);
			return NULL;
		}
		if (pthread_create(&s->thread, NULL, session_main, s) != 0) {
			snprintf(err, errlen, "cannot start an SSH thread");
			close(s->wake[0]);
			close(s->wake[1]);
			p->n = i;
			ssh_pool_free(p);
			return NULL;
		}
	}
	return p;
}

int ssh_pool_run(struct ssh_pool *p, const char *cmd, double timeout_s, int out_fd, struct ssh_result *res)
{
	memset(res, 0, sizeof *res);
	res->exit_code = -1;
	sbuf_init(&res->out);
	sbuf_init(&res->err);
	struct request *rq = calloc(1, sizeof *rq);
	if (!rq)
		abort();
	rq->cmd = strdup(cmd);
	rq->deadline = timeout_s > 0 ? clock_mono() + timeout_s : 0;
	rq->out_fd = out_fd;
	rq->res = res;
	pthread_cond_init(&rq->cond, NULL);

	pthread_mutex_lock(&p->lock);
	if (p->stopping || p->cancelled) {
		pthread_mutex_unlock(&p->lock);
		snprintf(res->error, sizeof res->error, "cancelled: shutting down");
		res->transient = 1;
		pthread_cond_destroy(&rq->cond);
		free(rq->cmd);
		free(rq);
		return -1;
	}
	/* The least loaded connected session, else the least loaded. */
	struct session *best = NULL;
	int best_load = 1 << 30;
	for (int pass = 0; pass < 2 && !best; pass++) {
		for (int i = 0; i < p->n; i++) {
			struct session *s = &p->sess[i];
			int load = s->queued + s->nactive;
			if ((pass == 0 && !s->connected) || load >= best_load)
				continue;
			best = s;
			best_load = load;
		}
	}
	if (best->queue_tail)
		best->queue_tail->next = rq;
	else
		best->queue = rq;
	best->queue_tail = rq;
	best->queued++;
	pthread_mutex_unlock(&p->lock);
	wake(best);

	pthread_mutex_lock(&p->lock);
	while (!rq->done)
		pthread_cond_wait(&rq->cond, &p->lock);
	int detached = rq->detached;
	int cancelled = rq->cancelled;
	pthread_mutex_unlock(&p->lock);
	if (detached && cancelled) {
		snprintf(res->error, sizeof res->error, "cancelled: shutting down");
		res->transient = 1;
	} else if (detached && timeout_s > 0) {
		snprintf(res->error, sizeof res->error, "timed out after %.0f s", timeout_s);
		res->transient = 1;
	}
	if (!detached) {
		pthread_cond_destroy(&rq->cond);
		free(rq->cmd);
		free(rq);
	}
	return res->error[0] ? -1 : 0;
}

void ssh_result_free(struct ssh_result *res)
{
	sbuf_free(&res->out);
	sbuf_free(&res->err);
}

int ssh_pool_connected(struct ssh_pool *p)
{
	int n = 0;
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < p->n; i++)
		n += p->sess[i].connected;
	pthread_mutex_unlock(&p->lock);
	return n;
}

double ssh_pool_last_ok(struct ssh_pool *p)
{
	pthread_mutex_lock(&p->lock);
	double t = p->last_ok;
	pthread_mutex_unlock(&p->lock);
	return t;
}

void ssh_pool_last_error(struct ssh_pool *p, char *out, size_t outlen)
{
	pthread_mutex_lock(&p->lock);
	snprintf(out, outlen, "%s", p->last_error);
	pthread_mutex_unlock(&p->lock);
}

void ssh_pool_cancel(struct ssh_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->cancelled = 1;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n; i++)
		wake(&p->sess[i]);
}

void ssh_pool_free(struct ssh_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n; i++) {
		wake(&p->sess[i]);
		pthread_join(p->sess[i].thread, NULL);
		close(p->sess[i].wake[0]);
		close(p->sess[i].wake[1]);
	}
	free(p->sess);
	free(p->host);
	free(p->user);
	free(p->key_path);
	free(p->known_hosts);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->kh_lock);
	free(p);
}
