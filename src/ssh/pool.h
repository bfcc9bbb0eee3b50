/* ssh_pool: SSH to one Dokku host over libssh2. DOKKU_POOL_SIZE sessions,
 * each driven by its own thread in non-blocking mode with several exec
 * channels interleaved (bounded by the server's MaxSessions). Owns
 * connecting (TCP_NODELAY, keepalives, reconnect with backoff), host-key
 * checking against a known_hosts file (a host with an entry: only a recorded
 * key, negotiation restricted to the recorded types; a host without one:
 * recorded on first use only when host_key_tofu is set, refused otherwise),
 * per-command timeouts and streaming stdout to a file. Never
 * closes a session while a command runs on it. Knows no Dokku command. */
#ifndef MRPROV_SSH_POOL_H
#define MRPROV_SSH_POOL_H

#include "util/sbuf.h"

#include <stddef.h>

/* The defaults of the options a caller leaves at zero, owned here: main.c
 * passes them, ssh_pool_new falls back to them. Neither is a setting. */
#define SSH_POOL_CONNECT_TIMEOUT_S 10 /* TCP connect, handshake and auth */
#define SSH_POOL_CHANNELS 8	      /* commands at once per session: below OpenSSH's default MaxSessions, 10 */

struct ssh_pool;

struct ssh_pool_opts {
	const char *name; /* the host's name in metrics labels (NULL: "default") */
	const char *host;
	int port;
	const char *user;
	const char *key_path;
	const char *known_hosts;
	int sessions;	  /* connections */
	int channels;	  /* concurrent commands per connection; 0: SSH_POOL_CHANNELS */
	double connect_timeout_s; /* 0: SSH_POOL_CONNECT_TIMEOUT_S */
	int host_key_tofu; /* record the key of a host with no known_hosts entry */
};

struct ssh_result {
	int exit_code;	   /* -1 when the command did not complete */
	struct sbuf out;   /* stdout, unless streamed */
	struct sbuf err;
	size_t out_bytes;  /* stdout bytes received (buffered or streamed) */
	char error[256];   /* transport failure, empty otherwise */
	int transient;	   /* a retry may succeed */
};

struct ssh_pool *ssh_pool_new(const struct ssh_pool_opts *o, char *err, size_t errlen);
/* Runs cmd; blocks until it finished, failed or timed out. out_fd >= 0:
 * stdout is written there instead of buffered. Returns 0 when the command
 * ran (whatever its exit code), -1 otherwise (res->error says why). */
int ssh_pool_run(struct ssh_pool *p, const char *cmd, double timeout_s, int out_fd, struct ssh_result *res);
/* The same, with in_len bytes of in as the command's stdin (copied; sent
 * while its output is read, then EOF). in == NULL: no stdin at all, the
 * channel's input stays open as with ssh_pool_run. A command that exits
 * without reading all of it is not an error here: its exit code tells. */
int ssh_pool_run_input(struct ssh_pool *p, const char *cmd, const char *in, size_t in_len, double timeout_s,
		       int out_fd, struct ssh_result *res);
/* The same, with the command's stdin read from in_fd (a file: the pool
 * reads it from where it stands to its end, SSH_INPUT_CHUNK bytes at a
 * time, so no size bound applies) and then EOF. in_fd stays the caller's. */
int ssh_pool_run_fd(struct ssh_pool *p, const char *cmd, int in_fd, double timeout_s, int out_fd,
		    struct ssh_result *res);
#define SSH_INPUT_CHUNK (64 * 1024)
void ssh_result_free(struct ssh_result *res);
/* Sessions connected now. */
int ssh_pool_connected(struct ssh_pool *p);
/* Monotonic time of the last successful exchange with the server (0: never). */
double ssh_pool_last_ok(struct ssh_pool *p);
/* The last connection error, or "" (copied). */
void ssh_pool_last_error(struct ssh_pool *p, char *out, size_t outlen);
/* Type and fingerprint of the last accepted host key ("ssh-ed25519
 * SHA256:…"), or "" (copied). */
void ssh_pool_host_key(struct ssh_pool *p, char *out, size_t outlen);
/* Shutdown: every running or queued command returns at once with the
 * transient error "cancelled: shutting down" (its channel is given up, the
 * command may still finish on the server); later commands are refused. */
void ssh_pool_cancel(struct ssh_pool *p);
/* Waits for running commands (bounded), then disconnects and frees. */
void ssh_pool_free(struct ssh_pool *p);

#endif
