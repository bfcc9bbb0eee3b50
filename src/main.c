/* mrprov: command-line entry. `serve` wires the subsystems together and
 * waits for signals; `plan`, `check`, `tiers`, `render`, `reconcile` run the same Lua code in a
 * single state without side effects; `version` prints library versions. */
#include "config.h"
#include "dokku/transport.h"
#include "http/server.h"
#include "jobs/jobs.h"
#include "lua/runtime.h"
#include "store/store.h"
#include "supabase/libcurl.h"
#include "supabase/outbox.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/notify.h"

#include <dirent.h>
#include <lauxlib.h>
#include <libssh2.h>
#include <errno.h>
#include <lualib.h>
#include <microhttpd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MRPROV_VERSION
#define MRPROV_VERSION "0.0.0"
#endif

#define EXIT_USAGE 2

static const char usage_main[] =
	"usage: mrprov [COMMAND] [OPTIONS]\n"
	"\n"
	"Provisions MindRoom instances on Dokku.\n"
	"\n"
	"commands:\n"
	"  serve      run the HTTP service (the default)\n"
	"  plan       print the Dokku commands a provision would run\n"
	"  check      load every tier, hook and Lua script as serve would\n"
	"  tiers      list the tiers with their agents, tools, models and limits\n"
	"  render     print the config.yaml an instance of a tier gets\n"
	"  reconcile  probe every instance for drift and print the report (--dry-run)\n"
	"  rollout    start, show, pause, resume, abort or roll back a fleet rollout\n"
	"  version    print the versions of mrprov and its libraries\n"
	"\n"
	"Run `mrprov COMMAND --help` for a command's options. Configuration comes from\n"
	"the environment and ./.env, or the file MRPROV_ENV_FILE names (see\n"
	".env.example). Exit codes: 0 success, 1 runtime failure, 2 usage error.\n";

static const char usage_serve[] =
	"usage: mrprov serve\n"
	"\n"
	"Runs the HTTP service on HOST:PORT (default 127.0.0.1:8002). With DOKKU_HOST\n"
	"unset every job is a dry run. SIGHUP reloads tiers, hooks and Lua scripts;\n"
	"SIGTERM stops accepting work, lets running jobs finish and exits 0.\n"
	"With NOTIFY_SOCKET set (systemd, Type=notify) it reports READY=1 once it\n"
	"listens, RELOADING=1 and READY=1 around a reload, and STOPPING=1.\n";

static const char usage_plan[] =
	"usage: mrprov plan --tier T --subscription S [--account A]\n"
	"                   [--matrix tuwunel|synapse] [--domain D] [--json]\n"
	"\n"
	"Prints, one per line, the Dokku commands a provision would run, secrets\n"
	"redacted. Reads the state store if it exists (to reuse an instance's app\n"
	"name) and changes nothing.\n";

static const char usage_check[] =
	"usage: mrprov check\n"
	"\n"
	"Loads every tier, hook and Lua script exactly as serve would and prints what\n"
	"was loaded; exits 1 with file:line: message on the first error.\n";

static const char usage_tiers[] =
	"usage: mrprov tiers [--json]\n"
	"\n"
	"Lists the tiers with their agents, tools, models and limits.\n";

static const char usage_render[] =
	"usage: mrprov render --tier T [--matrix synapse|tuwunel] [--profile P]\n"
	"\n"
	"Prints to stdout exactly the MindRoom config.yaml an instance of tier T gets\n"
	"(without config_overrides): the text the tier's profile (or P) delivers,\n"
	"built by the same code as a provision. Exits 2 for an unknown tier, profile\n"
	"or Matrix server.\n";

static const char usage_reconcile[] =
	"usage: mrprov reconcile --dry-run [--json]\n"
	"\n"
	"Probes every settled instance of the state store on Dokku with the engine's\n"
	"own read-only probes and prints the drift sweep's report: the resources that\n"
	"differ from the desired state with the commands that would fix them (secrets\n"
	"redacted), and the orphans (apps and services named like an instance's that\n"
	"belong to none). Changes nothing: no command but probes and lists is sent,\n"
	"the store is opened read-only, no job is queued. --dry-run is required.\n";

static const char usage_rollout[] =
	"usage: mrprov rollout --list | --show ID | --create JSON|@FILE | --pause ID\n"
	"                      | --resume ID | --abort ID | --rollback ID [--json]\n"
	"\n"
	"Fleet rollouts of a MindRoom image (the requests of /api/v1/rollouts) on the\n"
	"state store at STATE_DB, which must exist: the running service's workers\n"
	"pick the rollout up within a second. --create takes the body of\n"
	"POST /api/v1/rollouts, e.g. '{\"image\": \"ghcr.io/mindroom-ai/mindroom:v2\",\n"
	"\"waves\": [1, \"10%\", \"100%\"], \"parallel\": 4, \"failure_budget\": 2}'.\n";

static const char usage_version[] =
	"usage: mrprov version\n"
	"\n"
	"Prints the version of mrprov and of Lua, libmicrohttpd, libssh2, libcurl and SQLite.\n";

/* A command's options: --name VALUE (or --name=VALUE) when takes_value,
 * else a bare --name flag. Parsed here, before anything is loaded, so a
 * usage error never depends on the configuration; Lua gets the result. */
struct option {
	const char *name; /* without the leading "--" */
	int takes_value;
	int required;
};

#define MAX_OPTIONS 8

/* What a command line gave: opt i of the command's list is set when
 * given[i]; value is NULL for a flag. */
struct parsed {
	int given[MAX_OPTIONS];
	const char *value[MAX_OPTIONS];
};

struct command;
typedef int (*command_fn)(const struct command *cmd, const struct parsed *p);

struct command {
	const char *name;
	const char *usage;
	/* NULL: takes no arguments; else ended by { NULL } */
	const struct option *options;
	command_fn run;
	const char *lua_fn;  /* cli.<lua_fn> for commands that run Lua */
	int reads_store;     /* opens the state store if it exists: 1 read-only, 2 read-write */
	int connects;        /* talks to DOKKU_HOST (read-only probes) */
};

static int wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	return 0;
}

static int usage_error(const char *usage, const char *fmt, const char *arg)
{
	fprintf(stderr, "mrprov: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n\n%s", usage);
	return EXIT_USAGE;
}

/* Matches one argv word against opts; the option's index, or -1. *inline_v
 * gets the text after '=' (NULL without one). */
static int match_option(const struct option *opts, const char *arg, const char **inline_v)
{
	*inline_v = NULL;
	if (strncmp(arg, "--", 2) != 0)
		return -1;
	for (int k = 0; opts[k].name; k++) {
		size_t n = strlen(opts[k].name);
		if (strncmp(arg + 2, opts[k].name, n) != 0)
			continue;
		if (arg[2 + n] == '\0')
			return k;
		if (arg[2 + n] == '=' && opts[k].takes_value) {
			*inline_v = arg + 3 + n;
			return k;
		}
	}
	return -1;
}

/* Parses argv against cmd's options into p; returns why not, or NULL. */
static const char *parse_options(const struct command *cmd, int argc, char **argv, struct parsed *p)
{
	static char msg[160];
	memset(p, 0, sizeof *p);
	if (!cmd->options) {
		if (argc == 0)
			return NULL;
		snprintf(msg, sizeof msg, "%s takes no arguments: %.100s", cmd->name, argv[0]);
		return msg;
	}
	for (int i = 0; i < argc; i++) {
		const char *v;
		int k = match_option(cmd->options, argv[i], &v);
		if (k < 0) {
			snprintf(msg, sizeof msg, "unknown option: %.100s", argv[i]);
			return msg;
		}
		if (cmd->options[k].takes_value && !v && ++i >= argc) {
			snprintf(msg, sizeof msg, "--%s needs a value", cmd->options[k].name);
			return msg;
		}
		p->given[k] = 1;
		p->value[k] = cmd->options[k].takes_value ? (v ? v : argv[i]) : NULL;
	}
	for (int k = 0; cmd->options[k].name; k++) {
		if (cmd->options[k].required && !p->given[k]) {
			snprintf(msg, sizeof msg, "--%s is required", cmd->options[k].name);
			return msg;
		}
	}
	return NULL;
}

/* The settings file: MRPROV_ENV_FILE when set (the packaged unit names
 * /etc/mrprov/mrprov.env; it must be readable), else ./.env if present. */
static const char *env_file(void)
{
	const char *path = getenv("MRPROV_ENV_FILE");
	if (!path || !*path)
		return ".env";
	if (access(path, R_OK) < 0) {
		fprintf(stderr, "mrprov: MRPROV_ENV_FILE: cannot read %s: %s\n", path, strerror(errno));
		return NULL;
	}
	return path;
}

/* 1 when dir holds a *.lua file (not a dot file); a missing dir holds none. */
static int dir_has_lua(const char *dir)
{
	DIR *d = dir ? opendir(dir) : NULL;
	int found = 0;
	if (!d)
		return 0;
	struct dirent *de;
	while (!found && (de = readdir(d))) {
		size_t n = strlen(de->d_name);
		found = de->d_name[0] != '.' && n > 4 && strcmp(de->d_name + n - 4, ".lua") == 0;
	}
	closedir(d);
	return found;
}

static int load_config(struct config *cfg, int connect_ssh)
{
	char err[512];
	const char *dotenv = env_file();
	if (!dotenv)
		return -1;
	if (config_load(cfg, dotenv, err, sizeof err) < 0) {
		fprintf(stderr, "mrprov: %s\n", err);
		return -1;
	}
	log_set_level((enum log_level)cfg->log_level);
	enum transport_mode mode = !cfg->dokku_host ? TRANSPORT_DRY_RUN
				   : strcmp(cfg->dokku_host, "local") == 0 ? TRANSPORT_LOCAL
									     : TRANSPORT_SSH;
	/* Host files (HOSTS_DIR) name the Dokku hosts: SSH even without
	 * DOKKU_HOST, which is then no host at all. */
	if (mode == TRANSPORT_DRY_RUN && dir_has_lua(cfg->hosts_dir))
		mode = TRANSPORT_SSH;
	struct ssh_pool_opts ssh = {
		.host = cfg->dokku_host, .port = cfg->dokku_port, .user = cfg->dokku_user,
		.key_path = cfg->dokku_ssh_key_path, .known_hosts = cfg->dokku_known_hosts,
		.sessions = cfg->dokku_pool_size, .channels = SSH_POOL_CHANNELS, .connect_timeout_s = SSH_POOL_CONNECT_TIMEOUT_S,
		.host_key_tofu = cfg->dokku_host_key_tofu,
	};
	/* Commands without side effects never open connections. */
	if (mode == TRANSPORT_SSH && !connect_ssh)
		mode = TRANSPORT_DRY_RUN;
	if (transport_init(mode, &ssh, NULL, err, sizeof err) < 0) {
		fprintf(stderr, "mrprov: %s\n", err);
		return -1;
	}
	rt_init(cfg, MRPROV_VERSION);
	return 0;
}

static int cmd_version(const struct command *cmd, const struct parsed *p)
{
	(void)cmd;
	(void)p;
	printf("mrprov %s\n", MRPROV_VERSION);
	printf("lua %s.%s.%s\n", LUA_VERSION_MAJOR, LUA_VERSION_MINOR, LUA_VERSION_RELEASE);
	printf("libmicrohttpd %s\n", MHD_get_version());
	printf("libssh2 %s\n", libssh2_version(0));
	const struct libcurl *curl = libcurl_get(NULL, 0);
	printf("libcurl %s\n", curl ? curl->version_info(CURLVERSION_NOW)->version : "not loaded");
	printf("sqlite %s\n", sqlite3_libversion());
	return 0;
}

/* Pushes the parsed options as a table: { name = value | true }. */
static void push_options(lua_State *L, const struct command *cmd, const struct parsed *p)
{
	lua_newtable(L);
	for (int k = 0; cmd->options && cmd->options[k].name; k++) {
		if (!p->given[k])
			continue;
		if (p->value[k])
			lua_pushstring(L, p->value[k]);
		else
			lua_pushboolean(L, 1);
		lua_setfield(L, -2, cmd->options[k].name);
	}
}

/* Runs cli.<lua_fn>(options) in a fresh state, without side effects. */
static int run_cli(const struct command *cmd, const struct parsed *p)
{
	struct config cfg;
	char err[2048];
	if (load_config(&cfg, cmd->connects) < 0)
		return 1;
	/* Commands without side effects use an ephemeral secret if none exists. */
	if (config_load_secret(&cfg, 0, err, sizeof err) < 0) {
		fprintf(stderr, "mrprov: %s\n", err);
		return 1;
	}
	if (cmd->reads_store && access(cfg.state_db, R_OK) == 0 &&
	    store_open(cfg.state_db, cmd->reads_store == 1, err, sizeof err) < 0)
		fprintf(stderr, "mrprov: warning: %s (continuing without it)\n", err);
	lua_State *L = rt_new_state(err, sizeof err);
	if (!L) {
		fprintf(stderr, "mrprov: %s\n", err);
		config_free(&cfg);
		return 1;
	}
	int rc = 1;
	if (rt_getfunc(L, "cli", cmd->lua_fn, err, sizeof err) == 0) {
		push_options(L, cmd, p);
		if (rt_pcall(L, 1, 1, err, sizeof err) == 0) {
			rc = (int)luaL_optinteger(L, -1, 0);
			lua_pop(L, 1);
		} else {
			fprintf(stderr, "mrprov: %s\n", err);
		}
	} else {
		fprintf(stderr, "mrprov: %s\n", err);
	}
	fflush(stdout);
	rt_close_state(L);
	store_close();
	config_free(&cfg);
	return rc;
}

/* Signals are taken by sigwait in the main thread only: blocked before any
 * other thread exists, so every thread inherits the mask. */
static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit makes writes fail with EFBIG (a store error the jobs
	 * report) instead of killing the process. */
	signal(SIGXFSZ, SIG_IGN);
}

static int reload_now(char *err, size_t errlen);

/* Starts the subsystems in order. *jobs_started tells serve_abort whether
 * workers need stopping. -1 with the reason in err. */
static int serve_start(struct config *cfg, int *jobs_started, char *err, size_t errlen)
{
	*jobs_started = 0;
	/* The store first: it refuses a directory other users can read before
	 * the secret is written beside it. */
	if (store_open(cfg->state_db, 0, err, errlen) < 0 || config_load_secret(cfg, 1, err, errlen) < 0)
		return -1;
	if (store_checkpointer_start() < 0) {
		snprintf(err, errlen, "cannot start the store's checkpoint thread");
		return -1;
	}
	if (jobs_start(cfg->workers, err, errlen) < 0)
		return -1;
	*jobs_started = 1;
	if (cfg->supabase_url &&
	    outbox_start(cfg->supabase_url, cfg->supabase_service_key, cfg->supabase_timeout, err, errlen) < 0)
		return -1;
	http_set_reload(reload_now);
	return http_start(cfg, err, errlen);
}

/* One line on stderr; whatever had started is stopped and freed. */
static int serve_abort(struct config *cfg, int jobs_started, const char *err)
{
	fprintf(stderr, "mrprov: %s\n", err);
	if (jobs_started)
		jobs_stop(5);
	outbox_stop();
	transport_shutdown();
	rt_pool_drain();
	store_checkpointer_stop();
	store_close();
	config_free(cfg);
	return 1;
}

static void log_listening(const struct config *cfg)
{
	char fields[256];
	snprintf(fields, sizeof fields,
		 "\"host\":\"%s\",\"port\":%d,\"dokku\":\"%s\",\"workers\":%d,\"version\":\"%s\",\"auth\":%s",
		 cfg->host, http_port(), transport_mode_name(), cfg->workers, MRPROV_VERSION,
		 cfg->n_api_keys ? "true" : "false");
	log_write(LOG_INFO, "listening", fields);
}

/* Queues the drift sweep's next run when RECONCILE_INTERVAL asks for one
 * and none is queued (lua/reconcile.lua schedule): at start and after a
 * reload, which may have changed the interval. */
static void schedule_sweep(void)
{
	char err[1024];
	lua_State *L = rt_acquire(err, sizeof err);
	if (!L) {
		log_error("reconcile: cannot schedule the drift sweep: %s", err);
		return;
	}
	if (rt_getfunc(L, "reconcile", "schedule", err, sizeof err) < 0 || rt_pcall(L, 0, 0, err, sizeof err) < 0)
		log_error("reconcile: cannot schedule the drift sweep: %s", err);
	rt_release(L);
	jobs_notify();
}

/* READY=1 with the generation serving (note: "" or why it is not the newest). */
static void notify_serving(const char *note)
{
	char state[128];
	snprintf(state, sizeof state, "READY=1\nSTATUS=serving configuration generation %u%s", rt_generation(), note);
	notify_send(state);
}

/* Reloads tiers, hooks and Lua scripts, or keeps the running generation
 * when they do not load: SIGHUP, and POST /api/v1/reload (on an HTTP
 * thread; rt_reload serialises the two). */
static int reload_now(char *err, size_t errlen)
{
	double took = 0;
	int rc = 0;
	notify_reloading();
	if (rt_reload(err, errlen, &took) == 0) {
		log_info("reload: configuration generation %u loaded in %.1f ms", rt_generation(), took * 1000);
		schedule_sweep();
	} else {
		log_error("reload refused, generation %u keeps serving: %s", rt_generation(), err);
		rc = -1;
	}
	/* A refused reload still ends the reload: the service keeps serving.
	 * Its reason stays in the log: STATUS is one short line. */
	notify_serving(rc == 0 ? "" : " (last reload refused)");
	return rc;
}

/* Serves until SIGTERM or SIGINT (returned); SIGHUP reloads. */
static int wait_for_stop(const sigset_t *set)
{
	char err[2048];
	int sig = 0;
	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig != SIGHUP)
			return sig;
		reload_now(err, sizeof err);
	}
}

/* Graceful stop within SHUTDOWN_TIMEOUT (B): no new work; jobs stop at
 * their next checkpoint (between waves of Dokku commands) and stay
 * resumable; at B - reserve, commands still running are given up (the
 * resumed job re-probes); the outbox gets a last round; exit 0. */
static void serve_stop(struct config *cfg, int sig)
{
	double bound = cfg->shutdown_timeout, t0 = clock_mono();
	double reserve = bound * 0.3 < 3.0 ? bound * 0.3 : 3.0;
	notify_send("STOPPING=1");
	log_info("shutting down (signal %d): new work refused; running jobs stop at their next step; bound %.0f s",
		 sig, bound);
	http_quiesce();
	jobs_request_stop();
	int busy = jobs_stop(bound - reserve);
	if (busy) {
		log_warn("shutdown: %d job(s) still in a Dokku command after %.1f s; giving it up, the job resumes on "
			 "next start",
			 busy, clock_mono() - t0);
		transport_cancel();
		busy = jobs_stop(reserve / 2);
	}
	int left_behind = busy;
	if (busy)
		log_error("shutdown: %d worker(s) did not stop; leaving them (the store is not closed)", busy);
	double outbox_s = bound - (clock_mono() - t0) - 0.2;
	if (outbox_stop_within(outbox_s > 0.1 ? outbox_s : 0.1) < 0)
		left_behind++;
	http_stop();
	store_checkpointer_stop();
	if (!left_behind) {
		transport_shutdown();
		rt_pool_drain();
		store_close();
		config_free(cfg);
	}
	char fields[64];
	snprintf(fields, sizeof fields, "\"seconds\":%.3f", clock_mono() - t0);
	log_write(LOG_INFO, "stopped", fields);
}

static int cmd_serve(const struct command *cmd, const struct parsed *p)
{
	(void)cmd;
	(void)p;
	sigset_t set;
	block_signals(&set);
	/* Before any thread exists: it edits the environment. */
	notify_init();
	struct config cfg;
	if (load_config(&cfg, 1) < 0)
		return 1;
	/* Settings and scripts are checked before anything is written. */
	char err[2048];
	lua_State *L = rt_acquire(err, sizeof err);
	if (!L) {
		fprintf(stderr, "mrprov: %s\n", err);
		return 1;
	}
	rt_release(L);
	int jobs_started;
	if (serve_start(&cfg, &jobs_started, err, sizeof err) < 0)
		return serve_abort(&cfg, jobs_started, err);
	log_listening(&cfg);
	schedule_sweep();
	/* Ready for the service manager only now: the port is bound and the
	 * first configuration generation loaded (rt_acquire above). */
	notify_serving("");
	serve_stop(&cfg, wait_for_stop(&set));
	return 0;
}

static const struct option plan_options[] = {
	{ "tier", 1, 1 },   { "subscription", 1, 1 }, { "account", 1, 0 },
	{ "matrix", 1, 0 }, { "domain", 1, 0 },	      { "json", 0, 0 },
	{ NULL, 0, 0 },
};

static const struct option render_options[] = {
	{ "tier", 1, 1 },
	{ "matrix", 1, 0 },
	{ "profile", 1, 0 },
	{ NULL, 0, 0 },
};

static const struct option reconcile_options[] = {
	{ "dry-run", 0, 1 },
	{ "json", 0, 0 },
	{ NULL, 0, 0 },
};

static const struct option rollout_options[] = {
	{ "list", 0, 0 },   { "show", 1, 0 },  { "create", 1, 0 },   { "pause", 1, 0 },
	{ "resume", 1, 0 }, { "abort", 1, 0 }, { "rollback", 1, 0 }, { "json", 0, 0 },
	{ NULL, 0, 0 },
};

static const struct option tiers_options[] = {
	{ "json", 0, 0 },
	{ NULL, 0, 0 },
};

/* struct parsed holds MAX_OPTIONS options; a longer list would overrun it. */
_Static_assert(sizeof plan_options / sizeof plan_options[0] - 1 <= MAX_OPTIONS, "plan: too many options");
_Static_assert(sizeof tiers_options / sizeof tiers_options[0] - 1 <= MAX_OPTIONS, "tiers: too many options");
_Static_assert(sizeof reconcile_options / sizeof reconcile_options[0] - 1 <= MAX_OPTIONS,
	       "reconcile: too many options");
_Static_assert(sizeof rollout_options / sizeof rollout_options[0] - 1 <= MAX_OPTIONS, "rollout: too many options");
_Static_assert(sizeof render_options / sizeof render_options[0] - 1 <= MAX_OPTIONS, "render: too many options");

/* The commands: `mrprov NAME [OPTIONS]`; the first is the default. */
static const struct command commands[] = {
	{ "serve", usage_serve, NULL, cmd_serve, NULL, 0, 0 },
	{ "plan", usage_plan, plan_options, run_cli, "plan", 1, 0 },
	{ "check", usage_check, NULL, run_cli, "check", 0, 0 },
	{ "tiers", usage_tiers, tiers_options, run_cli, "tiers", 0, 0 },
	{ "render", usage_render, render_options, run_cli, "render", 0, 0 },
	{ "reconcile", usage_reconcile, reconcile_options, run_cli, "reconcile", 1, 1 },
	{ "rollout", usage_rollout, rollout_options, run_cli, "rollout", 2, 0 },
	{ "version", usage_version, NULL, cmd_version, NULL, 0, 0 },
	{ NULL, NULL, NULL, NULL, NULL, 0, 0 },
};

int main(int argc, char **argv)
{
	/* Everything mrprov creates (the store and its -wal/-shm, the secret,
	 * backups) is for its own user only; a local `dokku` gets the umask
	 * mrprov was started with. */
	transport_child_umask(umask(077));
	const char *name = argc > 1 ? argv[1] : commands[0].name;
	int rest = argc > 1 ? argc - 2 : 0;
	char **args = argc > 1 ? argv + 2 : argv + argc;

	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
		fputs(usage_main, stdout);
		return 0;
	}
	if (strcmp(name, "--version") == 0)
		return cmd_version(NULL, NULL);
	for (const struct command *cmd = commands; cmd->name; cmd++) {
		if (strcmp(name, cmd->name) != 0)
			continue;
		if (wants_help(rest, args)) {
			fputs(cmd->usage, stdout);
			return 0;
		}
		struct parsed p;
		const char *bad = parse_options(cmd, rest, args, &p);
		if (bad)
			return usage_error(cmd->usage, "%s", bad);
		return cmd->run(cmd, &p);
	}
	return usage_error(usage_main, "unknown command: %s", name);
}
