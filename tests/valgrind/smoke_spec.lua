-- The integration smoke under valgrind memcheck (`make test-valgrind`):
-- the real binary behind `valgrind`, a real sshd with the Dokku simulator,
-- a real PostgreSQL behind the PostgREST gateway. It goes once through every
-- part of the C core (HTTP, auth, webhook verification, jobs, the SSH pool,
-- the store, the outbox, a reload, SIGTERM) and then reads valgrind's report:
-- no memory error and no definitely or indirectly lost block.
local H = require "harness"
local D = require "dokku_harness"
local SB = require "supabase_harness"
local cjson = require "cjson"
local socket = require "socket"

local API_KEY = "smoke-api-key-0123456789"
local SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
local KEY_HEX = "31f290f6bf06298aab4f08d43c3f082cf648a362da2da4b0"
local AUTH = { Authorization = "Bearer " .. API_KEY }

local function valgrind_logs(dir)
  local p = io.popen("ls " .. H.sh_quote(dir) .. "/vg.*.log 2>/dev/null")
  local logs = {}
  for path in p:lines() do
    logs[#logs + 1] = path
  end
  p:close()
  return logs
end

describe("valgrind memcheck smoke #integration", function()
  local dokku, sb, srv, dir

  setup(function()
    dokku = D.start()
    sb = SB.start()
    dir = H.tmpdir()
    local supp = H.root .. "/tests/valgrind/mrprov.supp"
    local env = D.mrprov_env(dokku, {
      SUPABASE_URL = sb.url, SUPABASE_SERVICE_KEY = sb.key, WEBHOOK_SECRET = SECRET,
      PROVISIONER_API_KEYS = API_KEY, LOG_LEVEL = "INFO",
    })
    srv = H.start({ dir = dir, env = env, start_timeout = 120,
      wrap = "valgrind --tool=memcheck --error-exitcode=99 --leak-check=full"
        .. " --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect"
        .. " --track-origins=no --num-callers=30 --suppressions=" .. H.sh_quote(supp)
        .. " --log-file=" .. H.sh_quote(dir .. "/vg.%p.log") })
  end)

  teardown(function()
    if srv then H.stop(srv, "KILL") end
    H.cleanup()
    if sb then SB.stop(sb) end
    D.stop_all()
  end)

  it("serves, provisions over SSH, mirrors to Supabase, reloads and stops with a clean report", function()
    assert.are.equal(200, (H.request(srv, "GET", "/health")))
    H.wait_for(srv, "/ready", function(r) return r.ready end, 120)
    assert.are.equal(401, (H.request(srv, "POST", "/api/v1/provision", { subscription_id = "sub_vg1" })))
    assert.are.equal(400, (H.request(srv, "POST", "/api/v1/provision", '{"tier": [', AUTH)))

    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_vg1", account_id = "acc_vg", tier = "starter", enable_matrix = true },
      { Authorization = AUTH.Authorization, Prefer = "wait=180" })
    assert.are.equal(200, code, cjson.encode(j or {}))
    assert.is_true(j.success)
    local app = j.app_name

    -- An upgrade through a signed Supabase webhook.
    local body = cjson.encode({ type = "UPDATE", table = "subscriptions", schema = "public",
      record = { id = "sub_vg1", account_id = "acc_vg", tier = "professional", status = "active" },
      old_record = { id = "sub_vg1", account_id = "acc_vg", tier = "starter", status = "active" } })
    local ts = tostring(os.time())
    code = H.request(srv, "POST", "/api/v1/webhooks/supabase", body, {
      ["webhook-id"] = "msg_vg1", ["webhook-timestamp"] = ts,
      ["webhook-signature"] = H.sign_webhook(KEY_HEX, "msg_vg1", ts, body) })
    assert.is_true(code == 200 or code == 202, "webhook answered " .. tostring(code))
    H.wait_for(srv, "/api/v1/status/sub_vg1", function(s)
      return s.status == "running" and s.tier == "professional"
    end, 180, AUTH)

    -- A reload in the middle, then the row in Supabase, metrics, a deprovision.
    os.execute("kill -HUP " .. srv.pid)
    local deadline = socket.gettime() + 60
    local row
    repeat
      row = SB.rows(sb, "instances", { subscription_id = "sub_vg1" })[1]
      if row and row.tier == "professional" and row.status == "running" then break end
      socket.sleep(0.2)
    until socket.gettime() > deadline
    assert.are.equal("professional", row and row.tier)
    assert.are.equal(200, (H.request(srv, "GET", "/metrics")))
    code, j = H.request(srv, "DELETE", "/api/v1/deprovision", { subscription_id = "sub_vg1", app_name = app },
      { Authorization = AUTH.Authorization, Prefer = "wait=180" })
    assert.are.equal(200, code, cjson.encode(j or {}))
    assert.is_true(j.success)

    -- SIGTERM; valgrind writes its report when the process exits.
    local pid = srv.pid
    assert.is_true(H.stop(srv, "TERM"), "mrprov under valgrind did not exit after SIGTERM")
    local logs = valgrind_logs(dir)
    assert.are.equal(1, #logs, "one valgrind log for pid " .. pid)
    local report = H.read_file(logs[1])
    assert.is_truthy(report:find("ERROR SUMMARY: 0 errors", 1, true), report)
    assert.is_falsy(report:find("definitely lost: [1-9]"), report)
    assert.is_falsy(report:find("indirectly lost: [1-9]"), report)
    assert.is_truthy(H.log_text(srv):find('"msg":"stopped"', 1, true), "no clean stop in the log")
  end)
end)
