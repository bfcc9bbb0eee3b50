/* ssh_pool internals, shared by the files of src/ssh/ only: the pool, its
 * sessions and their requests, and the calls between host-key checking
 * (hostkey.c), sessions (session.c), channels (channel.c) and the public API
 * (pool.c). Nothing outside src/ssh/ includes it. */
#ifndef MRPROV_SSH_POOL_INTERNAL_H
#define MRPROV_SSH_POOL_INTERNAL_H

#include "ssh/pool.h"

#include <libssh2.h>
#include <pthread.h>
#include <stddef.h>

#define MAX_CHANNELS 32
#define KEEPALIVE_S 15

/* RQ_WRITE: the command's stdin is sent (only a request with input), then
 * its EOF; the order matters: expire() closes every state before RQ_CLOSE. */
enum rq_state { RQ_OPEN, RQ_EXEC, RQ_WRITE, RQ_READ, RQ_CLOSE, RQ_WAIT_CLOSED, RQ_FREE };

struct request {
	struct request *next;
	char *cmd;
	char *in;	 /* stdin bytes (a copy: a detached request outlives its caller), or NULL */
	size_t in_len;
	size_t in_off;	 /* bytes of in sent so far */
	int in_fd;	 /* >= 0: stdin is read from this file (ours, a dup), in_len bytes of in at a time */
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
	char *name; /* the Dokku host's name (metrics label) */
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

/* ---- session.c: connecting, authenticating, the session thread ---- */

/* libssh2's last error on the session, never NULL. */
const char *ssh_lib_error(LIBSSH2_SESSION *s);
/* A connected TCP socket to the pool's host (blocking, TCP_NODELAY), or -1
 * with err. */
int ssh_tcp_connect(struct ssh_pool *p, char *err, size_t errlen);
/* Session-level failure: every channel on it is lost, the session is
 * disconnected and reconnects soon. */
void ssh_session_broken(struct session *s, const char *why);
/* The thread of one session (pthread_create's start routine). */
void *ssh_session_main(void *arg);

/* ---- hostkey.c: checking the server's key against known_hosts ---- */

/* Before the handshake: restricts the host-key methods to the types recorded
 * for the host. Sets *recorded (a bit per known key type) and *had_entry.
 * Returns -1 with err (and *refused) when the host cannot be checked at all. */
int ssh_hostkey_restrict(struct ssh_pool *p, LIBSSH2_SESSION *s, unsigned *recorded, int *had_entry, char *err,
			 size_t errlen, int *refused);
/* After the handshake: 0 when the server's key is accepted (and records it
 * as the pool's host key), -1 with err otherwise (*refused: do not retry). */
int ssh_hostkey_check(struct ssh_pool *p, LIBSSH2_SESSION *s, int had_entry, char *err, size_t errlen,
		      int *refused);
/* After a key-exchange failure restricted to the recorded types: rewrites
 * err (and sets *refused) when the server offers a key of another type. */
void ssh_hostkey_explain_failure(struct ssh_pool *p, unsigned recorded, char *err, size_t errlen, int *refused);

/* ---- channel.c: requests and the channel state machine ---- */

/* Frees a request (its command, its input, its condition). */
void ssh_request_free(struct request *rq);
/* Finishes a request: the caller may return; a detached one is freed. */
void ssh_request_complete(struct session *s, struct request *rq);
/* Finishes a request with a transport error. */
void ssh_request_fail(struct session *s, struct request *rq, const char *msg, int transient);
/* On a connected session: moves queued requests onto free channels and
 * advances every active one as far as it goes without blocking (deadlines,
 * cancellation, given-up channels included). */
void ssh_channels_drive(struct session *s, int stopping, int cancelled);

#endif
