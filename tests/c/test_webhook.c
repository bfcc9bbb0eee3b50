/* Unit tests for src/webhook.c with the official Standard Webhooks vectors
 * (reference §2.3) and their negative cases. */
#include "check.h"
#include "webhook.h"

static int verify(const char *secret, const char *id, const char *ts, const char *sig, const char *body,
		  long long now)
{
	char reason[200];
	return webhook_verify(secret, id, ts, sig, body, strlen(body), now, reason, sizeof reason);
}

int main(void)
{
	const char *a_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
	const char *a_id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
	const char *a_body = "{\"test\": 2432232314}";
	const char *a_sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
	long long a_ts = 1614265330;

	CHECK(verify(a_secret, a_id, "1614265330", a_sig, a_body, a_ts) == 0);
	CHECK(verify("v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", a_id, "1614265330", a_sig, a_body, a_ts) == 0);
	CHECK(verify("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", a_id, "1614265330", a_sig, a_body, a_ts) == 0);
	/* Vector B */
	CHECK(verify("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", "1649367553",
		     "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
		     "{\"email\":\"test@example.com\",\"username\":\"test_user\"}", 1649367553) == 0);
	CHECK(verify("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", "1649367553",
		     "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=",
		     "{\"email\":\"test@example.com\",\"username\":\"test_user\"}", 1649367553) < 0);
	/* Several signatures: any v1 match wins; other versions are skipped. */
	CHECK(verify(a_secret, a_id, "1614265330",
		     "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
		     a_body, a_ts) == 0);
	CHECK(verify(a_secret, a_id, "1614265330",
		     "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=, v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
		     a_body, a_ts) == 0);
	CHECK(verify(a_secret, a_id, "1614265330", "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", a_body, a_ts) < 0);
	/* One changed character, body or id. */
	CHECK(verify(a_secret, a_id, "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=", a_body, a_ts) < 0);
	CHECK(verify(a_secret, a_id, "1614265330", a_sig, "{\"test\": 2432232315}", a_ts) < 0);
	CHECK(verify(a_secret, "msg_other", "1614265330", a_sig, a_body, a_ts) < 0);
	/* Tolerance: 5 minutes either way, not one second more. */
	CHECK(verify(a_secret, a_id, "1614265330", a_sig, a_body, a_ts + 300) == 0);
	CHECK(verify(a_secret, a_id, "1614265330", a_sig, a_body, a_ts - 300) == 0);
	CHECK(verify(a_secret, a_id, "1614265330", a_sig, a_body, a_ts + 301) < 0);
	CHECK(verify(a_secret, a_id, "1614265330", a_sig, a_body, a_ts - 301) < 0);
	/* Missing or malformed headers. */
	CHECK(verify(a_secret, "", "1614265330", a_sig, a_body, a_ts) < 0);
	CHECK(verify(a_secret, a_id, "", a_sig, a_body, a_ts) < 0);
	CHECK(verify(a_secret, a_id, "16142x", a_sig, a_body, a_ts) < 0);
	/* Out of range both ways (found by fuzz_webhook: now - LLONG_MIN overflowed). */
	CHECK(verify(a_secret, a_id, "-9223372036854775808", a_sig, a_body, a_ts) < 0);
	CHECK(verify(a_secret, a_id, "-99999999999999999999", a_sig, a_body, a_ts) < 0);
	CHECK(verify(a_secret, a_id, "99999999999999999999", a_sig, a_body, a_ts) < 0);
	CHECK(verify(a_secret, a_id, "1614265330", "", a_body, a_ts) < 0);
	CHECK(verify(a_secret, "a.b", "1614265330", a_sig, a_body, a_ts) < 0);
	CHECK(verify("whsec_!!!", a_id, "1614265330", a_sig, a_body, a_ts) < 0);
	/* Derived unpadded-secret vectors. */
	CHECK(verify("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS=", a_id, "1614265330",
		     "v1,LVOXivKoo4FWasi/IaHvzhE/u+7/cu2AME+zS/nXqzk=", a_body, a_ts) == 0);

	CHECK(webhook_bearer_ok("s3cret-value", "s3cret-value"));
	CHECK(!webhook_bearer_ok("s3cret-value", "s3cret-valuf"));
	CHECK(!webhook_bearer_ok("s3cret-value", ""));
	CHECK(!webhook_bearer_ok(NULL, "x"));
	return check_done();
}
