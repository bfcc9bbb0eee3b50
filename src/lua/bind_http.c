/* bind_http: outgoing HTTP(S) requests for Lua, through libcurl (loaded on
 * first use, src/supabase/libcurl.h).
 *
 *   http.request{ method = "GET", url = "https://…", headers = { k = v },
 *                 body = "…", timeout_ms = 10000 }
 *     → status, body, headers (lower-case names; a repeated header's values
 *       joined with ", "), truncated
 *     → nil, err
 *
 * The same setup as the Supabase client (src/supabase/client.c): a bound on
 * the whole request, no signals, http and https only, TLS verification on
 * (libcurl's default, never turned off here) and no redirects (a redirect's
 * answer is returned as it is: following one would send the request's
 * headers, credentials included, to wherever it points). At most
 * HTTP_BODY_KEEP bytes of the answer are kept (the rest is read and
 * dropped, `truncated` says so), and HTTP_HEAD_KEEP of its headers.
 *
 * Secrets: nothing here logs, and an error names the URL without its query,
 * fragment and user info, never a header or the body. The request blocks
 * its thread for at most timeout_ms: meant for workers, not for HTTP
 * handlers. */
#include "lua/runtime.h"
#include "lua/scratch.h"
#include "supabase/libcurl.h"
#include "util/sbuf.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define HTTP_BODY_KEEP (64 * 1024)
#define HTTP_HEAD_KEEP (16 * 1024)
#define HTTP_MAX_HEADERS 64
#define HTTP_MAX_URL 4096
#define HTTP_MAX_BODY (1024 * 1024)
#define HTTP_DEFAULT_TIMEOUT_MS 10000
#define HTTP_MAX_TIMEOUT_MS 120000

/* One request's C memory, on the Lua stack (scratch.h): freed when the
 * binding returns or raises. */
struct http_req {
	const struct libcurl *curl;
	CURL *h;
	struct curl_slist *headers;
	struct sbuf body;
	struct sbuf head;
	int truncated;
};

static void release_req(void *block)
{
	struct http_req *r = block;
	if (r->curl) {
		if (r->h)
			r->curl->easy_cleanup(r->h);
		r->curl->slist_free_all(r->headers);
	}
	sbuf_free(&r->body);
	sbuf_free(&r->head);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct http_req *r = ud;
	size_t len = size * n;
	size_t room = r->body.len < HTTP_BODY_KEEP ? HTTP_BODY_KEEP - r->body.len : 0;
	if (len > room)
		r->truncated = 1;
	if (room)
		sbuf_add(&r->body, p, len < room ? len : room);
	return len;
}

/* Keeps the header lines of the last response only: a `100 Continue` or a
 * proxy's CONNECT answer comes first with headers of its own. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct http_req *r = ud;
	size_t len = size * n;
	if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
		r->head.len = 0;
	else if (r->head.len + len <= HTTP_HEAD_KEEP)
		sbuf_add(&r->head, p, len);
	return len;
}

/* url without user info, query and fragment: what an error may show. */
static void safe_url(const char *url, char *out, size_t outlen)
{
	const char *scheme_end = strstr(url, "://");
	const char *host = scheme_end ? scheme_end + 3 : url;
	size_t auth_len = strcspn(host, "/?#");
	const char *at = memchr(host, '@', auth_len);
	size_t scheme_len = (size_t)(host - url);
	const char *rest = at ? at + 1 : host;
	size_t rest_len = strcspn(rest, "?#");
	snprintf(out, outlen, "%.*s%.*s", (int)scheme_len, url, (int)(rest_len > 512 ? 512 : rest_len), rest);
}

static int url_ok(const char *url, size_t len)
{
	if (len > HTTP_MAX_URL || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0))
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)url[i];
		if (c <= ' ' || c == 0x7f)
			return 0;
	}
	return 1;
}

/* An HTTP token (RFC 9110 §5.6.2): a header name. */
static int token_ok(const char *s, size_t len)
{
	if (len == 0 || len > 128)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && !strchr("!#$%&'*+-.^_`|~", c))
			return 0;
	}
	return 1;
}

/* A header value: no CR, LF or NUL (header injection). */
static int value_ok(const char *s, size_t len)
{
	if (len > 8192)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return 0;
	return 1;
}

static const char *const METHODS[] = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", NULL };

/* Adds the request's headers (the table at idx) to r->headers. */
static void read_headers(lua_State *L, int idx, struct http_req *r)
{
	int count = 0;
	char line[8400];
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "http.request: headers must map strings to strings");
		size_t nlen, vlen;
		const char *name = lua_tolstring(L, -2, &nlen);
		const char *value = lua_tolstring(L, -1, &vlen);
		if (!token_ok(name, nlen))
			luaL_error(L, "http.request: bad header name");
		if (!value_ok(value, vlen))
			luaL_error(L, "http.request: header %s: bad value (CR, LF or NUL, or over 8 KiB)", name);
		if (++count > HTTP_MAX_HEADERS)
			luaL_error(L, "http.request: more than %d headers", HTTP_MAX_HEADERS);
		/* "Name;" sends a header with an empty value; "Name:" would remove it */
		snprintf(line, sizeof line, vlen ? "%s: %s" : "%s;", name, value);
		struct curl_slist *l = r->curl->slist_append(r->headers, line);
		if (!l)
			luaL_error(L, "http.request: out of memory");
		r->headers = l;
		lua_pop(L, 1);
	}
}

/* Pushes the kept header lines as a table of lower-case names. */
static void push_headers(lua_State *L, const struct http_req *r)
{
	lua_newtable(L);
	const char *p = r->head.data, *end = p ? p + r->head.len : NULL;
	while (p && p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *next = eol ? eol + 1 : end;
		const char *stop = eol ? eol : end;
		if (stop > p && stop[-1] == '\r')
			stop--;
		const char *colon = memchr(p, ':', (size_t)(stop - p));
		if (colon && colon > p) {
			luaL_Buffer b;
			luaL_buffinit(L, &b);
			for (const char *q = p; q < colon; q++)
				luaL_addchar(&b, (char)tolower((unsigned char)*q));
			luaL_pushresult(&b);
			const char *v = colon + 1;
			while (v < stop && (*v == ' ' || *v == '\t'))
				v++;
			const char *vend = stop;
			while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
				vend--;
			lua_pushvalue(L, -1);
			if (lua_rawget(L, -3) == LUA_TSTRING) {
				lua_pushliteral(L, ", ");
				lua_pushlstring(L, v, (size_t)(vend - v));
				lua_concat(L, 3);
			} else {
				lua_pop(L, 1);
				lua_pushlstring(L, v, (size_t)(vend - v));
			}
			lua_rawset(L, -3);
		}
		p = next;
	}
}

static int l_request(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	lua_getfield(L, 1, "url");	  /* 2 */
	lua_getfield(L, 1, "method");	  /* 3 */
	lua_getfield(L, 1, "headers");	  /* 4 */
	lua_getfield(L, 1, "body");	  /* 5 */
	lua_getfield(L, 1, "timeout_ms"); /* 6 */
	size_t url_len = 0;
	const char *url = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &url_len) : NULL;
	if (!url || !url_ok(url, url_len))
		return luaL_error(L, "http.request: url must be an http:// or https:// URL without spaces or control "
				     "characters, up to %d bytes", HTTP_MAX_URL);
	const char *method = luaL_optstring(L, 3, "GET");
	int m = 0;
	while (METHODS[m] && strcmp(METHODS[m], method) != 0)
		m++;
	if (!METHODS[m])
		return luaL_error(L, "http.request: method must be GET, HEAD, POST, PUT, PATCH or DELETE");
	if (!lua_isnil(L, 4))
		luaL_checktype(L, 4, LUA_TTABLE);
	size_t body_len = 0;
	const char *body = lua_isnil(L, 5) ? NULL : luaL_checklstring(L, 5, &body_len);
	if (body_len > HTTP_MAX_BODY)
		return luaL_error(L, "http.request: body over %d bytes", HTTP_MAX_BODY);
	lua_Integer timeout_ms = luaL_optinteger(L, 6, HTTP_DEFAULT_TIMEOUT_MS);
	if (timeout_ms < 1 || timeout_ms > HTTP_MAX_TIMEOUT_MS)
		return luaL_error(L, "http.request: timeout_ms must be 1..%d", HTTP_MAX_TIMEOUT_MS);

	char err[512];
	const struct libcurl *curl = libcurl_get(err, sizeof err);
	if (!curl) {
		luaL_pushfail(L);
		lua_pushstring(L, err);
		return 2;
	}
	struct http_req *r = scratch_push(L, sizeof *r, release_req); /* 7 */
	sbuf_init(&r->body);
	sbuf_init(&r->head);
	r->curl = curl;
	/* no "Expect: 100-continue" round trip before a body */
	r->headers = curl->slist_append(NULL, "Expect:");
	if (!r->headers)
		return luaL_error(L, "http.request: out of memory");
	if (!lua_isnil(L, 4))
		read_headers(L, 4, r);
	r->h = curl->easy_init();
	if (!r->h)
		return luaL_error(L, "http.request: cannot create a curl handle");
	CURL *h = r->h;
	char errbuf[CURL_ERROR_SIZE] = "";
	curl->easy_setopt(h, CURLOPT_URL, url);
	curl->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl->easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl->easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 5000 ? (long)timeout_ms : 5000L);
	curl->easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl->easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl->easy_setopt(h, CURLOPT_HTTPHEADER, r->headers);
	curl->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl->easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl->easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl->easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl->easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	if (strcmp(method, "HEAD") == 0) {
		curl->easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET") != 0) {
		if (strcmp(method, "POST") != 0)
			curl->easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
		if (body || strcmp(method, "POST") == 0) {
			/* the body stays referenced at stack slot 5 until the call returns */
			curl->easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
			curl->easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
		}
	}
	CURLcode rc = curl->easy_perform(h);
	if (rc != CURLE_OK) {
		char where[600];
		safe_url(url, where, sizeof where);
		luaL_pushfail(L);
		if (errbuf[0])
			lua_pushfstring(L, "%s %s: %s (%s)", method, where, curl->easy_strerror(rc), errbuf);
		else
			lua_pushfstring(L, "%s %s: %s", method, where, curl->easy_strerror(rc));
		return 2;
	}
	long status = 0;
	curl->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	lua_pushinteger(L, status);
	lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
	push_headers(L, r);
	lua_pushboolean(L, r->truncated);
	return 4;
}

int luaopen_mrprov_http(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "request", l_request },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	lua_pushinteger(L, HTTP_BODY_KEEP);
	lua_setfield(L, -2, "BODY_KEEP");
	return 1;
}
