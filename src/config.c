/* config: environment + `.env`, defaults and validation (SPEC §3). */
#include "config.h"
#include "util/crypto.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/xalloc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STR_(x) #x
#define STR(x) STR_(x)

const struct config_var config_vars[] = {
	{ "HOST", "127.0.0.1", 0 },
	{ "PORT", "8002", 0 },
	{ "LOG_LEVEL", "INFO", 0 },
	{ "PROVISIONER_API_KEYS", NULL, CONFIG_VAR_SECRET },
	{ "WEBHOOK_SECRET", NULL, CONFIG_VAR_SECRET },
	{ "DOKKU_HOST", NULL, 0 },
	{ "DOKKU_PORT", "22", 0 },
	{ "DOKKU_USER", "dokku", 0 },
	{ "DOKKU_SSH_KEY_PATH", "ssh/dokku_key", 0 },
	{ "DOKKU_KNOWN_HOSTS", "ssh/known_hosts", 0 },
	{ "DOKKU_HOST_KEY_TOFU", "false", 0 },
	{ "DOKKU_POOL_SIZE", "4", 0 },
	{ "DOKKU_COMMAND_TIMEOUT", STR(CONFIG_DOKKU_COMMAND_TIMEOUT_S), 0 },
	{ "SUPABASE_URL", NULL, 0 },
	{ "SUPABASE_SERVICE_KEY", NULL, CONFIG_VAR_SECRET },
	{ "SUPABASE_TIMEOUT", STR(CONFIG_SUPABASE_TIMEOUT_S), 0 },
	/* Handed to instances (their dashboard's Supabase auth), never to mrprov's own client. */
	{ "SUPABASE_ANON_KEY", NULL, CONFIG_VAR_INSTANCE_SECRET },
	/* Model-provider keys every instance gets (secret values of its app). */
	{ "OPENROUTER_API_KEY", NULL, CONFIG_VAR_INSTANCE_SECRET },
	{ "OPENAI_API_KEY", NULL, CONFIG_VAR_INSTANCE_SECRET },
	{ "ANTHROPIC_API_KEY", NULL, CONFIG_VAR_INSTANCE_SECRET },
	{ "GOOGLE_API_KEY", NULL, CONFIG_VAR_INSTANCE_SECRET },
	{ "DEEPSEEK_API_KEY", NULL, CONFIG_VAR_INSTANCE_SECRET },
	/* Per-instance OpenRouter keys (lua/model_key.lua): the management key
	 * goes only into the Authorization header of OpenRouter's key API. */
	{ "OPENROUTER_MANAGEMENT_KEY", NULL, CONFIG_VAR_CLIENT_SECRET },
	{ "OPENROUTER_API_BASE", "https://openrouter.ai/api/v1", 0 },
	{ "BASE_DOMAIN", "mindroom.chat", 0 },
	{ "LETSENCRYPT_EMAIL", NULL, 0 },
	{ "MINDROOM_BACKEND_IMAGE", "mindroom/backend:latest", 0 },
	{ "MINDROOM_FRONTEND_IMAGE", "mindroom/frontend:latest", 0 },
	{ "TUWUNEL_IMAGE", "ghcr.io/tulir/tuwunel:latest", 0 },
	/* Pinned: an instance must not change server version on a redeploy. */
	{ "SYNAPSE_IMAGE", "matrixdotorg/synapse:v1.135.0", 0 },
	/* The MindRoom image of the mindroom profile, a release tag (git tag
	 * v2026.8.105 of mindroom-ai/mindroom; .github/workflows/build-mindroom.yml
	 * publishes each release tag), never latest. */
	{ "MINDROOM_IMAGE", "ghcr.io/mindroom-ai/mindroom:v2026.8.105", 0 },
	{ "INSTANCE_DATA_BASE", "/var/lib/dokku/data/storage", 0 },
	{ "BACKUP_DIR", "./data/backups", 0 },
	{ "STATE_DB", "./data/mrprov.db", 0 },
	{ "TIERS_DIR", "./tiers", 0 },
	{ "PROFILES_DIR", "./profiles", 0 },
	{ "PROFILE", "mindroom", 0 },
	{ "HOOKS_DIR", "./hooks", 0 },
	/* Dokku hosts (hosts/<name>.lua, lua/hosts.lua); none: DOKKU_HOST alone. */
	{ "HOSTS_DIR", "./hosts", 0 },
	{ "LUA_DIR", "./lua", 0 },
	/* The web console's files (served at /ui) and the documentation (at
	 * /docs): settings, so an installed package points them at share/. */
	{ "UI_DIR", "./ui", 0 },
	{ "DOCS_DIR", "./docs", 0 },
	/* Where an installed mrprov's data is (lua/, profiles/, tiers/, hooks/
	 * ...); unset: found beside the binary (see resolve_shared_dirs). */
	{ "SHARE_DIR", NULL, 0 },
	{ "WORKERS", "4", 0 },
	{ "SHUTDOWN_TIMEOUT", STR(CONFIG_SHUTDOWN_TIMEOUT_S), 0 },
	{ "HTTP_REQUEST_TIMEOUT", STR(CONFIG_HTTP_REQUEST_TIMEOUT_S), 0 },
	{ "HTTP_MAX_CONNECTIONS_PER_IP", "32", 0 },
	{ "HEALTH_URL_TEMPLATE", NULL, 0 },
	{ "HEALTH_TIMEOUT_SECONDS", "300", 0 },
	{ "HEALTH_REQUEST_TIMEOUT", "5", 0 },
	{ "HEALTH_RECHECK_INTERVAL", "300", 0 },
	/* Deprovisions one sweep's subscriptions sync may start (lua/subscriptions_sync.lua). */
	{ "RECONCILE_MAX_DESTRUCTIVE", "3", 0 },
	/* The drift sweep (lua/reconcile.lua): seconds between sweeps (0: no
	 * background sweep), report or repair, and Dokku probes per second. */
	{ "RECONCILE_INTERVAL", "900", 0 },
	{ "RECONCILE_MODE", "report", 0 },
	{ "RECONCILE_PROBES_PER_SECOND", "1000", 0 },
	/* Moves out of one Dokku host at a time (lua/move.lua: an evacuation's). */
	{ "EVACUATE_PARALLEL", "2", 0 },
	{ "PROVISIONER_SECRET", NULL, CONFIG_VAR_SECRET },
	{ NULL, NULL, 0 },
};

#define NVARS (sizeof config_vars / sizeof config_vars[0] - 1)

/* Values after loading; index matches config_vars. Owned here for the process's life. */
static char *values[NVARS];

static int var_index(const char *name)
{
	for (size_t i = 0; i < NVARS; i++)
		if (strcmp(config_vars[i].name, name) == 0)
			return (int)i;
	return -1;
}

const char *config_get(const char *name)
{
	int i = var_index(name);
	return i < 0 ? NULL : values[i];
}

static void set_value(void *ud, const char *name, const char *value)
{
	(void)ud;
	int i = var_index(name);
	if (i < 0)
		return; /* unknown names in .env are ignored, as in the environment */
	free(values[i]);
	values[i] = xstrdup(value);
}

/* Unquotes a .env value in place: '...' literal, "..." with \n \t \\ \" escapes,
 * bare values end at an unquoted " #" comment and are trimmed. -1 when malformed. */
static int unquote(char *v)
{
	size_t n = strlen(v);
	if (v[0] == '\'' || v[0] == '"') {
		char q = v[0];
		char *end = strrchr(v + 1, q);
		if (!end)
			return -1;
		for (char *p = end + 1; *p; p++) {
			if (*p == '#')
				break;
			if (!isspace((unsigned char)*p))
				return -1;
		}
		*end = '\0';
		if (q == '\'') {
			memmove(v, v + 1, strlen(v + 1) + 1);
			return 0;
		}
		char *w = v;
		for (char *r = v + 1; *r; r++) {
			if (*r == '\\' && r[1]) {
				r++;
				*w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r == 'r' ? '\r' : *r;
			} else {
				*w++ = *r;
			}
		}
		*w = '\0';
		return 0;
	}
	char *hash = strstr(v, " #");
	if (hash)
		*hash = '\0';
	n = strlen(v);
	while (n && isspace((unsigned char)v[n - 1]))
		v[--n] = '\0';
	return 0;
}

int config_parse_dotenv(const char *text, size_t len,
			void (*set)(void *ud, const char *name, const char *value), void *ud)
{
	int lineno = 0;
	size_t pos = 0;
	while (pos < len) {
		size_t end = pos;
		while (end < len && text[end] != '\n')
			end++;
		lineno++;
		size_t l = end - pos;
		char *line = xmalloc(l + 1);
		memcpy(line, text + pos, l);
		line[l] = '\0';
		pos = end + 1;
		if (l && line[l - 1] == '\r')
			line[--l] = '\0';

		char *p = line;
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '\0' || *p == '#') {
			free(line);
			continue;
		}
		if (strncmp(p, "export ", 7) == 0)
			p += 7;
		while (isspace((unsigned char)*p))
			p++;
		char *eq = strchr(p, '=');
		int bad = !eq || eq == p;
		if (!bad) {
			char *k = p;
			char *kend = eq;
			while (kend > k && isspace((unsigned char)kend[-1]))
				kend--;
			*kend = '\0';
			for (char *c = k; *c && !bad; c++)
				bad = !(isalnum((unsigned char)*c) || *c == '_');
			if (isdigit((unsigned char)*k))
				bad = 1;
			char *v = eq + 1;
			while (isspace((unsigned char)*v))
				v++;
			if (!bad && unquote(v) == 0)
				set(ud, k, v);
			else
				bad = 1;
		}
		free(line);
		if (bad)
			return lineno;
	}
	return 0;
}

static int parse_int(const char *name, const char *s, int lo, int hi, int *out, char *err, size_t errlen)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		snprintf(err, errlen, "%s: expected an integer from %d to %d, got \"%.40s\"", name, lo, hi, s);
		return -1;
	}
	*out = (int)v;
	return 0;
}

int config_host_is_loopback(const char *host)
{
	if (strcmp(host, "localhost") == 0)
		return 1;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	struct in6_addr a6;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return 0;
}

static int split_keys(struct config *c, const char *list, char *err, size_t errlen)
{
	const char *p = list;
	while (*p) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		const char *s = p;
		while (*p && *p != ',')
			p++;
		const char *e = p;
		while (e > s && isspace((unsigned char)e[-1]))
			e--;
		if (e == s)
			continue;
		if (c->n_api_keys == CONFIG_MAX_KEYS) {
			snprintf(err, errlen, "PROVISIONER_API_KEYS: at most %d keys", CONFIG_MAX_KEYS);
			return -1;
		}
		if (e - s < 16)
			log_warn("PROVISIONER_API_KEYS: key %d is shorter than 16 characters; use long random keys",
				 c->n_api_keys + 1);
		c->api_keys[c->n_api_keys++] = xstrndup(s, (size_t)(e - s));
	}
	return 0;
}

#ifndef MRPROV_DATADIR
#define MRPROV_DATADIR "/usr/local/share/mrprov"
#endif
#ifndef MRPROV_DATADIR_FROM_BIN
#define MRPROV_DATADIR_FROM_BIN "../share/mrprov"
#endif

/* The settings whose default names a directory of the source tree. Left at
 * that default where the working directory has no such directory, they
 * name the installed copy instead: SHARE_DIR/<name> when SHARE_DIR is set,
 * else the first that exists of <the binary's directory>/../share/mrprov/
 * <name> (relocatable: an install under any prefix, or unpacked anywhere)
 * and the compiled-in MRPROV_DATADIR/<name>. Names not (yet) among
 * config_vars are skipped. */
static const char *const shared_dirs[] = { "LUA_DIR", "TIERS_DIR", "PROFILES_DIR", "HOOKS_DIR", "UI_DIR", "DOCS_DIR",
					   NULL };

static int is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The directory of the running binary into out ("" when unknown). */
static void exe_dir(char *out, size_t outlen)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
	out[0] = '\0';
	if (n <= 0)
		return;
	path[n] = '\0';
	char *slash = strrchr(path, '/');
	if (slash && (size_t)(slash - path) < outlen)
		snprintf(out, outlen, "%.*s", (int)(slash - path), path);
}

/* out = a "/" b; 0, or -1 when it does not fit (the candidate is skipped). */
static int join(char *out, size_t outlen, const char *a, const char *b)
{
	int n = snprintf(out, outlen, "%s/%s", a, b);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static void resolve_shared_dirs(void)
{
	char bin[PATH_MAX] = "", up[PATH_MAX], cand[PATH_MAX], real[PATH_MAX];
	const char *share = config_get("SHARE_DIR");
	for (int k = 0; shared_dirs[k]; k++) {
		int i = var_index(shared_dirs[k]);
		if (i < 0 || !config_vars[i].def || strcmp(values[i], config_vars[i].def) != 0)
			continue; /* given: taken as it is */
		const char *def = config_vars[i].def;
		const char *base = strncmp(def, "./", 2) == 0 ? def + 2 : def;
		const char *pick = NULL;
		if (share) {
			pick = join(cand, sizeof cand, share, base) == 0 ? cand : NULL;
		} else if (!is_dir(def)) { /* else the source tree: as it always was */
			if (!bin[0])
				exe_dir(bin, sizeof bin);
			if (bin[0] && join(up, sizeof up, bin, MRPROV_DATADIR_FROM_BIN) == 0 &&
			    join(cand, sizeof cand, up, base) == 0 && is_dir(cand))
				pick = cand;
			else if (join(cand, sizeof cand, MRPROV_DATADIR, base) == 0 && is_dir(cand))
				pick = cand;
			/* Without the "bin/.." detour in what check and the logs print. */
			if (pick && realpath(cand, real))
				pick = real;
		}
		if (!pick)
			continue; /* nothing installed: the error names ./<name> */
		free(values[i]);
		values[i] = xstrdup(pick);
	}
}

/* Defaults, then `.env`, then the environment (which wins) into values[]. */
static int load_values(const char *dotenv_path, char *err, size_t errlen)
{
	for (size_t i = 0; i < NVARS; i++) {
		free(values[i]);
		values[i] = config_vars[i].def ? xstrdup(config_vars[i].def) : NULL;
	}
	if (dotenv_path) {
		char *text;
		size_t len;
		if (fs_read_file(dotenv_path, &text, &len) == 0) {
			int bad = config_parse_dotenv(text, len, set_value, NULL);
			free(text);
			if (bad) {
				snprintf(err, errlen, "%s:%d: expected NAME=value", dotenv_path, bad);
				return -1;
			}
		}
	}
	for (size_t i = 0; i < NVARS; i++) {
		const char *v = getenv(config_vars[i].name);
		if (v)
			set_value(NULL, config_vars[i].name, v);
	}
	/* An empty value means unset for the optional variables. */
	for (size_t i = 0; i < NVARS; i++) {
		if (values[i] && !*values[i] && !config_vars[i].def) {
			free(values[i]);
			values[i] = NULL;
		}
		if (config_vars[i].def && (!values[i] || !*values[i])) {
			snprintf(err, errlen, "%s: must not be empty", config_vars[i].name);
			return -1;
		}
	}
	resolve_shared_dirs();
	return 0;
}

static int parse_numbers(struct config *c, char *err, size_t errlen)
{
	static const struct {
		const char *name;
		int lo, hi;
		size_t offset;
	} ints[] = {
		{ "PORT", 0, 65535, offsetof(struct config, port) },
		{ "DOKKU_PORT", 1, 65535, offsetof(struct config, dokku_port) },
		{ "DOKKU_POOL_SIZE", 1, 64, offsetof(struct config, dokku_pool_size) },
		{ "WORKERS", 1, 64, offsetof(struct config, workers) },
		{ "SHUTDOWN_TIMEOUT", 1, 3600, offsetof(struct config, shutdown_timeout) },
		{ "DOKKU_COMMAND_TIMEOUT", 1, 86400, offsetof(struct config, command_timeout) },
		{ "SUPABASE_TIMEOUT", 1, 600, offsetof(struct config, supabase_timeout) },
		{ "HTTP_REQUEST_TIMEOUT", 1, 600, offsetof(struct config, http_request_timeout) },
		{ "HTTP_MAX_CONNECTIONS_PER_IP", 0, HTTP_MAX_CONNECTIONS, offsetof(struct config, http_max_per_ip) },
		{ "HEALTH_TIMEOUT_SECONDS", 0, 86400, offsetof(struct config, health_timeout) },
		{ "HEALTH_REQUEST_TIMEOUT", 1, 120, offsetof(struct config, health_request_timeout) },
		{ "HEALTH_RECHECK_INTERVAL", 0, 86400, offsetof(struct config, health_recheck_interval) },
		{ "RECONCILE_MAX_DESTRUCTIVE", 0, 1000, offsetof(struct config, reconcile_max_destructive) },
		{ "RECONCILE_INTERVAL", 0, 604800, offsetof(struct config, reconcile_interval) },
		{ "RECONCILE_PROBES_PER_SECOND", 1, 100000, offsetof(struct config, reconcile_probes_per_second) },
		{ "EVACUATE_PARALLEL", 1, 64, offsetof(struct config, evacuate_parallel) },
	};
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
		int *out = (int *)(void *)((char *)c + ints[i].offset);
		if (parse_int(ints[i].name, config_get(ints[i].name), ints[i].lo, ints[i].hi, out, err, errlen) < 0)
			return -1;
	}
	c->log_level = log_level_parse(config_get("LOG_LEVEL"));
	if (c->log_level < 0) {
		snprintf(err, errlen, "LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got \"%.20s\"",
			 config_get("LOG_LEVEL"));
		return -1;
	}
	return 0;
}

/* HOST is an address; anything but loopback needs API keys. */
static int check_listener(struct config *c, char *err, size_t errlen)
{
	struct in6_addr a;
	if (strcmp(c->host, "localhost") != 0 && inet_pton(AF_INET, c->host, &a) != 1 &&
	    inet_pton(AF_INET6, c->host, &a) != 1) {
		snprintf(err, errlen, "HOST: expected an IPv4 or IPv6 address, got \"%.60s\"", c->host);
		return -1;
	}
	if (config_get("PROVISIONER_API_KEYS") && split_keys(c, config_get("PROVISIONER_API_KEYS"), err, errlen) < 0)
		return -1;
	if (!config_host_is_loopback(c->host) && c->n_api_keys == 0) {
		snprintf(err, errlen, "HOST: %s is not a loopback address; set PROVISIONER_API_KEYS first",
			 c->host);
		return -1;
	}
	return 0;
}

/* Recording an unknown host's key on first use trusts whoever answers
 * first: an explicit choice, never a default. */
static int check_tofu(struct config *c, char *err, size_t errlen)
{
	const char *tofu = config_get("DOKKU_HOST_KEY_TOFU");
	if (strcmp(tofu, "true") != 0 && strcmp(tofu, "false") != 0) {
		snprintf(err, errlen, "DOKKU_HOST_KEY_TOFU: expected true or false, got \"%.20s\"", tofu);
		return -1;
	}
	c->dokku_host_key_tofu = strcmp(tofu, "true") == 0;
	return 0;
}

/* RECONCILE_MODE: the sweep reports drift, or also repairs it. */
static int check_reconcile_mode(const char *mode, char *err, size_t errlen)
{
	if (strcmp(mode, "report") == 0 || strcmp(mode, "repair") == 0)
		return 0;
	snprintf(err, errlen, "RECONCILE_MODE: expected report or repair, got \"%.20s\"", mode);
	return -1;
}

static int check_supabase_pair(const struct config *c, char *err, size_t errlen)
{
	if (!c->supabase_url == !c->supabase_service_key)
		return 0;
	snprintf(err, errlen, "%s: must be set together with %s",
		 c->supabase_url ? "SUPABASE_SERVICE_KEY" : "SUPABASE_URL",
		 c->supabase_url ? "SUPABASE_URL" : "SUPABASE_SERVICE_KEY");
	return -1;
}

/* Over SSH the key file must exist and be private to this user. */
static int check_ssh_key(const struct config *c, char *err, size_t errlen)
{
	if (!c->dokku_host || strcmp(c->dokku_host, "local") == 0)
		return 0;
	struct stat st;
	if (stat(c->dokku_ssh_key_path, &st) < 0) {
		snprintf(err, errlen, "DOKKU_SSH_KEY_PATH: cannot read %s: %s", c->dokku_ssh_key_path,
			 strerror(errno));
		return -1;
	}
	if (st.st_mode & 0077) {
		snprintf(err, errlen, "DOKKU_SSH_KEY_PATH: %s has mode %04o; it must be 0600 or narrower",
			 c->dokku_ssh_key_path, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

/* The string settings, pointing into values[]. */
static void take_strings(struct config *c)
{
	c->host = config_get("HOST");
	c->webhook_secret = config_get("WEBHOOK_SECRET");
	c->dokku_host = config_get("DOKKU_HOST");
	c->dokku_user = config_get("DOKKU_USER");
	c->dokku_ssh_key_path = config_get("DOKKU_SSH_KEY_PATH");
	c->dokku_known_hosts = config_get("DOKKU_KNOWN_HOSTS");
	c->supabase_url = config_get("SUPABASE_URL");
	c->supabase_service_key = config_get("SUPABASE_SERVICE_KEY");
	c->base_domain = config_get("BASE_DOMAIN");
	c->letsencrypt_email = config_get("LETSENCRYPT_EMAIL");
	c->backend_image = config_get("MINDROOM_BACKEND_IMAGE");
	c->frontend_image = config_get("MINDROOM_FRONTEND_IMAGE");
	c->tuwunel_image = config_get("TUWUNEL_IMAGE");
	c->synapse_image = config_get("SYNAPSE_IMAGE");
	c->instance_data_base = config_get("INSTANCE_DATA_BASE");
	c->backup_dir = config_get("BACKUP_DIR");
	c->state_db = config_get("STATE_DB");
	c->tiers_dir = config_get("TIERS_DIR");
	c->profiles_dir = config_get("PROFILES_DIR");
	c->profile = config_get("PROFILE");
	c->hooks_dir = config_get("HOOKS_DIR");
	c->hosts_dir = config_get("HOSTS_DIR");
	c->lua_dir = config_get("LUA_DIR");
	c->ui_dir = config_get("UI_DIR");
	c->docs_dir = config_get("DOCS_DIR");
}

/* A profile is a file name under PROFILES_DIR (boot.lua checks that it is
 * there): 1-32 characters of a-z 0-9 _ -, starting with a letter, the tiers'
 * name rule (lua/validate.lua tier_name). */
static int check_profile(const struct config *c, char *err, size_t errlen)
{
	const char *s = c->profile;
	size_t n = strlen(s);
	int ok = n >= 1 && n <= 32 && s[0] >= 'a' && s[0] <= 'z';
	for (size_t i = 0; ok && i < n; i++)
		ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-';
	if (!ok) {
		snprintf(err, errlen, "PROFILE: expected 1-32 characters of a-z 0-9 _ -, starting with a letter, got \"%.40s\"",
			 s);
		return -1;
	}
	return 0;
}

int config_load(struct config *c, const char *dotenv_path, char *err, size_t errlen)
{
	memset(c, 0, sizeof *c);
	if (load_values(dotenv_path, err, errlen) < 0)
		return -1;
	take_strings(c);
	/* The first bad setting is reported, in this order. */
	if (parse_numbers(c, err, errlen) < 0 || check_listener(c, err, errlen) < 0 || check_tofu(c, err, errlen) < 0 ||
	    check_reconcile_mode(config_get("RECONCILE_MODE"), err, errlen) < 0 ||
	    check_supabase_pair(c, err, errlen) < 0 || check_profile(c, err, errlen) < 0 ||
	    check_ssh_key(c, err, errlen) < 0)
		return -1;
	return 0;
}

/* data/secret lives beside the state database. */
static void secret_path(const struct config *c, char *out, size_t outlen)
{
	const char *slash = strrchr(c->state_db, '/');
	if (slash)
		snprintf(out, outlen, "%.*s/secret", (int)(slash - c->state_db), c->state_db);
	else
		snprintf(out, outlen, "secret");
}

int config_load_secret(struct config *c, int create, char *err, size_t errlen)
{
	const char *env = config_get("PROVISIONER_SECRET");
	if (env) {
		if (strlen(env) < 16) {
			snprintf(err, errlen, "PROVISIONER_SECRET: must be at least 16 characters");
			return -1;
		}
		c->secret = (unsigned char *)xstrdup(env);
		c->secret_len = strlen(env);
		return 0;
	}
	char path[PATH_MAX];
	secret_path(c, path, sizeof path);
	char *text;
	size_t len;
	if (fs_read_file(path, &text, &len) == 0) {
		while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
			text[--len] = '\0';
		if (len < 16) {
			free(text);
			snprintf(err, errlen, "PROVISIONER_SECRET: %s holds fewer than 16 characters", path);
			return -1;
		}
		c->secret = (unsigned char *)text;
		c->secret_len = len;
		return 0;
	}
	unsigned char raw[32];
	if (crypto_random(raw, sizeof raw) < 0) {
		snprintf(err, errlen, "PROVISIONER_SECRET: no randomness available");
		return -1;
	}
	char *hex = xmalloc(65);
	crypto_hex(raw, sizeof raw, hex);
	c->secret = (unsigned char *)hex;
	c->secret_len = 64;
	if (!create)
		return 0; /* ephemeral: commands without side effects must not write files */
	if (fs_mkdirs(path, 0700, 0) < 0) {
		snprintf(err, errlen, "PROVISIONER_SECRET: cannot create the directory of %s: %s", path,
			 strerror(errno));
		return -1;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, hex, 64) != 64 || write(fd, "\n", 1) != 1) {
		snprintf(err, errlen, "PROVISIONER_SECRET: cannot write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	log_info("generated PROVISIONER_SECRET into %s (mode 0600)", path);
	return 0;
}

void config_free(struct config *c)
{
	for (int i = 0; i < c->n_api_keys; i++)
		free(c->api_keys[i]);
	if (c->secret) {
		memset(c->secret, 0, c->secret_len);
		free(c->secret);
	}
	memset(c, 0, sizeof *c);
}
