/* crypto: the few primitives mrprov needs, on OpenSSL: SHA-256, HMAC-SHA256,
 * base64 (standard, padded — what `config:set --encoded` expects), random
 * bytes, and constant-time comparison. Knows nothing of keys' meaning. */
#ifndef MRPROV_CRYPTO_H
#define MRPROV_CRYPTO_H

#include <stddef.h>

void crypto_sha256(const void *data, size_t len, unsigned char out[32]);
void crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
			unsigned char out[32]);
/* Returns a malloc'd NUL-terminated string. url: base64url without padding. */
char *crypto_base64(const void *data, size_t len, int url);
/* Decodes standard or url-safe base64 (padding optional); returns malloc'd bytes
 * and their length in *outlen, or NULL when the input is not base64. */
unsigned char *crypto_base64_decode(const char *s, size_t len, size_t *outlen);
void crypto_hex(const unsigned char *data, size_t len, char *out /* 2*len+1 */);
/* 0 on success. */
int crypto_random(void *buf, size_t len);
/* 1 when equal; time depends only on the lengths. */
int crypto_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
