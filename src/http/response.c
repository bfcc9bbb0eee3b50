/* http answers: every response carries nosniff, the request id and
 * Cache-Control: no-store (unless it brings its own: a static file); errors follow the JSON error model
 * {"error":{"code":..., "message":...}} and record the status for metrics. */
#include "http/server_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int has_header(const char *const *headers, const char *name)
{
	for (int i = 0; headers && headers[i]; i += 2)
		if (strcasecmp(headers[i], name) == 0)
			return 1;
	return 0;
}

enum MHD_Result http_queue(struct MHD_Connection *c, struct request *rq, int status, struct MHD_Response *resp,
			   const char *ctype, const char *const *headers)
{
	if (ctype)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	/* API answers are never cached; a static file says how it may be. */
	if (!has_header(headers, "Cache-Control"))
		MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (rq)
		MHD_add_response_header(resp, "X-Request-Id", rq->id);
	for (int i = 0; headers && headers[i]; i += 2)
		MHD_add_response_header(resp, headers[i], headers[i + 1]);
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	if (rq)
		rq->status = status;
	return ret;
}

enum MHD_Result http_send_body(struct MHD_Connection *c, struct request *rq, int status, const char *ctype,
			       const char *body, size_t len, const char *const *headers)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	return http_queue(c, rq, status, resp, ctype, headers);
}

enum MHD_Result http_send_json(struct MHD_Connection *c, struct request *rq, int status, const char *json,
			       const char *const *headers)
{
	return http_send_body(c, rq, status, "application/json", json, strlen(json), headers);
}

enum MHD_Result http_send_error(struct MHD_Connection *c, struct request *rq, int status, const char *code,
				const char *const *headers, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
	sbuf_add_json_string(&b, msg, strlen(msg));
	sbuf_adds(&b, "}}");
	enum MHD_Result r = http_send_json(c, rq, status, b.data, headers);
	sbuf_free(&b);
	return r;
}
