/* fuzz_webhook: Standard Webhooks verification and the bearer check
 * (src/webhook.c). Input framing: four lines — secret, webhook-id,
 * webhook-timestamp, webhook-signature — then the body (the rest, any bytes).
 * A missing line is empty. The clock is fixed at the test vectors' time.
 * Invariants: an accepted delivery carries "v1,<HMAC-SHA256 over
 * id.timestamp.body>" (computed here with OpenSSL directly) within 5 minutes
 * of now; the bearer check is string equality. */
#include "util/crypto.h"
#include "webhook.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1614265330LL

/* The next line of [*p, end) as a C string (cut at a NUL, as a header would be). */
static char *next_line(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *s = *p;
	const uint8_t *nl = memchr(s, '\n', (size_t)(end - s));
	const uint8_t *e = nl ? nl : end;
	*p = nl ? nl + 1 : end;
	char *line = strndup((const char *)s, (size_t)(e - s));
	if (!line)
		abort();
	return line;
}

/* 1 when header holds the space-separated item "v1,<sig>" (trailing commas allowed). */
static int has_item(const char *header, const char *sig)
{
	size_t sl = strlen(sig);
	for (const char *p = header; *p;) {
		while (*p == ' ')
			p++;
		const char *item = p;
		while (*p && *p != ' ')
			p++;
		size_t len = (size_t)(p - item);
		while (len && item[len - 1] == ',')
			len--;
		if (len == sl + 3 && memcmp(item, "v1,", 3) == 0 && memcmp(item + 3, sig, sl) == 0)
			return 1;
	}
	return 0;
}

static void check_accepted(const char *secret, const char *id, const char *ts, const char *sig,
			   const uint8_t *body, size_t body_len)
{
	long long t = strtoll(ts, NULL, 10);
	if (t < NOW - WEBHOOK_TOLERANCE_S || t > NOW + WEBHOOK_TOLERANCE_S)
		abort();
	if (strncmp(secret, "v1,", 3) == 0)
		secret += 3;
	if (strncmp(secret, "whsec_", 6) == 0)
		secret += 6;
	size_t keylen;
	unsigned char *key = crypto_base64_decode(secret, strlen(secret), &keylen);
	if (!key)
		abort();
	size_t il = strlen(id), tl = strlen(ts);
	unsigned char *msg = malloc(il + tl + 2 + body_len + 1);
	if (!msg)
		abort();
	memcpy(msg, id, il);
	msg[il] = '.';
	memcpy(msg + il + 1, ts, tl);
	msg[il + 1 + tl] = '.';
	memcpy(msg + il + tl + 2, body, body_len);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	if (!HMAC(EVP_sha256(), key, (int)keylen, msg, il + tl + 2 + body_len, mac, &maclen))
		abort();
	free(msg);
	free(key);
	unsigned char b64[64];
	EVP_EncodeBlock(b64, mac, (int)maclen);
	if (!has_item(sig, (const char *)b64))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	char *secret = next_line(&p, end);
	char *id = next_line(&p, end);
	char *ts = next_line(&p, end);
	char *sig = next_line(&p, end);
	const uint8_t *body = p;
	size_t body_len = (size_t)(end - p);

	char reason[200] = "";
	if (webhook_verify(secret, id, ts, sig, (const char *)body, body_len, NOW, reason, sizeof reason) == 0)
		check_accepted(secret, id, ts, sig, body, body_len);
	else if (!reason[0])
		abort(); /* a refusal always says why */

	if (webhook_bearer_ok(secret, sig) != (strcmp(secret, sig) == 0))
		abort();

	free(secret);
	free(id);
	free(ts);
	free(sig);
	return 0;
}
