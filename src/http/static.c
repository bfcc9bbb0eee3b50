/* http static files: the web console at /ui (files of UI_DIR, index.html
 * for /ui and /ui/) and the documentation at /docs (DOCS_DIR/api.html for
 * /docs and /docs/, its assets at /docs/<name>). No API key: the pages hold
 * no data (the console asks for a key and calls the API with it). Only
 * plain names are served: a percent-encoded path, an empty, hidden, "." or
 * ".." segment, or a file whose real path leaves the directory (a symlink
 * out) is answered 404, as a missing file is. Every page carries a strict
 * Content-Security-Policy (no inline script or style, no framing), nosniff
 * and no-referrer; files are revalidated by ETag. */
#include "http/server_internal.h"
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest name under a directory that is served (the console's files are
 * a handful of short names). */
#define STATIC_NAME_MAX 200

/* default-src 'none': whatever a page has not been allowed explicitly
 * (plugins, frames, workers, manifests) it cannot load. connect-src 'self':
 * the console calls this server's API and nothing else. img-src data: for
 * icons inlined in the stylesheet. form-action 'none': the key form is
 * handled by script; were the script gone, the browser must not submit the
 * key as a query string. */
const char *const http_static_headers[] = {
	"Content-Security-Policy",
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
	"X-Frame-Options", "DENY",
	"Referrer-Policy", "no-referrer",
	"Cross-Origin-Opener-Policy", "same-origin",
	"Cross-Origin-Resource-Policy", "same-origin",
	"Permissions-Policy", "camera=(), microphone=(), geolocation=()",
	NULL,
};

int http_static_name_ok(const char *rel)
{
	size_t n = strlen(rel);
	if (n == 0 || n > STATIC_NAME_MAX)
		return 0;
	const char *seg = rel;
	for (size_t i = 0; i <= n; i++) {
		char ch = rel[i];
		if (ch == '/' || ch == '\0') {
			/* empty ("//", a trailing '/'), hidden, "." and ".." */
			if (rel + i == seg || seg[0] == '.')
				return 0;
			seg = rel + i + 1;
			continue;
		}
		int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
			    ch == '.' || ch == '-' || ch == '_';
		if (!plain)
			return 0;
	}
	return 1;
}

const char *http_static_type(const char *name)
{
	static const struct {
		const char *ext, *type;
	} types[] = {
		{ ".html", "text/html; charset=utf-8" },
		{ ".css", "text/css; charset=utf-8" },
		{ ".js", "text/javascript; charset=utf-8" },
		{ ".mjs", "text/javascript; charset=utf-8" },
		{ ".json", "application/json" },
		{ ".map", "application/json" },
		{ ".svg", "image/svg+xml" },
		{ ".png", "image/png" },
		{ ".ico", "image/x-icon" },
		{ ".woff2", "font/woff2" },
		{ ".txt", "text/plain; charset=utf-8" },
		{ NULL, NULL },
	};
	const char *dot = strrchr(name, '.');
	const char *slash = strrchr(name, '/');
	if (dot && (!slash || dot > slash))
		for (int i = 0; types[i].ext; i++)
			if (strcasecmp(dot, types[i].ext) == 0)
				return types[i].type;
	return "application/octet-stream";
}

static enum MHD_Result not_found(struct MHD_Connection *c, struct request *rq)
{
	return http_send_error(c, rq, 404, "not_found", NULL, "no such file");
}

/* The real path of dir/rel when it is a regular file inside dir's real
 * path (a symlink may point within it, not out), opened; -1 otherwise. */
static int open_inside(const char *dir, const char *rel, struct stat *st)
{
	char root[PATH_MAX], path[PATH_MAX], real[PATH_MAX];
	int fd = -1;
	if (!realpath(dir, root))
		goto out;
	if ((size_t)snprintf(path, sizeof path, "%s/%s", root, rel) >= sizeof path)
		goto out;
	if (!realpath(path, real))
		goto out;
	size_t rl = strlen(root);
	if (strncmp(real, root, rl) != 0 || real[rl] != '/')
		goto out;
	fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		goto out;
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		fd = -1;
	}
out:
	return fd;
}

/* An If-None-Match list holds etag (or is "*"). */
static int etag_matches(const char *inm, const char *etag)
{
	if (!inm)
		return 0;
	if (strcmp(inm, "*") == 0)
		return 1;
	size_t el = strlen(etag);
	for (const char *p = inm; (p = strstr(p, etag)) != NULL; p += el) {
		char after = p[el];
		if (after == '\0' || after == ',' || after == ' ')
			return 1;
	}
	return 0;
}

enum MHD_Result http_static(struct MHD_Connection *c, struct request *rq)
{
	int ui = strcmp(rq->route->name, "ui") == 0;
	const char *dir = ui ? http_cfg->ui_dir : http_cfg->docs_dir;
	const char *index = ui ? "index.html" : "api.html";
	/* rq->param: what follows the route's path, "" or "/..." (decoded). */
	const char *rest = rq->param ? rq->param : "";
	if (rq->pct_path || !dir)
		return not_found(c, rq);
	const char *rel = (rest[0] == '\0' || strcmp(rest, "/") == 0) ? index : rest + 1;
	if (!http_static_name_ok(rel))
		return not_found(c, rq);
	struct stat st;
	int fd = open_inside(dir, rel, &st);
	if (fd < 0)
		return not_found(c, rq);
	char etag[64];
	snprintf(etag, sizeof etag, "\"%llx-%llx\"", (unsigned long long)st.st_size,
		 (unsigned long long)st.st_mtim.tv_sec * 1000000000ULL + (unsigned long long)st.st_mtim.tv_nsec);
	const char *hdrs[2 * 9 + 1];
	int n = 0;
	for (int i = 0; http_static_headers[i]; i++)
		hdrs[n++] = http_static_headers[i];
	hdrs[n++] = "ETag";
	hdrs[n++] = etag;
	/* Revalidated on every use: a new release of the console is seen at
	 * once, and an unchanged file costs a 304. */
	hdrs[n++] = "Cache-Control";
	hdrs[n++] = "no-cache";
	hdrs[n] = NULL;
	const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	struct MHD_Response *resp;
	int status = 200;
	if (etag_matches(inm, etag)) {
		close(fd);
		status = 304;
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	} else {
		/* MHD owns fd from here (closed with the response), and leaves the
		 * body out of an answer to HEAD. */
		resp = MHD_create_response_from_fd((size_t)st.st_size, fd);
		if (!resp)
			close(fd);
	}
	if (!resp)
		return MHD_NO;
	return http_queue(c, rq, status, resp, status == 200 ? http_static_type(rel) : NULL, hdrs);
}
