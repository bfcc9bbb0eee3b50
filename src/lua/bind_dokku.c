/* bind_dokku: runs a Dokku command through the configured transport.
 * dokku.run(argv [, {timeout=s, stdout_file=path, stdin=bytes, host=name}]) → {exit,
 * stdout, stderr, duration, bytes} or nil, err, transient. With stdout_file,
 * stdout is streamed into a new file (mode 0600; an existing file is an
 * error); with stdin, the bytes (at most TRANSPORT_MAX_INPUT) are the
 * command's input, then its end; with stdin_file instead, the file's
 * contents (streamed, any size: a move's exports). dokku.mode() → "dry-run" | "local" | "ssh".
 * dokku.token_ok(s) → true | false, reason. host: the Dokku host's name
 * (default: the implicit host, "default"); run_many's calls take it too.
 * dokku.set_hosts({ {name=, host=, port=, user=, key_path=, known_hosts=}, ... })
 * → true | nil, err (the configured hosts; {} → the implicit host alone);
 * dokku.host_health(name) → true | false, reason (transport_host_check,
 * 30 s); dokku.hosts() → { names of the configured hosts }. */
#include "dokku/transport.h"
#include "lua/runtime.h"
#include "lua/scratch.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ARGS 256

struct call {
	const char *argv[MAX_ARGS];
	int argc;
	double timeout;
	const char *out_path;
	const char *in; /* stdin bytes, or NULL */
	const char *in_path; /* stdin from this file, or NULL */
	const char *host; /* NULL: the implicit host */
	size_t in_len;
	int rc;
	struct transport_result res; /* zeroed until run; freed by release_calls */
	pthread_t thread;
};

/* The calls of one run or run_many, on the Lua stack (scratch.h): their
 * results' output is freed when the binding returns or raises, pushed or
 * not. */
struct calls {
	int n;
	struct call c[];
};

static void release_calls(void *block)
{
	struct calls *cs = block;
	for (int i = 0; i < cs->n; i++)
		transport_result_free(&cs->c[i].res); /* idempotent; a zeroed result holds nothing */
}

static struct calls *push_calls(lua_State *L, int n)
{
	struct calls *cs = scratch_push(L, sizeof *cs + (size_t)n * sizeof cs->c[0], release_calls);
	cs->n = n;
	return cs;
}

/* Reads {argv...} at idx and options at opt_idx (0: none) into c. The
 * strings stay referenced by the Lua tables, which outlive the call. */
static void read_call(lua_State *L, int idx, int opt_idx, struct call *c)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	c->timeout = 0;
	c->out_path = NULL;
	c->in_path = NULL;
	c->in = NULL;
	c->in_len = 0;
	c->host = NULL;
	if (opt_idx && lua_istable(L, opt_idx)) {
		lua_getfield(L, opt_idx, "host");
		if (!lua_isnil(L, -1)) {
			c->host = lua_tostring(L, -1); /* referenced by the options table */
			if (lua_type(L, -1) != LUA_TSTRING || !transport_host_name_ok(c->host))
				luaL_argerror(L, opt_idx, "host must be a host name");
		}
		lua_pop(L, 1);
		lua_getfield(L, opt_idx, "stdin");
		if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TSTRING)
				luaL_argerror(L, opt_idx, "stdin must be a string");
			/* the string stays referenced by the options table */
			c->in = lua_tolstring(L, -1, &c->in_len);
		}
		lua_pop(L, 1);
		lua_getfield(L, opt_idx, "timeout");
		c->timeout = luaL_optnumber(L, -1, 0);
		lua_pop(L, 1);
		lua_getfield(L, opt_idx, "stdout_file");
		c->out_path = luaL_optstring(L, -1, NULL);
		lua_pop(L, 1);
		lua_getfield(L, opt_idx, "stdin_file");
		c->in_path = luaL_optstring(L, -1, NULL);
		lua_pop(L, 1);
		if (c->in_path && c->in)
			luaL_argerror(L, opt_idx, "stdin and stdin_file are exclusive");
	}
	c->argc = (int)luaL_len(L, idx);
	luaL_argcheck(L, c->argc > 0 && c->argc <= MAX_ARGS, idx, "expected 1..256 arguments");
	for (int i = 0; i < c->argc; i++) {
		lua_rawgeti(L, idx, i + 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_argerror(L, idx, "every argument must be a string");
		c->argv[i] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
}

static void *do_call(void *arg)
{
	struct call *c = arg;
	int fd = -1, in_fd = -1;
	if (c->in_path) {
		in_fd = open(c->in_path, O_RDONLY | O_CLOEXEC);
		if (in_fd < 0) {
			c->rc = -1;
			memset(&c->res, 0, sizeof c->res);
			snprintf(c->res.error, sizeof c->res.error, "cannot read %.150s: %.80s", c->in_path,
				 strerror(errno));
			return NULL;
		}
	}
	if (c->out_path) {
		fd = open(c->out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			c->rc = -1;
			memset(&c->res, 0, sizeof c->res);
			snprintf(c->res.error, sizeof c->res.error, "cannot create %.150s: %.80s", c->out_path,
				 strerror(errno));
			if (in_fd >= 0)
				close(in_fd);
			return NULL;
		}
	}
	if (in_fd >= 0) {
		c->rc = transport_run_fd_on(c->host, c->argv, c->argc, in_fd, c->timeout, fd, &c->res);
		close(in_fd);
	} else {
		c->rc = transport_run_on(c->host, c->argv, c->argc, c->in, c->in_len, c->timeout, fd, &c->res);
	}
	if (fd >= 0 && (fsync(fd) < 0 || close(fd) < 0) && c->rc == 0) {
		snprintf(c->res.error, sizeof c->res.error, "cannot write %.150s: %.80s", c->out_path,
			 strerror(errno));
		c->rc = -1;
	}
	return NULL;
}

/* Pushes the outcome of c: the result table, or nil, err, transient. The
 * result stays c's (its struct calls frees it). */
static int push_call(lua_State *L, const struct call *c)
{
	if (c->rc < 0) {
		luaL_pushfail(L);
		lua_pushstring(L, c->res.error);
		lua_pushboolean(L, c->res.transient);
		return 3;
	}
	lua_createtable(L, 0, 5);
	lua_pushinteger(L, c->res.exit_code);
	lua_setfield(L, -2, "exit");
	lua_pushlstring(L, c->res.out.data ? c->res.out.data : "", c->res.out.len);
	lua_setfield(L, -2, "stdout");
	lua_pushlstring(L, c->res.err.data ? c->res.err.data : "", c->res.err.len);
	lua_setfield(L, -2, "stderr");
	lua_pushnumber(L, c->res.duration_s);
	lua_setfield(L, -2, "duration");
	lua_pushinteger(L, (lua_Integer)c->res.out_bytes);
	lua_setfield(L, -2, "bytes");
	return 1;
}

static int l_run(lua_State *L)
{
	lua_settop(L, 2); /* the calls go above the arguments */
	struct calls *cs = push_calls(L, 1);
	read_call(L, 1, 2, &cs->c[0]);
	do_call(&cs->c[0]);
	return push_call(L, &cs->c[0]);
}

/* run_many({ {argv=..., timeout=, stdout_file=}, ... }) → array of
 * {ok=result} or {error=, transient=}, in order. The calls run at once,
 * one thread each (the transport multiplexes them over its connections). */
static int l_run_many(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	int n = (int)luaL_len(L, 1);
	luaL_argcheck(L, n >= 0 && n <= 64, 1, "at most 64 calls at once");
	lua_settop(L, 1);
	struct calls *cs = push_calls(L, n);
	struct call *calls = cs->c;
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, 1, i + 1);
		int t = lua_gettop(L);
		lua_getfield(L, t, "argv");
		read_call(L, lua_gettop(L), t, &calls[i]);
		lua_pop(L, 1); /* argv stays referenced by the call table */
		lua_pop(L, 1);
	}
	for (int i = 0; i < n; i++)
		if (pthread_create(&calls[i].thread, NULL, do_call, &calls[i]) != 0)
			do_call(&calls[i]), calls[i].thread = 0;
	for (int i = 0; i < n; i++)
		if (calls[i].thread)
			pthread_join(calls[i].thread, NULL);
	lua_createtable(L, n, 0);
	for (int i = 0; i < n; i++) {
		lua_createtable(L, 0, 2);
		int got = push_call(L, &calls[i]);
		if (got == 1) {
			lua_setfield(L, -2, "ok");
		} else {
			lua_setfield(L, -4, "transient");
			lua_setfield(L, -3, "error");
			lua_pop(L, 1);
		}
		lua_rawseti(L, -2, i + 1);
	}
	return 1;
}

static int l_mode(lua_State *L)
{
	lua_pushstring(L, transport_mode_name());
	return 1;
}

static int l_token_ok(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	const char *reason;
	if (transport_token_ok(s, n, &reason)) {
		lua_pushboolean(L, 1);
		return 1;
	}
	lua_pushboolean(L, 0);
	lua_pushstring(L, reason);
	return 2;
}

/* A string field of the table at idx, or NULL when absent; raises when
 * present and not a string. The string stays referenced by the table. */
static const char *opt_field(lua_State *L, int idx, const char *k)
{
	lua_getfield(L, idx, k);
	const char *v = NULL;
	if (!lua_isnil(L, -1)) {
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "host field %s must be a string", k);
		v = lua_tostring(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

static int l_set_hosts(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	int n = (int)luaL_len(L, 1);
	luaL_argcheck(L, n >= 0 && n <= TRANSPORT_MAX_HOSTS, 1, "too many hosts");
	struct transport_host list[TRANSPORT_MAX_HOSTS];
	/* Each entry's table stays on the stack (below); a C function is
	 * given LUA_MINSTACK slots only. */
	luaL_checkstack(L, n + 2, "too many hosts");
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, 1, i + 1);
		luaL_checktype(L, -1, LUA_TTABLE);
		int t = lua_gettop(L);
		list[i].name = opt_field(L, t, "name");
		list[i].host = opt_field(L, t, "host");
		list[i].user = opt_field(L, t, "user");
		list[i].key_path = opt_field(L, t, "key_path");
		list[i].known_hosts = opt_field(L, t, "known_hosts");
		lua_getfield(L, t, "port");
		list[i].port = (int)luaL_optinteger(L, -1, 22);
		lua_pop(L, 1);
		/* the table stays on the stack: its strings are in list */
	}
	char err[512];
	if (transport_hosts_set(list, n, err, sizeof err) < 0) {
		luaL_pushfail(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int l_host_health(lua_State *L)
{
	const char *name = luaL_optstring(L, 1, NULL);
	char reason[300] = "";
	if (transport_host_check(name, 30, reason, sizeof reason) == 0) {
		lua_pushboolean(L, 1);
		return 1;
	}
	lua_pushboolean(L, 0);
	lua_pushstring(L, reason);
	return 2;
}

static int l_hosts(lua_State *L)
{
	char names[TRANSPORT_MAX_HOSTS][TRANSPORT_HOST_NAME_MAX + 1];
	int n = transport_hosts(names, TRANSPORT_MAX_HOSTS);
	lua_createtable(L, n, 0);
	for (int i = 0; i < n; i++) {
		lua_pushstring(L, names[i]);
		lua_rawseti(L, -2, i + 1);
	}
	return 1;
}

int luaopen_mrprov_dokku(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "run", l_run },
		{ "run_many", l_run_many },
		{ "mode", l_mode },
		{ "token_ok", l_token_ok },
		{ "set_hosts", l_set_hosts },
		{ "host_health", l_host_health },
		{ "hosts", l_hosts },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
