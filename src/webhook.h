/* webhook: verification of incoming Supabase webhooks — Standard Webhooks
 * signatures (HMAC-SHA256, whsec_ secrets, several signatures, 5-minute
 * tolerance both ways, constant-time comparison) and the shared-secret
 * bearer header. Pure functions; the secret never leaves C. */
#ifndef MRPROV_WEBHOOK_H
#define MRPROV_WEBHOOK_H

#include <stddef.h>

#define WEBHOOK_TOLERANCE_S 300

/* 0 when one v1 signature in sig_header matches; -1 with why. secret:
 * "whsec_<base64>" (or "v1,whsec_…", or bare base64). now: Unix seconds. */
int webhook_verify(const char *secret, const char *id, const char *timestamp, const char *sig_header,
		   const char *body, size_t body_len, long long now, char *reason, size_t reasonlen);
/* 1 when token equals secret (constant time). */
int webhook_bearer_ok(const char *secret, const char *token);

#endif
