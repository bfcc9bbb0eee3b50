/* outbox: delivers the store's outbox rows to Supabase, in order per
 * subscription, from one sender thread. Owns retry with capped exponential
 * backoff and jitter, parking of rows PostgREST refuses for good (reported,
 * never retried for ever), the depth and delivery metrics, and Supabase's
 * part of readiness. The rows themselves (table, payload) are written by
 * Lua in the same transaction as the state change they describe. */
#ifndef MRPROV_SUPABASE_OUTBOX_H
#define MRPROV_SUPABASE_OUTBOX_H

#include <stddef.h>

int outbox_start(const char *url, const char *key, int timeout_s, char *err, size_t errlen);
void outbox_notify(void);
/* Stops the sender after the delivery in flight, if any. */
void outbox_stop(void);
/* Stops the sender after a last delivery attempt, within secs, for every
 * pending row (their backoff ignored); what is left stays for the next start.
 * Returns 0, or -1 when the sender was still busy at the bound (then it is
 * left running and the store must not be closed). */
int outbox_stop_within(double secs);
/* 0 when Supabase is not configured or answered within max_age_s; else -1
 * and why. */
int outbox_check(double max_age_s, char *reason, size_t reasonlen);

#endif
