/* crypto: the few primitives mrprov needs, on OpenSSL: SHA-256, HMAC-SHA256,
 * base64 (standard, padded — what `config:set --encoded` expects), random
 * bytes, and constant-time comparison. Knows nothing of keys' meaning. */
#ifndef MRPROV_CRYPTO_H
#define MRPROV_CRYPTO_H

#include <stddef.h>

void crypto_sha256(const void *data, size_t len, unsigned char out[32]);
void crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
			unsigned char out[32]);
/* Bytes the base64 of len bytes takes, NUL included. */
#define CRYPTO_BASE64_LEN(len) (4 * (((len) + 2) / 3) + 1)
/* Bytes decoding len characters of base64 may give, at most. */
#define CRYPTO_BASE64_DECODED_MAX(len) (((len) + 3) / 4 * 3 + 1)
/* Returns a malloc'd NUL-terminated string. url: base64url without padding. */
char *crypto_base64(const void *data, size_t len, int url);
/* The same into out (CRYPTO_BASE64_LEN(len) bytes); returns its length. */
size_t crypto_base64_into(const void *data, size_t len, int url, char *out);
/* Decodes standard or url-safe base64 (padding optional); returns malloc'd bytes
 * and their length in *outlen, or NULL when the input is not base64. */
unsigned char *crypto_base64_decode(const char *s, size_t len, size_t *outlen);
/* The same into out (CRYPTO_BASE64_DECODED_MAX(len) bytes); 0, or -1 when
 * s is not base64. */
int crypto_base64_decode_into(const char *s, size_t len, unsigned char *out, size_t *outlen);
void crypto_hex(const unsigned char *data, size_t len, char *out /* 2*len+1 */);
/* 0 on success. */
int crypto_random(void *buf, size_t len);
/* 1 when equal; time depends only on the lengths. */
int crypto_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
