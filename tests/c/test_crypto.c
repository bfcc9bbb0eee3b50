/* Unit tests for src/util/crypto.c: RFC 4231 HMAC vectors, SHA-256, base64. */
#include "check.h"
#include "util/crypto.h"

#include <stdlib.h>

static void hex_of(const unsigned char *d, size_t n, char *out)
{
	crypto_hex(d, n, out);
}

int main(void)
{
	unsigned char d[32];
	char hex[65];

	crypto_sha256("abc", 3, d);
	hex_of(d, 32, hex);
	CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

	/* RFC 4231 test case 2 */
	crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d);
	hex_of(d, 32, hex);
	CHECK_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

	/* RFC 4231 test case 1 */
	unsigned char key[20];
	memset(key, 0x0b, sizeof key);
	crypto_hmac_sha256(key, sizeof key, "Hi There", 8, d);
	hex_of(d, 32, hex);
	CHECK_STR(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

	char *b = crypto_base64("foobar", 6, 0);
	CHECK_STR(b, "Zm9vYmFy");
	free(b);
	b = crypto_base64("fo", 2, 0);
	CHECK_STR(b, "Zm8=");
	free(b);
	b = crypto_base64("\xfb\xff", 2, 1);
	CHECK_STR(b, "-_8");
	free(b);
	b = crypto_base64("", 0, 0);
	CHECK_STR(b, "");
	free(b);

	size_t n;
	unsigned char *raw = crypto_base64_decode("Zm8=", 4, &n);
	CHECK(raw && n == 2 && memcmp(raw, "fo", 2) == 0);
	free(raw);
	raw = crypto_base64_decode("Zm8", 3, &n);
	CHECK(raw && n == 2 && memcmp(raw, "fo", 2) == 0);
	free(raw);
	raw = crypto_base64_decode("-_8", 3, &n);
	CHECK(raw && n == 2 && memcmp(raw, "\xfb\xff", 2) == 0);
	free(raw);
	CHECK(crypto_base64_decode("Zm$8", 4, &n) == NULL);

	CHECK(crypto_ct_equal("abc", 3, "abc", 3));
	CHECK(!crypto_ct_equal("abc", 3, "abd", 3));
	CHECK(!crypto_ct_equal("abc", 3, "abcd", 4));
	CHECK(!crypto_ct_equal("", 0, "a", 1));

	unsigned char r1[16], r2[16];
	CHECK(crypto_random(r1, sizeof r1) == 0);
	CHECK(crypto_random(r2, sizeof r2) == 0);
	CHECK(memcmp(r1, r2, sizeof r1) != 0);
	return check_done();
}
