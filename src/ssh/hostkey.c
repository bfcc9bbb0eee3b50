/* ssh_pool host-key checking: which key types are offered for a host, the
 * server's key against the known_hosts file (recorded on first use only with
 * DOKKU_HOST_KEY_TOFU), and why a restricted handshake failed. */
#define _GNU_SOURCE
#include "ssh/pool_internal.h"
#include "util/crypto.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
		snprintf(err, errlen, "DOKKU_KNOWN_HOSTS: cannot read %s: %s", p->known_hosts, ssh_lib_error(s));
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
int ssh_hostkey_restrict(struct ssh_pool *p, LIBSSH2_SESSION *s, unsigned *recorded, int *had_entry, char *err,
			 size_t errlen, int *refused)
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
		snprintf(err, errlen, "cannot offer the host-key methods %s: %s", offer, ssh_lib_error(s));
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
	int fd = ssh_tcp_connect(p, err, sizeof err);
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
		snprintf(why, whylen, "%s", ssh_lib_error(s));
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

/* A host with no entry: records the server's key when DOKKU_HOST_KEY_TOFU
 * allows it (and mrprov can use its type). Returns 0 when recorded, -1
 * with err and *refused otherwise. Caller holds kh_lock. */
static int record_first_use(struct ssh_pool *p, LIBSSH2_SESSION *s, LIBSSH2_KNOWNHOSTS *kh, const char *key,
			    size_t len, const struct key_type *kt, const char *name, const char *fp, char *err,
			    size_t errlen, int *refused)
{
	if (!p->tofu || !kt) {
		snprintf(err, errlen,
			 "DOKKU_KNOWN_HOSTS: no key recorded for %s:%d in %s (it offers %s %s); add it with "
			 "ssh-keyscan, or set DOKKU_HOST_KEY_TOFU=true",
			 p->host, p->port, p->known_hosts, name, fp);
		*refused = 1;
		return -1;
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
		return -1;
	}
	log_warn("ssh: recorded the %s key %s of %s in %s on first use (DOKKU_HOST_KEY_TOFU)", name, fp, host,
		 p->known_hosts);
	return 0;
}

/* After the handshake: 0 when the server's key is recorded for the host, or
 * the host has no entry at all and DOKKU_HOST_KEY_TOFU let it be recorded
 * now; -1 with err otherwise (*refused: do not retry). had_entry is what
 * ssh_hostkey_restrict found. */
int ssh_hostkey_check(struct ssh_pool *p, LIBSSH2_SESSION *s, int had_entry, char *err, size_t errlen,
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
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
		rc = record_first_use(p, s, kh, key, len, key_type_of(type), name, fp, err, errlen, refused);
		break;
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
void ssh_hostkey_explain_failure(struct ssh_pool *p, unsigned recorded, char *err, size_t errlen, int *refused)
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
