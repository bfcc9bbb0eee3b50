/* bind_sys: time, files, the service's settings and versions for Lua.
 * sys.config() hides secrets: it says whether they are set, never what. */
#include "config.h"
#include "dokku/transport.h"
#include "lua/runtime.h"
#include "util/clock.h"
#include "util/fs.h"

#include <curl/curl.h>
#include <dirent.h>
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

static int cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* list_dir(path) → sorted array of entry names (no dot files), or nil, err. */
static int l_list_dir(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	DIR *d = opendir(path);
	if (!d) {
		luaL_pushfail(L);
		lua_pushfstring(L, "%s: %s", path, strerror(errno));
		return 2;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nn = realloc(names, cap * sizeof *names);
			if (!nn)
				abort();
			names = nn;
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof *names, cmpstr);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushstring(L, names[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
		free(names[i]);
	}
	free(names);
	return 1;
}

static int l_read_file(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	FILE *f = fopen(path, "rb");
	if (!f) {
		luaL_pushfail(L);
		lua_pushfstring(L, "%s: %s", path, strerror(errno));
		return 2;
	}
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	char chunk[4096];
	size_t r;
	while ((r = fread(chunk, 1, sizeof chunk, f)) > 0)
		luaL_addlstring(&b, chunk, r);
	fclose(f);
	luaL_pushresult(&b);
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
	lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
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
		{ "list_dir", l_list_dir },
		{ "read_file", l_read_file },
		{ "is_dir", l_is_dir },
		{ "mkdir_p", l_mkdir_p },
		{ "sleep", l_sleep },
		{ "config", l_config },
		{ "version", l_version },
		{ "generation", l_generation },
		{ "current_generation", l_current_generation },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
