/* ssh_pool: libssh2 sessions, one thread each, channels multiplexed in
 * non-blocking mode. A request is handed to the least loaded session; its
 * thread opens a channel, execs, drains stdout and stderr, collects the exit
 * status and wakes the caller. */
#define _GNU_SOURCE
#include "ssh/pool.h"
#include "util/clock.h"
#include "util/crypto.h"
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
	char last_error[512];
	int refused; /* a permanent refusal (host key mismatch, auth): no retry */
	int tofu;    /* record the key of a host with no entry (DOKKU_HOST_KEY_TOFU) */
	char host_key[128]; /* type and fingerprint of the last accepted host key */
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

/* Returns 1 for the pool's first refusal (sessions connecting at the same
 * time may all be refused; it is logged once). */
static int set_last_error(struct ssh_pool *p, const char *msg, int refused)
{
	pthread_mutex_lock(&p->lock);
	snprintf(p->last_error, sizeof p->last_error, "%s", msg);
	int first = refused && !p->refused;
	if (refused)
		p->refused = 1;
	pthread_mutex_unlock(&p->lock);
	return first;
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

/* The key types mrprov connects with, in OpenSSH's order of preference:
 * knownhost type, the libssh2 host-key methods that use such a key, and its
 * name in known_hosts. ssh-rsa (SHA-1 signatures) is offered only for a host
 * whose recorded key is RSA (servers older than OpenSSH 7.2); DSA never
 * (OpenSSH removed it). */
static const struct key_type {
	int kh;
	int hostkey; /* LIBSSH2_HOSTKEY_TYPE_* */
	const char *methods;
	const char *name;
} key_types[] = {
	{ LIBSSH2_KNOWNHOST_KEY_ED25519, LIBSSH2_HOSTKEY_TYPE_ED25519, "ssh-ed25519", "ssh-ed25519" },
	{ LIBSSH2_KNOWNHOST_KEY_ECDSA_256, LIBSSH2_HOSTKEY_TYPE_ECDSA_256, "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256" },
	{ LIBSSH2_KNOWNHOST_KEY_ECDSA_384, LIBSSH2_HOSTKEY_TYPE_ECDSA_384, "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384" },
	{ LIBSSH2_KNOWNHOST_KEY_ECDSA_521, LIBSSH2_HOSTKEY_TYPE_ECDSA_521, "ecdsa-sha2-nistp521", "ecdsa-sha2-nistp521" },
	{ LIBSSH2_KNOWNHOST_KEY_SSHRSA, LIBSSH2_HOSTKEY_TYPE_RSA, "rsa-sha2-512,rsa-sha2-256,ssh-rsa", "ssh-rsa" },
};
#define N_KEY_TYPES (int)(sizeof key_types / sizeof key_types[0])
/* A host with no entry (DOKKU_HOST_KEY_TOFU): no SHA-1 signatures. */
#define FIRST_USE_METHODS                                                                                   \
	"ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256"

static const struct key_type *key_type_of(int hostkey_type)
{
	for (int i = 0; i < N_KEY_TYPES; i++)
		if (key_types[i].hostkey == hostkey_type)
			return &key_types[i];
	return NULL;
}

/* The session's host key: its type name and its fingerprint as OpenSSH
 * prints it ("SHA256:" and unpadded base64), so an operator can compare it
 * with `ssh-keygen -lf`. Returns the key (owned by the session) or NULL. */
static const char *key_id(LIBSSH2_SESSION *s, size_t *len, int *type, char *name, size_t namelen, char *fp,
			  size_t fplen)
{
	const char *key = libssh2_session_hostkey(s, len, type);
	snprintf(name, namelen, "unknown");
	snprintf(fp, fplen, "SHA256:?");
	if (!key)
		return NULL;
	const struct key_type *kt = key_type_of(*type);
	if (kt)
		snprintf(name, namelen, "%s", kt->name);
	else if (*type == LIBSSH2_HOSTKEY_TYPE_DSS)
		snprintf(name, namelen, "ssh-dss");
	const char *hash = libssh2_hostkey_hash(s, LIBSSH2_HOSTKEY_HASH_SHA256);
	char *b64 = hash ? crypto_base64(hash, 32, 0) : NULL;
	if (b64) {
		b64[strcspn(b64, "=")] = '\0';
		snprintf(fp, fplen, "SHA256:%s", b64);
		free(b64);
	}
	return key;
}

/* Reads the known_hosts file (a missing file is an empty one); NULL with
 * err otherwise. Caller holds kh_lock. */
static LIBSSH2_KNOWNHOSTS *kh_load(struct ssh_pool *p, LIBSSH2_SESSION *s, char *err, size_t errlen)
{
	LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(s);
	if (!kh) {
		snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot initialise the host-key check");
	} else if (access(p->known_hosts, F_OK) == 0 &&
		   libssh2_knownhost_readfile(kh, p->known_hosts, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
		snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot read %s: %s", p->known_hosts, ssh_error(s));
		libssh2_knownhost_free(kh);
		kh = NULL;
	}
	return kh;
}

/* What is recorded for the host (as `host`, or `[host]:port`; libssh2 also
 * matches hashed names): returns a bit per key_types[] entry, and sets *any
 * when the host has an entry of any type, also one mrprov cannot use. An
 * empty key never matches, so MISMATCH means "an entry exists"; key type 0
 * means any type. */
static unsigned kh_recorded(struct ssh_pool *p, LIBSSH2_KNOWNHOSTS *kh, int *any)
{
	const int enc = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_BASE64;
	*any = libssh2_knownhost_checkp(kh, p->host, p->port, "", 0, enc, NULL) != LIBSSH2_KNOWNHOST_CHECK_NOTFOUND;
	unsigned types = 0;
	for (int i = 0; *any && i < N_KEY_TYPES; i++)
		if (libssh2_knownhost_checkp(kh, p->host, p->port, "", 0, enc | key_types[i].kh, NULL) !=
		    LIBSSH2_KNOWNHOST_CHECK_NOTFOUND)
			types |= 1u << i;
	return types;
}

/* "ssh-ed25519, ecdsa-sha2-nistp256" for the bits of kh_recorded. */
static void type_names(unsigned types, char *out, size_t outlen)
{
	size_t n = 0;
	out[0] = '\0';
	for (int i = 0; i < N_KEY_TYPES && n < outlen; i++)
		if (types & (1u << i))
			n += (size_t)snprintf(out + n, outlen - n, "%s%s", n ? ", " : "", key_types[i].name);
	if (!out[0])
		snprintf(out, outlen, "no type mrprov can use");
}

/* Before the handshake: restricts the host-key methods to the types recorded
 * for the host, so that a server (or a man in the middle) cannot steer the
 * negotiation to a type that has no entry and pass as a new host. Sets
 * *recorded (bits of kh_recorded) and *had_entry. Returns -1 with err (and
 * *refused) when the host cannot be checked at all. */
static int restrict_host_key_methods(struct ssh_pool *p, LIBSSH2_SESSION *s, unsigned *recorded, int *had_entry,
				     char *err, size_t errlen, int *refused)
{
	pthread_mutex_lock(&p->kh_lock);
	LIBSSH2_KNOWNHOSTS *kh = kh_load(p, s, err, errlen);
	pthread_mutex_unlock(&p->kh_lock);
	if (!kh) {
		*refused = 1;
		return -1;
	}
	*recorded = kh_recorded(p, kh, had_entry);
	libssh2_knownhost_free(kh);
	char methods[256] = "";
	size_t n = 0;
	for (int i = 0; i < N_KEY_TYPES; i++)
		if (*recorded & (1u << i))
			n += (size_t)snprintf(methods + n, sizeof methods - n, "%s%s", n ? "," : "", key_types[i].methods);
	if (*had_entry && !*recorded) {
		snprintf(err, errlen,
			 "DOKKU_KNOWN_HOSTS: refusing %s:%d: the keys recorded for it in %s are of no type mrprov can use "
			 "(ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa)",
			 p->host, p->port, p->known_hosts);
		*refused = 1;
		return -1;
	}
	const char *offer = *had_entry ? methods : FIRST_USE_METHODS;
	if (libssh2_session_method_pref(s, LIBSSH2_METHOD_HOSTKEY, offer) != 0) {
		snprintf(err, errlen, "cannot offer the host-key methods %s: %s", offer, ssh_error(s));
		*refused = 1;
		return -1;
	}
	return 0;
}

/* After a failed handshake restricted to the recorded types: one more
 * handshake without the restriction, only to name the key the server offers
 * instead (nothing is sent after it, no authentication). Fills name and fp
 * and returns 0, or -1 when that handshake fails too. */
static int offered_key(struct ssh_pool *p, int *type, char *name, size_t namelen, char *fp, size_t fplen)
{
	char err[256];
	int fd = tcp_connect(p, err, sizeof err);
	if (fd < 0)
		return -1;
	int rc = -1;
	LIBSSH2_SESSION *s = libssh2_session_init();
	if (s) {
		libssh2_session_set_blocking(s, 1);
		libssh2_session_set_timeout(s, (long)(p->connect_timeout_s * 1000));
		size_t len;
		if (libssh2_session_handshake(s, fd) == 0 && key_id(s, &len, type, name, namelen, fp, fplen))
			rc = 0;
		libssh2_session_disconnect(s, "bye");
		libssh2_session_free(s);
	}
	close(fd);
	return rc;
}

/* Appends one line for the host to the known_hosts file, leaving the lines
 * there as they are (libssh2_knownhost_writefile would rewrite the file from
 * what it parsed, dropping comments); a new file is created 0600, an existing
 * one keeps its mode. Caller holds kh_lock. */
static int kh_append(struct ssh_pool *p, LIBSSH2_SESSION *s, LIBSSH2_KNOWNHOSTS *kh, const char *name,
		     const char *key, size_t len, int kh_type, char *why, size_t whylen)
{
	struct libssh2_knownhost *entry = NULL;
	char line[4096];
	size_t n = 0;
	if (libssh2_knownhost_addc(kh, name, NULL, key, len, NULL, 0,
				   LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | kh_type, &entry) != 0 ||
	    libssh2_knownhost_writeline(kh, entry, line, sizeof line, &n, LIBSSH2_KNOWNHOST_FILE_OPENSSH) != 0) {
		snprintf(why, whylen, "%s", ssh_error(s));
		return -1;
	}
	int fd = open(p->known_hosts, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -1;
	}
	int rc = -1;
	/* a last line without its newline would run into ours */
	char last = '\n';
	off_t end = lseek(fd, 0, SEEK_END);
	if (end > 0 && pread(fd, &last, 1, end - 1) != 1)
		goto out;
	if ((last != '\n' && write(fd, "\n", 1) != 1) || write(fd, line, n) != (ssize_t)n || fsync(fd) != 0)
		goto out;
	rc = 0;
out:
	if (rc < 0)
		snprintf(why, whylen, "%s", strerror(errno));
	close(fd);
	return rc;
}

/* After the handshake: 0 when the server's key is recorded for the host, or
 * the host has no entry at all and DOKKU_HOST_KEY_TOFU let it be recorded
 * now; -1 with err otherwise (*refused: do not retry). had_entry is what
 * restrict_host_key_methods found. */
static int check_host_key(struct ssh_pool *p, LIBSSH2_SESSION *s, int had_entry, char *err, size_t errlen,
			  int *refused)
{
	size_t len;
	int type;
	char name[32], fp[64], types[160];
	const char *key = key_id(s, &len, &type, name, sizeof name, fp, sizeof fp);
	if (!key) {
		snprintf(err, errlen, "%s:%d sent no host key", p->host, p->port);
		return -1;
	}
	const struct key_type *kt = key_type_of(type);
	pthread_mutex_lock(&p->kh_lock);
	int rc = -1;
	LIBSSH2_KNOWNHOSTS *kh = kh_load(p, s, err, errlen);
	if (!kh) {
		*refused = 1;
		goto out;
	}
	/* Key type 0: compared with every key recorded for the host, whatever
	 * its type, so a key of another type is a mismatch, not a new host. */
	int found = libssh2_knownhost_checkp(kh, p->host, p->port, key, len,
					     LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW, NULL);
	int any = 0;
	type_names(kh_recorded(p, kh, &any), types, sizeof types);
	switch (found) {
	case LIBSSH2_KNOWNHOST_CHECK_MATCH:
		rc = 0;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
		if (!had_entry) {
			/* another session recorded the host meanwhile: the next
			 * attempt negotiates the recorded type */
			snprintf(err, errlen, "the host key of %s:%d was recorded meanwhile; reconnecting", p->host,
				 p->port);
			break;
		}
		snprintf(err, errlen,
			 "DOKKU_KNOWN_HOSTS: the %s key %s of %s:%d does not match the key recorded for it in %s (%s); "
			 "refusing to connect",
			 name, fp, p->host, p->port, p->known_hosts, types);
		*refused = 1;
		break;
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND: {
		if (!p->tofu || !kt) {
			snprintf(err, errlen,
				 "DOKKU_KNOWN_HOSTS: no key recorded for %s:%d in %s (it offers %s %s); add it with "
				 "ssh-keyscan, or set DOKKU_HOST_KEY_TOFU=true",
				 p->host, p->port, p->known_hosts, name, fp);
			*refused = 1;
			break;
		}
		char host[300];
		if (p->port == 22)
			snprintf(host, sizeof host, "%s", p->host);
		else
			snprintf(host, sizeof host, "[%s]:%d", p->host, p->port);
		char why[128];
		if (kh_append(p, s, kh, host, key, len, kt->kh, why, sizeof why) != 0) {
			snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot record the host key of %s in %s: %s", host,
				 p->known_hosts, why);
			*refused = 1;
			break;
		}
		log_warn("ssh: recorded the %s key %s of %s in %s on first use (DOKKU_HOST_KEY_TOFU)", name, fp,
			 host, p->known_hosts);
		rc = 0;
		break;
	}
	default:
		snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot check the host key of %s:%d", p->host, p->port);
	}
	if (rc == 0) {
		pthread_mutex_lock(&p->lock);
		snprintf(p->host_key, sizeof p->host_key, "%s %s", name, fp);
		pthread_mutex_unlock(&p->lock);
	}
out:
	if (kh)
		libssh2_knownhost_free(kh);
	pthread_mutex_unlock(&p->kh_lock);
	return rc;
}

/* The handshake failed although it was restricted to the recorded types:
 * when the server offers a key of another type, that is a refusal (err
 * names it), not a network failure. */
static void explain_handshake_failure(struct ssh_pool *p, unsigned recorded, char *err, size_t errlen,
				      int *refused)
{
	int type = 0;
	char name[32], fp[64], types[160];
	if (offered_key(p, &type, name, sizeof name, fp, sizeof fp) < 0)
		return;
	const struct key_type *kt = key_type_of(type);
	if (kt && (recorded & (1u << (kt - key_types))))
		return; /* it offers a recorded type: the failure was something else */
	type_names(recorded, types, sizeof types);
	snprintf(err, errlen,
		 "DOKKU_KNOWN_HOSTS: %s:%d offers the %s key %s, not a key of the type recorded for it in %s (%s); "
		 "refusing to connect",
		 p->host, p->port, name, fp, p->known_hosts, types);
	*refused = 1;
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
	unsigned recorded = 0;
	int had_entry = 0;
	if (restrict_host_key_methods(p, s->s, &recorded, &had_entry, err, errlen, refused) < 0)
		goto fail;
	if (libssh2_session_handshake(s->s, s->sock) != 0) {
		int kex_failed = libssh2_session_last_errno(s->s) == LIBSSH2_ERROR_KEX_FAILURE;
		snprintf(err, errlen, "SSH handshake with %s:%d failed: %s", p->host, p->port, ssh_error(s->s));
		if (kex_failed && had_entry)
			explain_handshake_failure(p, recorded, err, errlen, refused);
		goto fail;
	}
	if (check_host_key(p, s->s, had_entry, err, errlen, refused) < 0)
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
				int first_refusal = set_last_error(p, err, ref);
				s->backoff = s->backoff ? s->backoff * 2 : 0.2;
				if (s->backoff > 10)
					s->backoff = 10;
				s->next_connect = now + s->backoff;
				if (first_refusal)
					log_error("ssh: %s (not retrying: fix it, then restart mrprov)", err);
				else if (!ref && (s->index == 0 || pending))
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
	p->tofu = o->host_key_tofu;
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

void ssh_pool_host_key(struct ssh_pool *p, char *out, size_t outlen)
{
	pthread_mutex_lock(&p->lock);
	snprintf(out, outlen, "%s", p->host_key);
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
