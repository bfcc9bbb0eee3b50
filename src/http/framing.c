/* http framing checks: refuses (400) requests that two HTTP parsers could
 * read differently (a NUL in the target, Host and Content-Length headers
 * that disagree, Content-Length with Transfer-Encoding), and recognises a
 * JSON Content-Type. Looks at headers only, never at a body. */
#include "http/server_internal.h"

#include <string.h>
#include <strings.h>

struct framing {
	int hosts;		/* Host headers */
	const char *length;	/* the first Content-Length */
	int lengths_differ;	/* another Content-Length says otherwise */
	int chunked;		/* a Transfer-Encoding header */
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	struct framing *f = cls;
	if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
		f->hosts++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		if (!f->length)
			f->length = value ? value : "";
		else if (strcmp(f->length, value ? value : "") != 0)
			f->lengths_differ = 1;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->chunked = 1;
	}
	return MHD_YES;
}

/* Why a request cannot be taken as MHD parsed it, or NULL. MHD 0.9.75
 * (Debian's) takes the first of two Content-Length headers and reads the
 * rest of the body as the next request, accepts HTTP/1.1 without Host, and
 * hands the target on as a C string, so a NUL in it ("%00" or a raw byte)
 * cuts the path that routing sees. */
const char *http_malformed(struct MHD_Connection *c, const struct request *rq, const char *url,
			   const char *version)
{
	/* MHD parsed the target up to the space before the version, within its
	 * one read buffer (parse_initial_message_line): a raw NUL makes the
	 * string on_uri saw shorter than that span. */
	if (rq->pct_nul ||
	    (rq->raw_uri == url && version > url && (size_t)(version - url) - 1 != rq->raw_len))
		return "the request target contains a NUL byte";
	struct framing f = { 0, NULL, 0, 0 };
	MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &f);
	if (f.hosts > 1)
		return "more than one Host header";
	if (f.hosts == 0 && strcmp(version, MHD_HTTP_VERSION_1_0) != 0)
		return "an HTTP/1.1 request needs a Host header";
	if (f.lengths_differ)
		return "conflicting Content-Length headers";
	if (f.length && f.chunked)
		return "both Content-Length and Transfer-Encoding";
	return NULL;
}

int http_is_json_type(const char *ct)
{
	if (!ct)
		return 0;
	while (*ct == ' ')
		ct++;
	size_t n = strlen("application/json");
	if (strncasecmp(ct, "application/json", n) != 0)
		return 0;
	return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}
