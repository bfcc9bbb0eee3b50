/* config: the service's settings from the environment and `.env` (SPEC §3).
 * Owns parsing and generic validation (numbers, levels, addresses, files).
 * Product-level values (domains, images, e-mail) are validated by Lua at boot.
 * Never logs the values of secrets. */
#ifndef MRPROV_CONFIG_H
#define MRPROV_CONFIG_H

#include <stddef.h>

#define CONFIG_MAX_KEYS 16
/* The timeout settings' defaults, in seconds: the defaults config_vars
 * lists (and Lua reads through sys.config()) and the fallback of any module
 * handed no value. One definition each. */
#define CONFIG_DOKKU_COMMAND_TIMEOUT_S 900
#define CONFIG_SUPABASE_TIMEOUT_S 15
#define CONFIG_SHUTDOWN_TIMEOUT_S 30
#define CONFIG_HTTP_REQUEST_TIMEOUT_S 10
/* Connections the HTTP server holds at once (one thread each). */
#define HTTP_MAX_CONNECTIONS 512

struct config {
	const char *host;
	int port;
	int log_level;
	char *api_keys[CONFIG_MAX_KEYS];
	int n_api_keys;
	const char *webhook_secret;
	const char *dokku_host; /* NULL: dry-run */
	int dokku_port;
	const char *dokku_user;
	const char *dokku_ssh_key_path;
	const char *dokku_known_hosts;
	int dokku_host_key_tofu; /* DOKKU_HOST_KEY_TOFU: record an unknown host's key */
	int dokku_pool_size;
	int command_timeout; /* seconds per Dokku command */
	const char *supabase_url;
	const char *supabase_service_key;
	int supabase_timeout; /* seconds per PostgREST request */
	const char *base_domain;
	const char *letsencrypt_email;
	const char *backend_image;
	const char *frontend_image;
	const char *tuwunel_image;
	const char *synapse_image;
	const char *instance_data_base;
	const char *backup_dir;
	const char *state_db;
	const char *tiers_dir;
	const char *profiles_dir; /* PROFILES_DIR: instance layouts (profiles/<name>.lua) */
	const char *profile;	  /* PROFILE: the layout of a tier that names none */
	const char *hooks_dir;
	const char *hosts_dir; /* HOSTS_DIR: Dokku host files (lua/hosts.lua) */
	const char *lua_dir;
	const char *ui_dir;   /* UI_DIR: the console's files, served at /ui */
	const char *docs_dir; /* DOCS_DIR: api.html and its assets, served at /docs */
	int workers;
	int shutdown_timeout; /* seconds from SIGTERM to exit (SHUTDOWN_TIMEOUT) */
	/* Seconds a connection has to deliver a request's headers and body,
	 * from its accept or the end of its previous answer (HTTP_REQUEST_TIMEOUT). */
	int http_request_timeout;
	int http_max_per_ip; /* connections at once from one address; 0: no limit */
	/* Readiness (lua/health.lua): seconds an instance has to answer its
	 * health check after a deploy (0: no check), seconds per check, and
	 * seconds between re-checks of an unhealthy instance (0: none). */
	int health_timeout;
	int health_request_timeout;
	int health_recheck_interval;
	/* Deprovisions one sweep's subscriptions sync may start (0: none). */
	int reconcile_max_destructive;
	/* The drift sweep (lua/reconcile.lua): seconds between sweeps (0: off)
	 * and Dokku probes per second at most; RECONCILE_MODE is checked here
	 * and read by Lua. */
	int reconcile_interval;
	int reconcile_probes_per_second;
	int evacuate_parallel; /* EVACUATE_PARALLEL: moves out of one host at a time */
	/* PROVISIONER_SECRET bytes; see config_load_secret. */
	unsigned char *secret;
	size_t secret_len;
};

/* config_var.secret: 0 = plain; CONFIG_VAR_SECRET = mrprov's own credential
 * (Lua sees only whether it is set); CONFIG_VAR_INSTANCE_SECRET = a secret
 * mrprov hands to instances (Lua sees whether it is set, and its value only
 * through sys.instance_secret, which the desired state masks everywhere);
 * CONFIG_VAR_CLIENT_SECRET = a credential mrprov's Lua sends to an outside
 * API (its value only through sys.client_secret; never handed to an
 * instance). */
#define CONFIG_VAR_SECRET 1
#define CONFIG_VAR_INSTANCE_SECRET 2
#define CONFIG_VAR_CLIENT_SECRET 3

/* One entry per variable, for `.env.example`-style listings and for Lua. */
struct config_var {
	const char *name;
	const char *def;
	int secret;
};
extern const struct config_var config_vars[];

/* Reads `.env` (path may be NULL: no file) then the environment (which wins).
 * On error returns -1 with one line naming the variable in err. */
int config_load(struct config *c, const char *dotenv_path, char *err, size_t errlen);
/* The raw string value of a variable after loading (default applied), or NULL. */
const char *config_get(const char *name);
/* Loads PROVISIONER_SECRET, or data/secret (created with mode 0600 when create
 * is set; otherwise an ephemeral random secret is used). */
int config_load_secret(struct config *c, int create, char *err, size_t errlen);
/* 1 when host is a loopback address or name. */
int config_host_is_loopback(const char *host);
/* Parses `.env` text; calls set(name, value) for each assignment. Returns 0 or
 * the 1-based line number of the first malformed line. Exposed for tests. */
int config_parse_dotenv(const char *text, size_t len,
			void (*set)(void *ud, const char *name, const char *value), void *ud);
void config_free(struct config *c);

#endif
