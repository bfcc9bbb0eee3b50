/* transport: how a Dokku command is run — dry-run (recorded, never run),
 * local (fork/exec of `dokku` with an argv, no shell) or SSH to one of the
 * named Dokku hosts (one lazily opened ssh_pool per host).
 * Owns token safety: every argument must be a validated token, because
 * Dokku's SSH entry re-splits the command line. Knows no Dokku subcommand
 * (beyond `version`, the health probe). */
#ifndef MRPROV_TRANSPORT_H
#define MRPROV_TRANSPORT_H

#include "ssh/pool.h"
#include "util/sbuf.h"

#include <sys/types.h>

enum transport_mode { TRANSPORT_DRY_RUN, TRANSPORT_LOCAL, TRANSPORT_SSH };

struct transport_result {
	int exit_code;	   /* the command's exit status; -1 when it did not run to completion */
	struct sbuf out;   /* stdout, unless streamed to a file */
	size_t out_bytes;  /* stdout bytes (buffered or streamed) */
	struct sbuf err;   /* stderr */
	double duration_s;
	char error[256];   /* transport failure (spawn, timeout), empty otherwise */
	int transient;	   /* 1 when a retry may succeed (timeout, connection lost) */
};

/* ssh: the pool's options (TRANSPORT_SSH only); program: what local mode
 * runs (NULL: "dokku"). */
int transport_init(enum transport_mode mode, const struct ssh_pool_opts *ssh, const char *program, char *err,
		   size_t errlen);
/* Shutdown deadline: running commands return at once with the transient
 * error "cancelled: shutting down" (a local child is killed; an SSH channel
 * is given up); later commands are refused the same way. */
void transport_cancel(void);
/* The umask a local `dokku` runs with (mrprov's own is 077): the one mrprov
 * was started with. */
void transport_child_umask(mode_t mask);
void transport_shutdown(void);
enum transport_mode transport_mode(void);
const char *transport_mode_name(void);
/* Bytes of one command line (the argv joined by single spaces) the transport
 * sends. Over SSH it is one exec request in one SSH packet, and libssh2 1.10
 * refuses a packet of 35000 - 256 bytes or more (MAX_SSH_PACKET_LEN in its
 * transport.c) with an error that reads like a refusal by the server; on
 * the server it becomes SSH_ORIGINAL_COMMAND, which the kernel caps at
 * 128 KiB. One limit for every mode, so a dry-run plan fails where a real
 * run would. */
#define TRANSPORT_MAX_COMMAND (32 * 1024)
/* Bytes a command's stdin may hold (git:from-archive's build context): a
 * bound on what one job holds in memory and sends, far above a generated
 * build context (a Dockerfile, a config template and a script). */
#define TRANSPORT_MAX_INPUT (1024 * 1024)
/* 1 when tok may cross to Dokku as one argument; otherwise 0 and why in reason. */
int transport_token_ok(const char *tok, size_t len, const char **reason);
/* Runs argv (argc tokens). timeout_s <= 0: no timeout. out_fd >= 0: stdout
 * is written there (backups) instead of buffered. Always fills res;
 * returns 0 when the command ran (whatever its exit code), -1 otherwise. */
int transport_run(const char *const *argv, int argc, double timeout_s, int out_fd, struct transport_result *res);
/* The same, with in_len bytes of in on the command's stdin, then its end
 * (in == NULL: as transport_run, stdin is /dev/null locally and left open
 * over SSH). More than TRANSPORT_MAX_INPUT bytes are refused before
 * anything is sent; a dry run sends nothing. */
int transport_run_input(const char *const *argv, int argc, const char *in, size_t in_len, double timeout_s,
			int out_fd, struct transport_result *res);
/* The same on the named Dokku host (NULL: the implicit host, "default");
 * a host that is not configured is an error (res->error). */
int transport_run_on(const char *host, const char *const *argv, int argc, const char *in, size_t in_len,
		     double timeout_s, int out_fd, struct transport_result *res);
/* The same with the command's stdin read from in_fd, a file, from where it
 * stands to its end (streamed: no size bound; a move's exports, lua/move.lua). */
int transport_run_fd_on(const char *host, const char *const *argv, int argc, int in_fd, double timeout_s,
			int out_fd, struct transport_result *res);

/* ---- named hosts (SSH mode; issue 16) ----
 * With no host files the one host is DOKKU_HOST, named "default" (the
 * implicit host). Lua (boot.lua, through mrprov.dokku) hands the host files'
 * connections over once a configuration generation loaded. */
#define TRANSPORT_DEFAULT_HOST "default"
#define TRANSPORT_MAX_HOSTS 64
#define TRANSPORT_HOST_NAME_MAX 63

struct transport_host {
	const char *name; /* [a-z][a-z0-9_-]*, at most TRANSPORT_HOST_NAME_MAX */
	const char *host;
	int port;
	const char *user;
	const char *key_path;
	const char *known_hosts;
};

int transport_host_name_ok(const char *name);
/* Makes list the configured hosts (n == 0: the implicit host alone, if
 * DOKKU_HOST is set). Checked whole first (names, fields, in SSH mode the
 * key file's mode): on error nothing changes. A host whose connection
 * changed gets a new pool on next use; the old one is kept until shutdown. */
int transport_hosts_set(const struct transport_host *list, int n, char *err, size_t errlen);
/* The configured hosts' names (dry-run and local: "default"); their count. */
int transport_hosts(char (*names)[TRANSPORT_HOST_NAME_MAX + 1], int max);
/* 0 when the host answered within max_age_s and a connection to it is up
 * (else `version` is asked, 5 s at most), -1 with the reason otherwise.
 * Dry-run: always 0. */
int transport_host_check(const char *name, double max_age_s, char *reason, size_t reasonlen);
/* For /health: 0 when at least one configured host passes
 * transport_host_check, -1 with the last reason otherwise. */
int transport_check(double max_age_s, char *reason, size_t reasonlen);
void transport_result_free(struct transport_result *res);

#endif
