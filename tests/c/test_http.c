/* Unit tests for the HTTP binding (src/lua/bind_http.c) against a small
 * HTTP/1.1 server on loopback run by a thread of this test: status, body and
 * headers come back; request headers and body go out; the kept body is
 * bounded; redirects are not followed; a timeout, a refused connection and
 * bad arguments are errors whose text shows no secret. Under ASan,
 * LeakSanitizer checks at exit that raising paths free what they took. */
#include "check.h"
#include "lua/runtime.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <lualib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int listen_fd;
static int port;
static atomic_int stop;

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Reads one request (headers and a Content-Length body) into buf. */
static size_t read_request(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	for (int rounds = 0; rounds < 1000 && len + 1 < cap; rounds++) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 2000) <= 0)
			break;
		ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
		if (r <= 0)
			break;
		len += (size_t)r;
		buf[len] = '\0';
		char *end = strstr(buf, "\r\n\r\n");
		if (end) {
			const char *cl = strstr(buf, "Content-Length:");
			size_t want = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0);
			if (len >= want)
				break;
		}
	}
	buf[len] = '\0';
	return len;
}

static void answer(int fd, const char *req, size_t req_len)
{
	char head[512];
	if (strncmp(req, "GET /ok ", 8) == 0 || strncmp(req, "HEAD /ok ", 9) == 0) {
		const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: a\r\nX-Test: b\r\n"
				"Content-Type: text/plain\r\nConnection: close\r\n\r\nhello";
		send_all(fd, r, strlen(r));
	} else if (strncmp(req, "GET /big ", 9) == 0) {
		size_t n = 200 * 1024;
		snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", n);
		send_all(fd, head, strlen(head));
		char *body = malloc(n);
		memset(body, 'x', n);
		send_all(fd, body, n);
		free(body);
	} else if (strncmp(req, "GET /redirect ", 14) == 0) {
		const char *r = "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		send_all(fd, r, strlen(r));
	} else if (strncmp(req, "GET /slow", 9) == 0) {
		struct timespec t = { 1, 500 * 1000 * 1000 };
		nanosleep(&t, NULL);
		const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
		send_all(fd, r, strlen(r));
	} else { /* echo: the request comes back as the body */
		snprintf(head, sizeof head, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 req_len);
		send_all(fd, head, strlen(head));
		send_all(fd, req, req_len);
	}
}

static void *serve(void *arg)
{
	(void)arg;
	static char buf[65536];
	while (!atomic_load(&stop)) {
		struct pollfd p = { listen_fd, POLLIN, 0 };
		if (poll(&p, 1, 100) <= 0)
			continue;
		int fd = accept(listen_fd, NULL, NULL);
		if (fd < 0)
			continue;
		size_t n = read_request(fd, buf, sizeof buf);
		if (n)
			answer(fd, buf, n);
		close(fd);
	}
	return NULL;
}

static int start_server(pthread_t *t)
{
	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof a;
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(listen_fd, 16) < 0 ||
	    getsockname(listen_fd, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	port = ntohs(a.sin_port);
	return pthread_create(t, NULL, serve, NULL);
}

/* A free port nobody listens on (bound, then closed). */
static int closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof a;
	bind(fd, (struct sockaddr *)&a, sizeof a);
	getsockname(fd, (struct sockaddr *)&a, &alen);
	close(fd);
	return ntohs(a.sin_port);
}

/* Runs chunk; 1 when it ran without error. */
static int run(lua_State *L, const char *name, const char *chunk)
{
	if (luaL_loadbuffer(L, chunk, strlen(chunk), name) != LUA_OK || lua_pcall(L, 0, 0, 0) != LUA_OK) {
		fprintf(stderr, "%s: %s\n", name, lua_tostring(L, -1));
		lua_pop(L, 1);
		return 0;
	}
	return 1;
}

int main(void)
{
	pthread_t server;
	if (start_server(&server) != 0) {
		fprintf(stderr, "cannot start the loopback server\n");
		return 2;
	}
	lua_State *L = luaL_newstate();
	luaL_openlibs(L);
	luaL_requiref(L, "mrprov.http", luaopen_mrprov_http, 0);
	lua_setglobal(L, "http");
	lua_pushfstring(L, "http://127.0.0.1:%d", port);
	lua_setglobal(L, "base");
	lua_pushfstring(L, "http://127.0.0.1:%d", closed_port());
	lua_setglobal(L, "closed");

	CHECK(run(L, "get", "local s, b, h, t = http.request{ url = base .. '/ok' }\n"
			    "assert(s == 200, tostring(s)); assert(b == 'hello', b); assert(t == false)\n"
			    "assert(h['x-test'] == 'a, b', h['x-test']); assert(h['content-type'] == 'text/plain')\n"));
	CHECK(run(L, "post", "local s, b = http.request{ method = 'POST', url = base .. '/echo',\n"
			     "  headers = { Authorization = 'Bearer s3cret', ['X-Empty'] = '' }, body = 'pay\\0load',\n"
			     "  timeout_ms = 5000 }\n"
			     "assert(s == 503, tostring(s)); assert(b:find('POST /echo HTTP/1.1', 1, true), b)\n"
			     "assert(b:find('Authorization: Bearer s3cret', 1, true), b)\n"
			     "assert(b:find('X-Empty:', 1, true), b); assert(b:find('pay\\0load', 1, true), b)\n"
			     "assert(not b:find('Expect:', 1, true), b)\n"));
	CHECK(run(L, "put", "local s, b = http.request{ method = 'DELETE', url = base .. '/echo' }\n"
			    "assert(s == 503); assert(b:find('DELETE /echo', 1, true), b)\n"));
	CHECK(run(L, "head", "local s, b = http.request{ method = 'HEAD', url = base .. '/ok' }\n"
			     "assert(s == 200); assert(b == '')\n"));
	CHECK(run(L, "big", "local s, b, _, t = http.request{ url = base .. '/big' }\n"
			    "assert(s == 200); assert(#b == http.BODY_KEEP, #b); assert(t == true)\n"));
	CHECK(run(L, "redirect", "local s, _, h = http.request{ url = base .. '/redirect' }\n"
				 "assert(s == 302, tostring(s)); assert(h.location == '/ok')\n"));
	CHECK(run(L, "timeout", "local s, err = http.request{ url = base:gsub('//', '//user:pw@') .. "
				"'/slow?token=s3cret#frag', timeout_ms = 300 }\n"
				"assert(s == nil); assert(err:find('GET http://127.0.0.1', 1, true), err)\n"
				"assert(err:find('/slow', 1, true), err)\n"
				"assert(not err:find('s3cret') and not err:find('pw@') and not err:find('frag'), err)\n"));
	CHECK(run(L, "refused", "local s, err = http.request{ url = closed .. '/x' }\n"
				"assert(s == nil and type(err) == 'string', tostring(err))\n"));
	/* bad arguments raise; each raise must free what it took (LSan) */
	CHECK(run(L, "bad", "local bad = {\n"
			    "  { url = 'ftp://127.0.0.1/x' }, { url = 'file:///etc/passwd' }, { url = 'http://a b/' },\n"
			    "  { url = base .. '/x\\r\\nX: y' }, { url = base, method = 'TRACE' }, {},\n"
			    "  { url = base, headers = { ['X-A'] = 'v\\r\\nInjected: 1' } },\n"
			    "  { url = base, headers = { ['Bad Name'] = 'v' } }, { url = base, headers = { 1 } },\n"
			    "  { url = base, timeout_ms = 0 }, { url = base, timeout_ms = 10^9 },\n"
			    "  { url = base, body = ('x'):rep(1024 * 1024 + 1), method = 'POST' },\n"
			    "}\n"
			    "local many = {}\n"
			    "for i = 1, 70 do many['X-H' .. i] = 'v' end\n"
			    "bad[#bad + 1] = { url = base, headers = many }\n"
			    "for round = 1, 20 do\n"
			    "  for i, r in ipairs(bad) do\n"
			    "    local ok, err = pcall(http.request, r)\n"
			    "    assert(not ok, 'case ' .. i .. ' did not raise')\n"
			    "    assert(tostring(err):find('http.request', 1, true), err)\n"
			    "  end\n"
			    "end\n"));

	lua_close(L);
	atomic_store(&stop, 1);
	pthread_join(server, NULL);
	close(listen_fd);
	return check_done();
}
