/* pgrst: libcurl easy handle with keep-alive; JSON errors summarised
 * without a JSON parser (the fields are flat strings). */
#include "supabase/client.h"
#include "supabase/libcurl.h"
#include "config.h"
#include "util/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pgrst {
	const struct libcurl *curl;
	CURL *h;
	char *base;
	struct curl_slist *auth;
	long timeout_ms; /* whole request, connect included */
};

struct pgrst *pgrst_new(const char *base_url, const char *key, char *err, size_t errlen)
{
	const struct libcurl *curl = libcurl_get(err, errlen);
	if (!curl)
		return NULL;
	struct pgrst *c = xcalloc(1, sizeof *c);
	c->curl = curl;
	c->h = curl->easy_init();
	c->timeout_ms = CONFIG_SUPABASE_TIMEOUT_S * 1000L;
	size_t n = strlen(base_url);
	while (n && base_url[n - 1] == '/')
		n--;
	c->base = xstrndup(base_url, n);
	char line[4096];
	snprintf(line, sizeof line, "apikey: %s", key);
	c->auth = c->curl->slist_append(NULL, line);
	snprintf(line, sizeof line, "Authorization: Bearer %s", key);
	c->auth = c->curl->slist_append(c->auth, line);
	return c;
}

void pgrst_set_timeout(struct pgrst *c, double secs)
{
	c->timeout_ms = secs > 0 ? (long)(secs * 1000) + 1 : CONFIG_SUPABASE_TIMEOUT_S * 1000L;
}

void pgrst_free(struct pgrst *c)
{
	if (!c)
		return;
	c->curl->easy_cleanup(c->h);
	c->curl->slist_free_all(c->auth);
	free(c->base);
	free(c);
}

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
	struct sbuf *b = ud;
	if (b->len < 1024 * 1024)
		sbuf_add(b, p, size * n);
	return size * n;
}

int pgrst_request(struct pgrst *c, const char *method, const char *path, const char *prefer, const char *body,
		  long *status, struct sbuf *resp, char *err, size_t errlen)
{
	char url[2048];
	snprintf(url, sizeof url, "%s/rest/v1/%s", c->base, path);
	struct curl_slist *h = NULL;
	for (struct curl_slist *a = c->auth; a; a = a->next)
		h = c->curl->slist_append(h, a->data);
	h = c->curl->slist_append(h, "Accept: application/json");
	if (body)
		h = c->curl->slist_append(h, "Content-Type: application/json");
	char pref[256];
	if (prefer) {
		snprintf(pref, sizeof pref, "Prefer: %s", prefer);
		h = c->curl->slist_append(h, pref);
	}
	c->curl->easy_reset(c->h);
	c->curl->easy_setopt(c->h, CURLOPT_URL, url);
	c->curl->easy_setopt(c->h, CURLOPT_HTTPHEADER, h);
	c->curl->easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, c->timeout_ms < 5000L ? c->timeout_ms : 5000L);
	c->curl->easy_setopt(c->h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
	c->curl->easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
	c->curl->easy_setopt(c->h, CURLOPT_TCP_KEEPALIVE, 1L);
	c->curl->easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
	c->curl->easy_setopt(c->h, CURLOPT_WRITEDATA, resp);
	c->curl->easy_setopt(c->h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (strcmp(method, "POST") == 0) {
		c->curl->easy_setopt(c->h, CURLOPT_POST, 1L);
		c->curl->easy_setopt(c->h, CURLOPT_POSTFIELDS, body ? body : "");
		c->curl->easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
	} else if (strcmp(method, "GET") != 0) {
		c->curl->easy_setopt(c->h, CURLOPT_CUSTOMREQUEST, method);
		if (body)
			c->curl->easy_setopt(c->h, CURLOPT_POSTFIELDS, body);
	}
	CURLcode rc = c->curl->easy_perform(c->h);
	c->curl->slist_free_all(h);
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "%s %s: %s", method, url, c->curl->easy_strerror(rc));
		return -1;
	}
	c->curl->easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, status);
	return 0;
}

/* Copies the string value of "key" in a flat JSON object into out. */
static int json_field(const char *body, const char *key, char *out, size_t outlen)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\"", key);
	const char *p = strstr(body, pat);
	if (!p)
		return 0;
	p += strlen(pat);
	while (*p == ' ' || *p == ':')
		p++;
	if (*p != '"')
		return 0;
	p++;
	size_t n = 0;
	while (*p && *p != '"' && n + 1 < outlen) {
		if (*p == '\\' && p[1])
			p++;
		out[n++] = *p++;
	}
	out[n] = '\0';
	return 1;
}

void pgrst_error_line(const char *body, size_t len, char *out, size_t outlen)
{
	char code[64] = "", msg[300] = "", details[300] = "", hint[200] = "";
	if (!body || !len) {
		snprintf(out, outlen, "(no body)");
		return;
	}
	int has_msg = json_field(body, "message", msg, sizeof msg);
	json_field(body, "code", code, sizeof code);
	json_field(body, "details", details, sizeof details);
	json_field(body, "hint", hint, sizeof hint);
	if (!has_msg) {
		snprintf(out, outlen, "%.*s", (int)(len < 300 ? len : 300), body);
		return;
	}
	snprintf(out, outlen, "%s%s%s%s%s%s%s", code[0] ? code : "gateway", ": ", msg, details[0] ? " — " : "",
		 details, hint[0] ? " (hint: " : "", hint[0] ? hint : "");
	if (hint[0] && strlen(out) + 2 < outlen)
		strcat(out, ")");
}
