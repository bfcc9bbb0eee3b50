"""Writes N Standard Webhooks deliveries for bench measurement 6, one a line:
webhook-id, webhook-timestamp, webhook-signature, body (tab-separated).

    /usr/bin/python3 bench/webhook_requests.py SECRET N OUT

Each body is a Supabase UPDATE of the `subscriptions` row bench_wh_K whose
tier and status do not change, so lua/webhooks.lua acknowledges it as
"ignored" after recording its webhook-id; every delivery has its own id.
"""

import base64
import hashlib
import hmac
import json
import sys
import time


def main():
    secret, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    ts = str(int(time.time()))
    run = str(int(time.time() * 1000) % 100000000)
    with open(out, "w") as f:
        for k in range(n):
            row = {"id": "bench_wh_%d" % (k % 1000), "account_id": "acc_bench", "tier": "starter",
                   "status": "active"}
            body = json.dumps({"type": "UPDATE", "table": "subscriptions", "schema": "public",
                               "record": row, "old_record": row}, separators=(",", ":"))
            wid = "msg_bench_%s_%d" % (run, k)
            mac = hmac.new(key, ("%s.%s.%s" % (wid, ts, body)).encode(), hashlib.sha256).digest()
            f.write("%s\t%s\tv1,%s\t%s\n" % (wid, ts, base64.b64encode(mac).decode(), body))


main()
