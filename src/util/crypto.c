/* crypto: thin wrappers over OpenSSL. */
#include "crypto.h"
#include "util/xalloc.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

void crypto_sha256(const void *data, size_t len, unsigned char out[32])
{
	SHA256(data, len, out);
}

void crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
			unsigned char out[32])
{
	unsigned int outlen = 32;
	HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, out, &outlen);
}

size_t crypto_base64_into(const void *data, size_t len, int url, char *out)
{
	int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	out[n] = '\0';
	if (url) {
		for (int i = 0; i < n; i++) {
			if (out[i] == '+')
				out[i] = '-';
			else if (out[i] == '/')
				out[i] = '_';
		}
		while (n > 0 && out[n - 1] == '=')
			out[--n] = '\0';
	}
	return (size_t)n;
}

char *crypto_base64(const void *data, size_t len, int url)
{
	char *out = xmalloc(CRYPTO_BASE64_LEN(len));
	crypto_base64_into(data, len, url, out);
	return out;
}

int crypto_base64_decode_into(const char *s, size_t len, unsigned char *out, size_t *outlen)
{
	/* Normalise to the standard alphabet with padding, then decode. */
	int rc = -1;
	char *norm = xmalloc(len + 4);
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/' || c == '='))
			goto out;
		norm[n++] = c;
	}
	while (n % 4)
		norm[n++] = '=';
	size_t pad = 0;
	if (n >= 1 && norm[n - 1] == '=')
		pad++;
	if (n >= 2 && norm[n - 2] == '=')
		pad++;
	int m = n ? EVP_DecodeBlock(out, (unsigned char *)norm, (int)n) : 0;
	if (m < 0 || (size_t)m < pad)
		goto out;
	*outlen = (size_t)m - pad;
	rc = 0;
out:
	free(norm);
	return rc;
}

unsigned char *crypto_base64_decode(const char *s, size_t len, size_t *outlen)
{
	unsigned char *out = xmalloc(CRYPTO_BASE64_DECODED_MAX(len));
	if (crypto_base64_decode_into(s, len, out, outlen) < 0) {
		free(out);
		return NULL;
	}
	return out;
}

void crypto_hex(const unsigned char *data, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[data[i] >> 4];
		out[2 * i + 1] = digits[data[i] & 15];
	}
	out[2 * len] = '\0';
}

int crypto_random(void *buf, size_t len)
{
	return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

int crypto_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	/* Compare against a same-length copy so the time does not reveal a prefix. */
	if (alen != blen) {
		(void)CRYPTO_memcmp(a, a, alen);
		return 0;
	}
	return CRYPTO_memcmp(a, b, alen) == 0;
}
