/* bind_sys: time, files, the service's settings and versions for Lua.
 * sys.config() hides secrets: it says whether they are set, never what. */
#include "config.h"
#include "dokku/transport.h"
#include "lua/runtime.h"
#include "lua/sources.h"
#include "supabase/libcurl.h"
#include "util/clock.h"
#include "util/fs.h"
#include "webhook.h"

#include <errno.h>
#include <lauxlib.h>
#include <libssh2.h>
#include <microhttpd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int l_now(lua_State *L)
{
	lua_pushnumber(L, clock_real());
	return 1;
}

static int l_monotonic(lua_State *L)
{
	lua_pushnumber(L, clock_mono());
	return 1;
}

/* iso_time([epoch]): ISO-8601 UTC with milliseconds. */
static int l_iso_time(lua_State *L)
{
	char buf[CLOCK_ISO_LEN];
	clock_iso(lua_isnoneornil(L, 1) ? -1 : luaL_checknumber(L, 1), buf);
	lua_pushstring(L, buf);
	return 1;
}

static int l_uptime(lua_State *L)
{
	lua_pushnumber(L, rt_uptime());
	return 1;
}

/* source_list(dir) → sorted array of entry names (no dot files), or nil,
 * err: the directory as read when this state's generation was loaded. */
static int l_source_list(lua_State *L)
{
	const char *dir = luaL_checkstring(L, 1);
	size_t n = 0;
	const char *err = NULL;
	const char *const *names = sources_list(rt_state_sources(L), dir, &n, &err);
	if (!names) {
		luaL_pushfail(L);
		if (err)
			lua_pushstring(L, err);
		else
			lua_pushfstring(L, "%s: not a directory of the loaded configuration", dir);
		return 2;
	}
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushstring(L, names[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

/* source_read(path) → text, or nil, err: the file as read when this
 * state's generation was loaded (the *.lua of LUA_DIR, TIERS_DIR,
 * PROFILES_DIR, HOOKS_DIR). */
static int l_source_read(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	size_t len = 0;
	const char *err = NULL;
	const char *data = sources_file(rt_state_sources(L), path, &len, &err);
	if (!data) {
		luaL_pushfail(L);
		if (err)
			lua_pushstring(L, err);
		else
			lua_pushfstring(L, "%s: not a file of the loaded configuration", path);
		return 2;
	}
	lua_pushlstring(L, data, len);
	return 1;
}

static int l_is_dir(lua_State *L)
{
	struct stat st;
	lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
	return 1;
}

/* sleep(seconds), at most 60 at a time. */
static int l_sleep(lua_State *L)
{
	double s = luaL_checknumber(L, 1);
	luaL_argcheck(L, s >= 0 && s <= 60, 1, "0..60 seconds");
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return 0;
}

/* mkdir_p(path [, mode]) → true or nil, err. */
static int l_mkdir_p(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	if (fs_mkdirs(path, (mode_t)luaL_optinteger(L, 2, 0700), 1) < 0) {
		luaL_pushfail(L);
		lua_pushfstring(L, "%s: %s", path, strerror(errno));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int l_config(lua_State *L)
{
	lua_newtable(L);
	for (const struct config_var *v = config_vars; v->name; v++) {
		const char *val = config_get(v->name);
		if (v->secret) {
			lua_pushboolean(L, val != NULL);
			lua_setfield(L, -2, v->name);
		} else if (val) {
			lua_pushstring(L, val);
			lua_setfield(L, -2, v->name);
		}
	}
	lua_pushstring(L, transport_mode_name());
	lua_setfield(L, -2, "dokku_mode");
	return 1;
}

/* The value of a setting of secret class `kind` (config.h), or nil when it
 * is unset; a setting of another class (mrprov's own credentials above
 * all) is never given. `fn` names the Lua function in errors. */
static int secret_of_kind(lua_State *L, int kind, const char *fn, const char *what)
{
	const char *name = luaL_checkstring(L, 1);
	for (const struct config_var *v = config_vars; v->name; v++) {
		if (strcmp(v->name, name) != 0)
			continue;
		if (v->secret != kind)
			return luaL_error(L, "%s: %s is not %s", fn, name, what);
		const char *val = config_get(name);
		if (val && *val)
			lua_pushstring(L, val);
		else
			lua_pushnil(L);
		return 1;
	}
	return luaL_error(L, "%s: no setting %s", fn, name);
}

/* instance_secret(name) → the value of a setting that is handed to instances
 * (CONFIG_VAR_INSTANCE_SECRET: model-provider keys, the instances' Supabase
 * anon key), or nil when unset. */
static int l_instance_secret(lua_State *L)
{
	return secret_of_kind(L, CONFIG_VAR_INSTANCE_SECRET, "instance_secret", "a setting handed to instances");
}

/* client_secret(name) → the value of a credential Lua sends to an outside
 * API itself (CONFIG_VAR_CLIENT_SECRET: the OpenRouter management key), or
 * nil when unset; never handed to an instance. */
static int l_client_secret(lua_State *L)
{
	return secret_of_kind(L, CONFIG_VAR_CLIENT_SECRET, "client_secret", "a client credential");
}

static int l_version(lua_State *L)
{
	lua_newtable(L);
	lua_pushstring(L, rt_version());
	lua_setfield(L, -2, "mrprov");
	lua_pushfstring(L, "%s.%s.%s", LUA_VERSION_MAJOR, LUA_VERSION_MINOR, LUA_VERSION_RELEASE);
	lua_setfield(L, -2, "lua");
	lua_pushstring(L, MHD_get_version());
	lua_setfield(L, -2, "libmicrohttpd");
	lua_pushstring(L, libssh2_version(0));
	lua_setfield(L, -2, "libssh2");
	const struct libcurl *curl = libcurl_get(NULL, 0);
	lua_pushstring(L, curl ? curl->version_info(CURLVERSION_NOW)->version : "not loaded");
	lua_setfield(L, -2, "libcurl");
	lua_pushstring(L, sqlite3_libversion());
	lua_setfield(L, -2, "sqlite");
	return 1;
}

static int l_generation(lua_State *L)
{
	lua_pushinteger(L, rt_state_generation(L));
	return 1;
}

static int l_current_generation(lua_State *L)
{
	lua_pushinteger(L, rt_generation());
	return 1;
}

int luaopen_mrprov_sys(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "now", l_now },
		{ "monotonic", l_monotonic },
		{ "iso_time", l_iso_time },
		{ "uptime", l_uptime },
		{ "source_list", l_source_list },
		{ "source_read", l_source_read },
		{ "is_dir", l_is_dir },
		{ "mkdir_p", l_mkdir_p },
		{ "sleep", l_sleep },
		{ "config", l_config },
		{ "instance_secret", l_instance_secret },
		{ "client_secret", l_client_secret },
		{ "version", l_version },
		{ "generation", l_generation },
		{ "current_generation", l_current_generation },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	/* How far a webhook-timestamp may be from now (C checks it): Lua keeps
	 * delivery ids for replay detection for twice this long. */
	lua_pushinteger(L, WEBHOOK_TOLERANCE_S);
	lua_setfield(L, -2, "webhook_tolerance_s");
	return 1;
}
