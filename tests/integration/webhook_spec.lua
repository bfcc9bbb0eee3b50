-- Integration: Supabase Database Webhooks into the real binary — signed in
-- the Standard Webhooks format (HMAC computed here with openssl), or with
-- the shared-secret header.
local H = require "harness"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
local KEY_HEX = "31f290f6bf06298aab4f08d43c3f082cf648a362da2da4b0" -- base64-decoded secret, in hex

local function sign(id, ts, body)
  return H.sign_webhook(KEY_HEX, id, ts, body)
end

local function payload(kind, record, old)
  return cjson.encode({ type = kind, table = "subscriptions", schema = "public",
                        record = record or cjson.null, old_record = old or cjson.null })
end

local function send(srv, body, id, ts, sig)
  ts = ts or tostring(os.time())
  return H.request(srv, "POST", "/api/v1/webhooks/supabase", body, {
    ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig or sign(id, ts, body),
  })
end

local function jobs_of(srv, sub)
  local _, st = H.request(srv, "GET", "/api/v1/status/" .. sub)
  return st
end

describe("Supabase webhooks #integration", function()
  local srv

  setup(function()
    srv = H.start({ env = { WEBHOOK_SECRET = SECRET, PROVISIONER_API_KEYS = "api-key-0123456789abcdef" } })
  end)

  teardown(function()
    H.cleanup()
  end)

  it("signs like the official vector (the test's own HMAC is right)", function()
    assert.are.equal("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
      sign("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", '{"test": 2432232314}'))
  end)

  it("provisions on a signed INSERT of an active subscription", function()
    local body = payload("INSERT", { id = "sub_wh1", account_id = "acc_9", tier = "starter", status = "active" })
    -- the answer only queues the job (the 100 ms budget is measured in bench/, not asserted here)
    local code, j = send(srv, body, "msg_1")
    assert.are.equal(202, code, cjson.encode(j))
    assert.matches("^mr%-subwh1%-", j.app_name)
    assert.are.equal("provisioning", j.status)
    local st = H.wait_for(srv, "/api/v1/status/sub_wh1", function(s) return s.status == "running" end, 20,
      { ["X-API-Key"] = "api-key-0123456789abcdef" })
    assert.are.equal("starter", st.tier)
    assert.are.equal("acc_9", st.account_id)
  end)

  it("acknowledges a replayed delivery and starts no second job", function()
    local body = payload("INSERT", { id = "sub_wh1", account_id = "acc_9", tier = "starter", status = "active" })
    local before = H.request(srv, "GET", "/api/v1/status/sub_wh1", nil, { ["X-API-Key"] = "api-key-0123456789abcdef" })
    assert(before == 200)
    local code, j = send(srv, body, "msg_1")
    assert.are.equal(200, code)
    assert.are.equal("duplicate", j.status)
    -- the same subscription delivered again under a new id: still one instance, no new job
    local code2, j2 = send(srv, body, "msg_1b")
    assert.are.equal(200, code2)
    local _, st = H.request(srv, "GET", "/api/v1/status/sub_wh1", nil, { ["X-API-Key"] = "api-key-0123456789abcdef" })
    assert.are.equal(j2.job_id, st.job.id)
  end)

  it("updates on a tier change and ignores an update that changes no tier", function()
    local old = { id = "sub_wh1", account_id = "acc_9", tier = "starter", status = "active" }
    local new = { id = "sub_wh1", account_id = "acc_9", tier = "starter", status = "active", seats = 3 }
    local code, j = send(srv, payload("UPDATE", new, old), "msg_2")
    assert.are.equal(200, code)
    assert.are.equal("ignored", j.status)
    new.tier = "professional"
    local code2, j2 = send(srv, payload("UPDATE", new, old), "msg_3")
    assert.are.equal(202, code2, cjson.encode(j2))
    local st = H.wait_for(srv, "/api/v1/status/sub_wh1", function(s)
      return s.status == "running" and s.tier == "professional"
    end, 20, { ["X-API-Key"] = "api-key-0123456789abcdef" })
    assert.are.equal(2048, st.limits.memory_mb)
  end)

  it("deprovisions with backup on cancellation, with the shared-secret header too", function()
    local old = { id = "sub_wh1", tier = "professional", status = "active" }
    local new = { id = "sub_wh1", tier = "professional", status = "canceled" }
    local body = payload("UPDATE", new, old)
    local code, j = H.request(srv, "POST", "/api/v1/webhooks/supabase", body, { Authorization = "Bearer " .. SECRET })
    assert.are.equal(202, code, cjson.encode(j))
    H.wait_for(srv, "/api/v1/status/sub_wh1", function(s) return s.status == "deprovisioned" end, 20,
      { ["X-API-Key"] = "api-key-0123456789abcdef" })
  end)

  it("refuses a bad signature, an old or future timestamp, missing headers, a wrong secret: 401, no job", function()
    local body = payload("INSERT", { id = "sub_evil", tier = "free", status = "active" })
    local ts = tostring(os.time())
    local cases = {
      { "msg_e1", ts, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" },
      { "msg_e2", tostring(os.time() - 301), nil },
      { "msg_e3", tostring(os.time() + 400), nil },
    }
    for _, c in ipairs(cases) do
      local code, j = send(srv, body, c[1], c[2], c[3] or sign(c[1], c[2], body))
      assert.are.equal(401, code, c[1])
      assert.are.equal("unauthorized", j.error.code)
    end
    -- signature over another body
    local code = send(srv, body, "msg_e4", ts, sign("msg_e4", ts, body .. " "))
    assert.are.equal(401, code)
    assert.are.equal(401, (H.request(srv, "POST", "/api/v1/webhooks/supabase", body)))
    assert.are.equal(401, (H.request(srv, "POST", "/api/v1/webhooks/supabase", body,
      { Authorization = "Bearer whsec_wrong" })))
    -- an API key is not a webhook secret
    assert.are.equal(401, (H.request(srv, "POST", "/api/v1/webhooks/supabase", body,
      { Authorization = "Bearer api-key-0123456789abcdef" })))
    assert.are.equal(404, (H.request(srv, "GET", "/api/v1/status/sub_evil", nil,
      { ["X-API-Key"] = "api-key-0123456789abcdef" })))
    assert.is_nil(jobs_of(srv, "sub_evil").app_name)
  end)

  it("forgets delivery ids older than twice the timestamp tolerance (5 min), and only those", function()
    local db = srv.env.STATE_DB
    local function iso(t)
      return os.date("!%Y-%m-%dT%H:%M:%S.000Z", t)
    end
    -- one id from long ago, one just past 10 minutes, one 9 minutes old (still
    -- within reach of a replay whose timestamp is 5 minutes off)
    H.sqlite_rows(db, "INSERT INTO webhook_ids (id, received_at) VALUES ('msg_ancient', '2020-01-01T00:00:00.000Z'), "
      .. "('msg_old', '" .. iso(os.time() - 660) .. "'), ('msg_recent', '" .. iso(os.time() - 540) .. "')")
    -- each Lua state prunes at most once a second (webhooks.PRUNE_INTERVAL):
    -- after a pause, the next delivery prunes whichever state takes it
    socket.sleep(1.1)
    local code = send(srv, payload("INSERT", { id = "sub_prune", status = "trialing_not" }), "msg_prune")
    assert.are.equal(200, code)
    local ids = {}
    for _, r in ipairs(H.sqlite_rows(db, "SELECT id FROM webhook_ids")) do
      ids[r.id] = true
    end
    assert.is_nil(ids.msg_ancient)
    assert.is_nil(ids.msg_old)
    assert.is_true(ids.msg_recent)
    assert.is_true(ids.msg_prune)
    -- a replay of a remembered id is still recognised
    local _, j = send(srv, payload("INSERT", { id = "sub_prune", status = "trialing_not" }), "msg_recent")
    assert.are.equal("duplicate", j.status)
  end)

  it("answers 503 when no WEBHOOK_SECRET is configured", function()
    local s2 = H.start()
    local code, j = H.request(s2, "POST", "/api/v1/webhooks/supabase", payload("DELETE", nil, { id = "x" }))
    assert.are.equal(503, code)
    assert.are.equal("not_configured", j.error.code)
    H.stop(s2)
  end)
end)
