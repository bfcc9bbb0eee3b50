/* bind_crypto: hashing, HMAC, base64, randomness and the per-instance secret
 * derivation for Lua. PROVISIONER_SECRET itself never reaches Lua. */
#include "config.h"
#include "lua/runtime.h"
#include "util/crypto.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

static int l_sha256_hex(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	unsigned char d[32];
	char hex[65];
	crypto_sha256(s, n, d);
	crypto_hex(d, 32, hex);
	lua_pushstring(L, hex);
	return 1;
}

static int l_hmac_sha256(lua_State *L)
{
	size_t kn, mn;
	const char *k = luaL_checklstring(L, 1, &kn);
	const char *m = luaL_checklstring(L, 2, &mn);
	unsigned char d[32];
	crypto_hmac_sha256(k, kn, m, mn, d);
	if (lua_toboolean(L, 3)) { /* raw bytes */
		lua_pushlstring(L, (const char *)d, 32);
	} else {
		char hex[65];
		crypto_hex(d, 32, hex);
		lua_pushstring(L, hex);
	}
	return 1;
}

static int l_base64(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	int url = lua_toboolean(L, 2); /* before the buffer: it takes a stack slot */
	/* Built in a luaL_Buffer: nothing to free if the push runs out of memory. */
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, CRYPTO_BASE64_LEN(n));
	luaL_pushresultsize(&b, crypto_base64_into(s, n, url, out));
	return 1;
}

static int l_base64_decode(lua_State *L)
{
	size_t n, outlen;
	const char *s = luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, CRYPTO_BASE64_DECODED_MAX(n));
	if (crypto_base64_decode_into(s, n, out, &outlen) < 0) {
		luaL_pushfail(L);
		lua_pushliteral(L, "not base64");
		return 2;
	}
	luaL_pushresultsize(&b, outlen);
	return 1;
}

/* random_token(n [, alphabet]): n characters drawn uniformly from alphabet
 * (default [a-z0-9]) by rejection sampling. */
static int l_random_token(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	size_t alen;
	const char *alpha = luaL_optlstring(L, 2, "abcdefghijklmnopqrstuvwxyz0123456789", &alen);
	luaL_argcheck(L, n > 0 && n <= 256, 1, "length must be 1..256");
	luaL_argcheck(L, alen > 1 && alen <= 256, 2, "alphabet must have 2..256 characters");
	unsigned limit = 256 - (256 % (unsigned)alen);
	char out[256];
	lua_Integer i = 0;
	while (i < n) {
		unsigned char buf[64];
		if (crypto_random(buf, sizeof buf) < 0)
			return luaL_error(L, "no randomness available");
		for (size_t j = 0; j < sizeof buf && i < n; j++)
			if (buf[j] < limit)
				out[i++] = alpha[buf[j] % alen];
	}
	lua_pushlstring(L, out, (size_t)n);
	return 1;
}

static int l_ct_equal(lua_State *L)
{
	size_t an, bn;
	const char *a = luaL_checklstring(L, 1, &an);
	const char *b = luaL_checklstring(L, 2, &bn);
	lua_pushboolean(L, crypto_ct_equal(a, an, b, bn));
	return 1;
}

/* derive(label): a stable secret for label under PROVISIONER_SECRET,
 * base64url of HMAC-SHA256 (43 characters). */
static int l_derive(lua_State *L)
{
	size_t n;
	const char *label = luaL_checklstring(L, 1, &n);
	const struct config *c = rt_config();
	if (!c || !c->secret)
		return luaL_error(L, "PROVISIONER_SECRET is not loaded");
	unsigned char d[32];
	crypto_hmac_sha256(c->secret, c->secret_len, label, n, d);
	char out[CRYPTO_BASE64_LEN(32)];
	crypto_base64_into(d, 32, 1, out);
	lua_pushstring(L, out);
	return 1;
}

int luaopen_mrprov_crypto(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "sha256_hex", l_sha256_hex },
		{ "hmac_sha256", l_hmac_sha256 },
		{ "base64", l_base64 },
		{ "base64_decode", l_base64_decode },
		{ "random_token", l_random_token },
		{ "ct_equal", l_ct_equal },
		{ "derive", l_derive },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
