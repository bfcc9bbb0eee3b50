/* webhook: Standard Webhooks verification on OpenSSL. */
#include "webhook.h"
#include "util/crypto.h"
#include "util/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int valid_part(const char *s)
{
	if (!s || !*s || strlen(s) > 256)
		return 0;
	for (; *s; s++)
		if (*s == '.' || (unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

int webhook_verify(const char *secret, const char *id, const char *timestamp, const char *sig_header,
		   const char *body, size_t body_len, long long now, char *reason, size_t reasonlen)
{
	if (!valid_part(id) || !valid_part(timestamp) || !sig_header || !*sig_header) {
		snprintf(reason, reasonlen, "missing or malformed webhook-id, webhook-timestamp or webhook-signature");
		return -1;
	}
	char *end;
	errno = 0;
	long long ts = strtoll(timestamp, &end, 10);
	if (*end || end == timestamp) {
		snprintf(reason, reasonlen, "webhook-timestamp is not a number");
		return -1;
	}
	/* Compared as bounds, not as differences: now - ts overflows for a
	 * timestamp near LLONG_MIN (strtoll's answer to a huge negative one). */
	if (errno == ERANGE || ts < now - WEBHOOK_TOLERANCE_S || ts > now + WEBHOOK_TOLERANCE_S) {
		snprintf(reason, reasonlen, "webhook-timestamp is more than 5 minutes away from now");
		return -1;
	}
	if (strncmp(secret, "v1,", 3) == 0)
		secret += 3;
	if (strncmp(secret, "whsec_", 6) == 0)
		secret += 6;
	size_t keylen;
	unsigned char *key = crypto_base64_decode(secret, strlen(secret), &keylen);
	if (!key) {
		snprintf(reason, reasonlen, "WEBHOOK_SECRET is not a whsec_ base64 secret");
		return -1;
	}
	size_t idl = strlen(id), tsl = strlen(timestamp);
	size_t n = idl + 1 + tsl + 1 + body_len;
	char *msg = xmalloc(n + 1);
	memcpy(msg, id, idl);
	msg[idl] = '.';
	memcpy(msg + idl + 1, timestamp, tsl);
	msg[idl + 1 + tsl] = '.';
	memcpy(msg + idl + tsl + 2, body, body_len);
	unsigned char mac[32];
	crypto_hmac_sha256(key, keylen, msg, n, mac);
	free(msg);
	free(key);
	char *expected = crypto_base64(mac, 32, 0);
	size_t elen = strlen(expected);

	/* Space-separated "v1,<base64>" items; a trailing ',' (Supabase Auth's
	 * ", " joining) is tolerated; other versions are skipped. */
	int ok = 0;
	const char *p = sig_header;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *item = p;
		while (*p && *p != ' ')
			p++;
		size_t len = (size_t)(p - item);
		while (len && item[len - 1] == ',')
			len--;
		if (len > 3 && strncmp(item, "v1,", 3) == 0)
			ok |= crypto_ct_equal(item + 3, len - 3, expected, elen);
	}
	free(expected);
	if (!ok) {
		snprintf(reason, reasonlen, "no webhook-signature matches");
		return -1;
	}
	return 0;
}

int webhook_bearer_ok(const char *secret, const char *token)
{
	if (!secret || !token)
		return 0;
	return crypto_ct_equal(token, strlen(token), secret, strlen(secret));
}
