/* bind_supabase: reads from Supabase's REST API (PostgREST) for Lua, with
 * the service key kept in C (it is a CONFIG_VAR_SECRET: Lua sees only
 * whether it is set, never its value).
 *
 *   supabase.enabled() → whether SUPABASE_URL (and its key) are set
 *   supabase.select(table, query) → status, body, truncated
 *                                 → nil, err
 *
 * One GET /rest/v1/<table>?<query> on a client of its own (src/supabase/
 * client.c: the apikey/Authorization headers, SUPABASE_TIMEOUT for the whole
 * request, no signals, http and https only). Lua builds the query (filters,
 * order, limit) and decodes the JSON answer; C checks only that the table is
 * a plain name and the query plain URL text, so nothing can smuggle a header,
 * a second path or another host into the request. An answer over
 * SUPABASE_SELECT_KEEP bytes is cut there and `truncated` says so: the caller
 * asks for smaller pages. An error names the table, never the key. Blocks its
 * thread for at most the timeout: meant for workers and the sweep, not for
 * HTTP handlers. */
#include "config.h"
#include "lua/runtime.h"
#include "lua/scratch.h"
#include "supabase/client.h"
#include "util/sbuf.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* pgrst_request keeps at most 1 MiB of an answer (src/supabase/client.c);
 * an answer that reaches this is reported as truncated. */
#define SUPABASE_SELECT_KEEP (1024 * 1024)
#define SUPABASE_MAX_TABLE 63
/* pgrst_request builds the URL in 2048 bytes, SUPABASE_URL included. */
#define SUPABASE_MAX_QUERY 1024

struct select_req {
	struct pgrst *client;
	struct sbuf body;
};

static void release_select(void *block)
{
	struct select_req *r = block;
	pgrst_free(r->client);
	sbuf_free(&r->body);
}

static int table_ok(const char *s, size_t len)
{
	if (len == 0 || len > SUPABASE_MAX_TABLE || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

/* Printable ASCII without space, '#' (a fragment) or '/' (another path):
 * a query string whose values Lua percent-encoded. */
static int query_ok(const char *s, size_t len)
{
	if (len > SUPABASE_MAX_QUERY)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c >= 0x7f || c == '#' || c == '/')
			return 0;
	}
	return 1;
}

static int l_enabled(lua_State *L)
{
	const struct config *c = rt_config();
	lua_pushboolean(L, c && c->supabase_url && c->supabase_service_key);
	return 1;
}

static int l_select(lua_State *L)
{
	size_t tlen, qlen;
	const char *table = luaL_checklstring(L, 1, &tlen);
	const char *query = luaL_optlstring(L, 2, "", &qlen);
	if (!table_ok(table, tlen))
		return luaL_error(L, "supabase.select: table must be 1-%d characters of a-z 0-9 _", SUPABASE_MAX_TABLE);
	if (!query_ok(query, qlen))
		return luaL_error(L, "supabase.select: query must be up to %d bytes of printable ASCII without "
				     "spaces, '#' or '/' (percent-encode values)", SUPABASE_MAX_QUERY);
	const struct config *c = rt_config();
	if (!c || !c->supabase_url || !c->supabase_service_key) {
		luaL_pushfail(L);
		lua_pushliteral(L, "Supabase is not configured (SUPABASE_URL)");
		return 2;
	}
	struct select_req *r = scratch_push(L, sizeof *r, release_select);
	sbuf_init(&r->body);
	char err[512] = "";
	r->client = pgrst_new(c->supabase_url, c->supabase_service_key, err, sizeof err);
	if (!r->client) {
		luaL_pushfail(L);
		lua_pushstring(L, err);
		return 2;
	}
	pgrst_set_timeout(r->client, c->supabase_timeout > 0 ? c->supabase_timeout : CONFIG_SUPABASE_TIMEOUT_S);
	char path[SUPABASE_MAX_TABLE + SUPABASE_MAX_QUERY + 2];
	snprintf(path, sizeof path, "%s%s%s", table, qlen ? "?" : "", query);
	long status = 0;
	if (pgrst_request(r->client, "GET", path, NULL, NULL, &status, &r->body, err, sizeof err) < 0) {
		/* err names the URL: SUPABASE_URL and the query, never the key */
		luaL_pushfail(L);
		lua_pushstring(L, err);
		return 2;
	}
	lua_pushinteger(L, status);
	lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
	lua_pushboolean(L, r->body.len >= SUPABASE_SELECT_KEEP);
	return 3;
}

int luaopen_mrprov_supabase(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "enabled", l_enabled },
		{ "select", l_select },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	lua_pushinteger(L, SUPABASE_MAX_QUERY);
	lua_setfield(L, -2, "MAX_QUERY");
	return 1;
}
