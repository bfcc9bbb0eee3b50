/* Unit tests for src/config.c: .env parsing, defaults, validation messages. */
#include "check.h"
#include "config.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct seen {
	char names[16][32];
	char values[16][128];
	int n;
};

static void record(void *ud, const char *name, const char *value)
{
	struct seen *s = ud;
	snprintf(s->names[s->n], 32, "%s", name);
	snprintf(s->values[s->n], 128, "%s", value);
	s->n++;
}

static int load_with(const char *name, const char *value, char *err, size_t errlen)
{
	struct config c;
	if (name)
		setenv(name, value, 1);
	int rc = config_load(&c, NULL, err, errlen);
	if (name)
		unsetenv(name);
	if (rc == 0)
		config_free(&c);
	return rc;
}

int main(void)
{
	const char *text = "# comment\n"
			   "\n"
			   "PORT=9000\n"
			   "export HOST = 127.0.0.2\n"
			   "A='single # not a comment'\n"
			   "B=\"line1\\nline2\"\n"
			   "C=bare value # trailing comment\r\n"
			   "EMPTY=\n";
	struct seen s = { .n = 0 };
	CHECK(config_parse_dotenv(text, strlen(text), record, &s) == 0);
	CHECK(s.n == 6);
	CHECK_STR(s.names[0], "PORT");
	CHECK_STR(s.values[0], "9000");
	CHECK_STR(s.names[1], "HOST");
	CHECK_STR(s.values[1], "127.0.0.2");
	CHECK_STR(s.values[2], "single # not a comment");
	CHECK_STR(s.values[3], "line1\nline2");
	CHECK_STR(s.values[4], "bare value");
	CHECK_STR(s.values[5], "");

	struct seen t = { .n = 0 };
	CHECK(config_parse_dotenv("OK=1\nnot an assignment\n", 22, record, &t) == 2);
	struct seen u = { .n = 0 };
	CHECK(config_parse_dotenv("1BAD=x\n", 7, record, &u) == 1);
	struct seen w = { .n = 0 };
	CHECK(config_parse_dotenv("Q='unterminated\n", 16, record, &w) == 1);

	/* Defaults. */
	struct config c;
	char err[512] = "";
	CHECK(config_load(&c, NULL, err, sizeof err) == 0);
	CHECK(c.port == 8002);
	CHECK_STR(c.host, "127.0.0.1");
	CHECK(c.dokku_host == NULL);
	CHECK_STR(c.base_domain, "mindroom.chat");
	CHECK_STR(c.state_db, "./data/mrprov.db");
	CHECK(c.workers == 4 && c.dokku_pool_size == 4 && c.dokku_port == 22);
	CHECK(c.http_request_timeout == 10 && c.http_max_per_ip == 32);
	CHECK(c.dokku_host_key_tofu == 0); /* an unknown host key is refused unless asked for */
	CHECK_STR(c.profiles_dir, "./profiles");
	CHECK_STR(c.profile, "mindroom"); /* issue 14: MindRoom's published layout is the default */
	/* The images of an instance are pinned release tags, never latest. */
	CHECK_STR(config_get("MINDROOM_IMAGE"), "ghcr.io/mindroom-ai/mindroom:v2026.8.105");
	CHECK(strstr(config_get("SYNAPSE_IMAGE"), ":latest") == NULL);
	config_free(&c);

	/* Provider keys and the instances' anon key: secrets handed to instances
	 * (Lua sees only whether they are set through sys.config()). */
	for (const struct config_var *v = config_vars; v->name; v++) {
		if (strcmp(v->name, "OPENROUTER_API_KEY") == 0 || strcmp(v->name, "OPENAI_API_KEY") == 0 ||
		    strcmp(v->name, "ANTHROPIC_API_KEY") == 0 || strcmp(v->name, "GOOGLE_API_KEY") == 0 ||
		    strcmp(v->name, "DEEPSEEK_API_KEY") == 0 || strcmp(v->name, "SUPABASE_ANON_KEY") == 0)
			CHECK(v->secret == CONFIG_VAR_INSTANCE_SECRET && v->def == NULL);
		if (strcmp(v->name, "PROVISIONER_SECRET") == 0)
			CHECK(v->secret == CONFIG_VAR_SECRET);
	}

	/* One clear line naming the variable. */
	CHECK(load_with("PORT", "80a", err, sizeof err) < 0 && strstr(err, "PORT:"));
	CHECK(load_with("PORT", "70000", err, sizeof err) < 0 && strstr(err, "PORT:"));
	CHECK(load_with("LOG_LEVEL", "LOUD", err, sizeof err) < 0 && strstr(err, "LOG_LEVEL:"));
	CHECK(load_with("WORKERS", "0", err, sizeof err) < 0 && strstr(err, "WORKERS:"));
	CHECK(load_with("DOKKU_HOST_KEY_TOFU", "yes", err, sizeof err) < 0 && strstr(err, "DOKKU_HOST_KEY_TOFU:"));
	setenv("DOKKU_HOST_KEY_TOFU", "true", 1);
	CHECK(config_load(&c, NULL, err, sizeof err) == 0 && c.dokku_host_key_tofu == 1);
	config_free(&c);
	unsetenv("DOKKU_HOST_KEY_TOFU");
	CHECK(load_with("HOST", "example.com", err, sizeof err) < 0 && strstr(err, "HOST:"));
	CHECK(load_with("HOST", "0.0.0.0", err, sizeof err) < 0 && strstr(err, "PROVISIONER_API_KEYS"));
	CHECK(load_with("SUPABASE_URL", "http://127.0.0.1:1", err, sizeof err) < 0 &&
	      strstr(err, "SUPABASE_SERVICE_KEY"));
	CHECK(load_with("DOKKU_HOST", "dokku.example.com", err, sizeof err) < 0 &&
	      strstr(err, "DOKKU_SSH_KEY_PATH"));
	CHECK(load_with("HTTP_REQUEST_TIMEOUT", "0", err, sizeof err) < 0 && strstr(err, "HTTP_REQUEST_TIMEOUT:"));
	/* the drift sweep's settings (lua/reconcile.lua) */
	CHECK(load_with("RECONCILE_MODE", "fix", err, sizeof err) < 0 && strstr(err, "RECONCILE_MODE:"));
	CHECK(load_with("RECONCILE_INTERVAL", "-1", err, sizeof err) < 0 && strstr(err, "RECONCILE_INTERVAL:"));
	CHECK(load_with("RECONCILE_PROBES_PER_SECOND", "0", err, sizeof err) < 0 &&
	      strstr(err, "RECONCILE_PROBES_PER_SECOND:"));
	CHECK(config_load(&c, NULL, err, sizeof err) == 0 && c.reconcile_interval == 900 &&
	      c.reconcile_probes_per_second == 1000 && strcmp(config_get("RECONCILE_MODE"), "report") == 0);
	config_free(&c);
	setenv("RECONCILE_MODE", "repair", 1);
	setenv("RECONCILE_INTERVAL", "0", 1);
	CHECK(config_load(&c, NULL, err, sizeof err) == 0 && c.reconcile_interval == 0);
	config_free(&c);
	unsetenv("RECONCILE_MODE");
	unsetenv("RECONCILE_INTERVAL");
	CHECK(load_with("HTTP_MAX_CONNECTIONS_PER_IP", "513", err, sizeof err) < 0 &&
	      strstr(err, "HTTP_MAX_CONNECTIONS_PER_IP:"));
	CHECK(load_with("HTTP_MAX_CONNECTIONS_PER_IP", "0", err, sizeof err) == 0);
	CHECK(load_with("LOG_LEVEL", "debug", err, sizeof err) == 0);
	/* The subscriptions sync's guard rail: a count, 0 (never) to 1000. */
	CHECK(load_with("RECONCILE_MAX_DESTRUCTIVE", "-1", err, sizeof err) < 0 && strstr(err, "RECONCILE_MAX_DESTRUCTIVE:"));
	CHECK(load_with("RECONCILE_MAX_DESTRUCTIVE", "1001", err, sizeof err) < 0 && strstr(err, "RECONCILE_MAX_DESTRUCTIVE:"));
	CHECK(load_with("RECONCILE_MAX_DESTRUCTIVE", "three", err, sizeof err) < 0 && strstr(err, "RECONCILE_MAX_DESTRUCTIVE:"));
	CHECK(load_with("RECONCILE_MAX_DESTRUCTIVE", "0", err, sizeof err) == 0);
	CHECK(config_load(&c, NULL, err, sizeof err) == 0 && c.reconcile_max_destructive == 3);
	config_free(&c);
	/* PROFILE names a file under PROFILES_DIR: a plain name, nothing else. */
	CHECK(load_with("PROFILE", "../etc/x", err, sizeof err) < 0 && strstr(err, "PROFILE:"));
	CHECK(load_with("PROFILE", "", err, sizeof err) < 0 && strstr(err, "PROFILE:"));
	CHECK(load_with("PROFILE", "Split", err, sizeof err) < 0 && strstr(err, "PROFILE:"));
	CHECK(load_with("PROFILE", "one-app_2", err, sizeof err) == 0);

	/* Non-loopback HOST is accepted once keys are set; keys split on commas. */
	setenv("PROVISIONER_API_KEYS", " key-one-0123456789 , key-two-0123456789,", 1);
	setenv("HOST", "0.0.0.0", 1);
	CHECK(config_load(&c, NULL, err, sizeof err) == 0);
	CHECK(c.n_api_keys == 2);
	CHECK_STR(c.api_keys[0], "key-one-0123456789");
	CHECK_STR(c.api_keys[1], "key-two-0123456789");
	config_free(&c);
	unsetenv("HOST");
	unsetenv("PROVISIONER_API_KEYS");

	/* The environment wins over .env. */
	char path[] = "/tmp/mrprov-test-env-XXXXXX";
	int fd = mkstemp(path);
	const char *env = "PORT=9100\nBASE_DOMAIN=example.org\n";
	CHECK(fd >= 0 && write(fd, env, strlen(env)) == (ssize_t)strlen(env));
	close(fd);
	setenv("PORT", "9200", 1);
	CHECK(config_load(&c, path, err, sizeof err) == 0);
	CHECK(c.port == 9200);
	CHECK_STR(c.base_domain, "example.org");
	config_free(&c);
	unsetenv("PORT");
	unlink(path);

	/* The directories of the source tree: ./lua where it exists; else the
	 * installed copy, under SHARE_DIR when that is set; a setting given
	 * explicitly is taken as it is. */
	char cwd[4096], tmp[] = "/tmp/mrprov-test-share-XXXXXX", sub[4200];
	CHECK(getcwd(cwd, sizeof cwd) != NULL);
	CHECK(mkdtemp(tmp) != NULL);
	CHECK(chdir(tmp) == 0);
	CHECK(config_load(&c, NULL, err, sizeof err) == 0);
	/* nothing here, nothing installed beside the test binary */
	CHECK(strcmp(c.lua_dir, "./lua") == 0 || strstr(c.lua_dir, "/share/mrprov/lua") != NULL);
	config_free(&c);
	snprintf(sub, sizeof sub, "%s/share", tmp);
	CHECK(mkdir(sub, 0700) == 0);
	setenv("SHARE_DIR", sub, 1);
	CHECK(config_load(&c, NULL, err, sizeof err) == 0);
	snprintf(sub, sizeof sub, "%s/share/lua", tmp);
	CHECK_STR(c.lua_dir, sub);
	snprintf(sub, sizeof sub, "%s/share/tiers", tmp);
	CHECK_STR(c.tiers_dir, sub);
	snprintf(sub, sizeof sub, "%s/share/profiles", tmp);
	CHECK_STR(c.profiles_dir, sub);
	CHECK_STR(config_get("LUA_DIR"), c.lua_dir);
	/* not a directory of the source tree: never moved */
	CHECK_STR(c.state_db, "./data/mrprov.db");
	config_free(&c);
	setenv("HOOKS_DIR", "/etc/mrprov/hooks", 1);
	CHECK(config_load(&c, NULL, err, sizeof err) == 0);
	CHECK_STR(c.hooks_dir, "/etc/mrprov/hooks");
	config_free(&c);
	unsetenv("HOOKS_DIR");
	unsetenv("SHARE_DIR");
	/* a source tree in the working directory: as it always was */
	CHECK(mkdir("lua", 0700) == 0);
	CHECK(config_load(&c, NULL, err, sizeof err) == 0);
	CHECK_STR(c.lua_dir, "./lua");
	config_free(&c);
	CHECK(rmdir("lua") == 0);
	CHECK(chdir(cwd) == 0);
	snprintf(sub, sizeof sub, "rm -rf '%s'", tmp);
	CHECK(system(sub) == 0);

	CHECK(config_host_is_loopback("127.0.0.1"));
	CHECK(config_host_is_loopback("127.9.9.9"));
	CHECK(config_host_is_loopback("::1"));
	CHECK(config_host_is_loopback("localhost"));
	CHECK(!config_host_is_loopback("0.0.0.0"));
	CHECK(!config_host_is_loopback("10.0.0.1"));
	CHECK(!config_host_is_loopback("::"));
	return check_done();
}
