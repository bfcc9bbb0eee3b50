/* http: the daemon. Starts and stops libmicrohttpd (one thread per
 * connection) and the request-deadline reaper, and carries each request
 * through MHD's callbacks: first sight (framing, route, key, content type),
 * body up to HTTP_MAX_BODY, dispatch (router.c), metrics when it completes.
 * Lua states are borrowed from the runtime's pool for one request. */
#include "http/server_internal.h"
#include "config.h"
#include "metrics.h"
#include "util/clock.h"
#include "util/crypto.h"
#include "util/log.h"
#include "util/xalloc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

const struct config *http_cfg;

static struct MHD_Daemon *daemon_;
static int bound_port;
static atomic_int draining; /* http_quiesce was called */

int http_is_draining(void)
{
	return atomic_load(&draining);
}

/* A request id: unique, not secret. A per-thread xorshift64* seeded from
 * getrandom, instead of OpenSSL's locked DRBG on every request (and its
 * initialisation, megabytes of libcrypto pages, in a service that has not
 * needed crypto yet). */
static void request_id(char out[17])
{
	static _Thread_local uint64_t s;
	if (!s) {
		if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
			s = (uint64_t)(clock_real() * 1e9) ^ (uint64_t)(uintptr_t)&s;
		s |= 1;
	}
	s ^= s >> 12;
	s ^= s << 25;
	s ^= s >> 27;
	uint64_t v = s * 0x2545F4914F6CDD1DULL;
	unsigned char b[8];
	memcpy(b, &v, sizeof b);
	crypto_hex(b, sizeof b, out);
}

/* MHD's URI log callback: the first sight of a request, before MHD splits
 * off the query and percent-decodes the target in place. Its answer becomes
 * the request's context. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	(void)cls;
	(void)c;
	struct request *rq = xcalloc(1, sizeof *rq);
	sbuf_init(&rq->body);
	rq->t0 = clock_mono();
	request_id(rq->id);
	if (uri) {
		rq->raw_uri = uri;
		rq->raw_len = strlen(uri);
		rq->pct_nul = strstr(uri, "%00") != NULL;
		rq->pct_path = strcspn(uri, "%") < strcspn(uri, "?");
	}
	return rq;
}

/* The request line and headers have arrived: refuses what is malformed,
 * routes it, checks the API key and, for a JSON body, its type and declared
 * length, all before the body is read. */
static enum MHD_Result first_sight(struct MHD_Connection *c, struct request *rq, const char *url, const char *method,
				   const char *version)
{
	const char *why = http_malformed(c, rq, url, version);
	if (why) {
		/* Answered before the body is read: MHD then closes the
		 * connection instead of guessing where the next request
		 * starts. */
		return http_send_error(c, rq, 400, "bad_request", NULL, "malformed request: %s", why);
	}

	char allowed[64];
	rq->route = http_find_route(method, url, &rq->param, allowed, sizeof allowed);
	if (!rq->route) {
		if (allowed[0]) {
			const char *h[] = { "Allow", allowed, NULL };
			return http_send_error(c, rq, 405, "method_not_allowed", h, "%s is not allowed here; use %s",
					       method, allowed);
		}
		return http_send_error(c, rq, 404, "not_found", NULL, "no such route");
	}
	if ((rq->route->flags & R_AUTH) && !http_authorized(c)) {
		const char *h[] = { "WWW-Authenticate", "Bearer", NULL };
		return http_send_error(c, rq, 401, "unauthorized", h, "missing or invalid API key");
	}
	if (rq->route->flags & R_BODY) {
		const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
		if (!http_is_json_type(ct))
			return http_send_error(c, rq, 415, "unsupported_media_type", NULL,
					       "Content-Type must be application/json");
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > HTTP_MAX_BODY)
			return http_send_error(c, rq, 413, "payload_too_large", NULL,
					       "request body is larger than %d bytes", HTTP_MAX_BODY);
	}
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
	(void)cls;
	struct request *rq = *con_cls; /* from on_uri, which MHD calls first */
	if (!rq->started) {
		rq->started = 1;
		return first_sight(c, rq, url, method, version);
	}
	if (rq->status) { /* already answered; discard what is still arriving */
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		if (rq->body.len + *upload_size > HTTP_MAX_BODY)
			rq->too_large = 1;
		else
			sbuf_add(&rq->body, upload_data, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	http_deadline_mark(c, 0); /* the whole request is here: no deadline for the answer */
	if (rq->too_large)
		return http_send_error(c, rq, 413, "payload_too_large", NULL, "request body is larger than %d bytes",
				       HTTP_MAX_BODY);
	return http_dispatch(c, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)toe;
	http_deadline_mark(c, 1); /* the next request's deadline runs from here */
	struct request *rq = *con_cls;
	if (!rq)
		return;
	const char *route = rq->route ? rq->route->name : "unknown";
	char labels[128];
	snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", route, rq->status);
	metrics_add("mrprov_http_requests_total", labels, 1);
	snprintf(labels, sizeof labels, "route=\"%s\"", route);
	metrics_observe("mrprov_http_request_duration_seconds", labels, clock_mono() - rq->t0);
	sbuf_free(&rq->body);
	free(rq);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_write(LOG_WARNING, msg, "\"component\":\"http\"");
}

int http_start(const struct config *c, char *err, size_t errlen)
{
	http_cfg = c;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG |
			 MHD_USE_ITC;
	const char *host = strcmp(c->host, "localhost") == 0 ? "127.0.0.1" : c->host;
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)c->port);
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)c->port);
		flags |= MHD_USE_IPv6;
	} else {
		snprintf(err, errlen, "HOST: %s is not an address", c->host);
		return -1;
	}
	daemon_ = MHD_start_daemon(flags, (uint16_t)c->port, NULL, NULL, on_request, NULL,
				   MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				   MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
				   MHD_OPTION_NOTIFY_CONNECTION, http_deadline_on_connection, NULL,
				   MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
				   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
				   MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
				   MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)c->http_max_per_ip,
				   MHD_OPTION_END);
	if (!daemon_) {
		snprintf(err, errlen, "PORT: cannot listen on %s:%d (in use, or not permitted)", c->host, c->port);
		return -1;
	}
	if (http_deadline_start(c->http_request_timeout, err, errlen) < 0) {
		MHD_stop_daemon(daemon_);
		daemon_ = NULL;
		return -1;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
	bound_port = info ? info->port : c->port;
	return 0;
}

int http_port(void)
{
	return bound_port;
}

void http_quiesce(void)
{
	atomic_store(&draining, 1);
	if (!daemon_)
		return;
	/* The listening socket is closed, so new connections are refused at
	 * once instead of waiting in the backlog until the process exits. */
	MHD_socket fd = MHD_quiesce_daemon(daemon_);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

void http_stop(void)
{
	if (daemon_)
		MHD_stop_daemon(daemon_);
	daemon_ = NULL;
	http_deadline_stop();
}
