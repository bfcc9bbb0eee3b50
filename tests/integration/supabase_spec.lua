-- Integration: the real binary mirroring state into a real PostgreSQL
-- through the PostgREST-compatible gateway, with docker/supabase/schema.sql
-- applied, and Supabase's signed webhooks produced by that schema's trigger.
local H = require "harness"
local SB = require "supabase_harness"
local cjson = require "cjson"
local socket = require "socket"


local function instance_row(sb, sub)
  return SB.rows(sb, "instances", { subscription_id = sub })[1]
end

-- What reached Supabase for one subscription, in the order the gateway took
-- it (accepted requests only): an instances row as its status, an event as
-- its kind; repeats of the same value in a row (retried upserts) folded.
local function delivered_sequence(sb, sub)
  local seq = {}
  for _, r in ipairs(SB.requests(sb)) do
    local ok, body = pcall(cjson.decode, r.body or "")
    if r.method == "POST" and (r.status or 0) >= 200 and (r.status or 0) < 300 and ok and type(body) == "table"
        and body.subscription_id == sub then
      local what
      if r.path:match("^/rest/v1/instances") then
        what = body.status
      elseif r.path:match("^/rest/v1/events") then
        what = body.kind
      end
      if what and seq[#seq] ~= what then
        seq[#seq + 1] = what
      end
    end
  end
  return seq
end

describe("Supabase mirroring #integration", function()
  local sb, srv, dir

  setup(function()
    sb = SB.start()
    dir = H.tmpdir()
    srv = H.start({ dir = dir, env = { SUPABASE_URL = sb.url, SUPABASE_SERVICE_KEY = sb.key,
                                       WEBHOOK_SECRET = sb.webhook_secret } })
  end)

  teardown(function()
    H.cleanup()
    if sb then
      SB.stop(sb)
    end
  end)

  it("is ready once Supabase answered", function()
    local r = H.wait_for(srv, "/ready", function(x) return x.ready end, 20)
    assert.are.equal("ok", r.checks.supabase)
    -- the original service's /health field says the same
    local _, hh = H.request(srv, "GET", "/health")
    assert.is_true(hh.supabase_connected)
  end)

  it("brings the instances row to running with the right URLs and no secret", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_sb1", account_id = "acc_1", tier = "professional", enable_matrix = true },
      { Prefer = "wait=30" })
    assert.are.equal(200, code)
    local row = H.eventually("the running row", function()
      local r = instance_row(sb, "sub_sb1")
      return r and r.status == "running" and r
    end)
    assert.are.equal(j.app_name, row.app_name)
    assert.are.equal("https://" .. j.app_name .. ".mindroom.chat", row.frontend_url)
    assert.are.equal("https://api." .. j.app_name .. ".mindroom.chat", row.backend_url)
    assert.are.equal("https://matrix." .. j.app_name .. ".mindroom.chat", row.matrix_url)
    assert.are.equal("professional", row.tier)
    assert.are.equal(2048, cjson.decode(row.limits).memory_mb)
    -- no secret anywhere in Supabase
    for _, t in ipairs({ "instances", "events", "backups" }) do
      for _, r in ipairs(SB.query(sb, "select row_to_json(x)::text as j from public." .. t .. " x")) do
        assert.is_nil(r.j:find(j.admin_password, 1, true), t)
      end
    end
    -- job_succeeded is queued after the running row (same transaction), so it
    -- may arrive one delivery later: wait for it, then check the order.
    local events = H.eventually("the job_succeeded event", function()
      local ev = SB.query(sb, "select kind from public.events where subscription_id = 'sub_sb1' order by id")
      return #ev >= 2 and ev[#ev].kind == "job_succeeded" and ev
    end, 20)
    assert.are.same({ "job_started", "job_succeeded" }, { events[1].kind, events[2].kind })
    assert.are.same({ "provisioning", "job_started", "running", "job_succeeded" }, delivered_sequence(sb, "sub_sb1"))
  end)

  it("keeps the order per subscription while deliveries of events fail and are retried", function()
    SB.reset_requests(sb)
    -- the first two events requests fail (5xx): job_started waits out its backoff,
    -- and nothing queued after it for the subscription may overtake it
    SB.fault(sb, "500", 2, "^POST /rest/v1/events")
    local code = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_sb_order", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=30" })
    assert.are.equal(200, code)
    H.eventually("the job_succeeded event", function()
      local ev = SB.query(sb, "select kind from public.events where subscription_id = 'sub_sb_order' order by id")
      return #ev >= 2 and ev[#ev].kind == "job_succeeded"
    end, 30)
    local failed = 0
    for _, r in ipairs(SB.requests(sb)) do
      failed = failed + ((r.fault == "500") and 1 or 0)
    end
    assert.are.equal(2, failed)
    assert.are.same({ "provisioning", "job_started", "running", "job_succeeded" },
      delivered_sequence(sb, "sub_sb_order"))
  end)

  it("delivers every change made while Supabase was down, in order, none lost", function()
    SB.stop_gateway(sb)
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_sb2", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=30" })
    assert.are.equal(200, code)
    local code2 = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_sb2", app_name = j.app_name,
                                                           tier = "starter" }, { Prefer = "wait=30" })
    assert.are.equal(200, code2)
    local _, _, metrics = H.request(srv, "GET", "/metrics")
    local depth = tonumber(metrics:match('mrprov_outbox_depth{state="pending"} (%d+)'))
    assert.is_true(depth and depth >= 4, metrics:match("mrprov_outbox_depth[^\n]*"))
    assert.is_nil(instance_row(sb, "sub_sb2"))
    -- SPEC's scenario is a 60 s outage; MRPROV_OUTAGE_S shortens it for quick runs
    local outage = tonumber(os.getenv("MRPROV_OUTAGE_S") or "60")
    socket.sleep(outage)
    local rcode, ready = H.request(srv, "GET", "/ready")
    assert.are.equal(503, rcode)
    assert.are.equal("unreachable", ready.checks.supabase)
    assert.are.equal(0, #SB.query(sb, "select 1 from public.instances where subscription_id = 'sub_sb2'"))
    SB.restart_gateway(sb)
    -- waiting rows go as soon as a probe finds Supabase back, not after their full backoff
    local row = H.eventually("the delayed rows", function()
      local r = instance_row(sb, "sub_sb2")
      return r and r.tier == "starter" and r.status == "running" and r
    end, 20)
    assert.are.equal(j.app_name, row.app_name)
    -- events arrived in the order they happened (the last may follow the row by a delivery)
    local events = H.eventually("the four events", function()
      local ev = SB.query(sb, "select kind, operation from public.events where subscription_id = 'sub_sb2'"
        .. " order by id")
      return #ev >= 4 and ev
    end, 20)
    local seq = {}
    for _, e in ipairs(events) do
      seq[#seq + 1] = e.operation .. ":" .. e.kind
    end
    assert.are.same({ "provision:job_started", "provision:job_succeeded", "update:job_started",
                      "update:job_succeeded" }, seq)
  end)

  it("keeps undelivered rows across kill -9 and delivers them after restart", function()
    SB.stop_gateway(sb)
    local code = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_sb3", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=30" })
    assert.are.equal(200, code)
    H.stop(srv, "KILL")
    SB.restart_gateway(sb)
    srv = H.start({ dir = dir, env = srv.env })
    H.eventually("the row written before kill -9", function()
      local r = instance_row(sb, "sub_sb3")
      return r and r.status == "running"
    end, 30)
  end)

  it("parks a row PostgREST refuses for good and reports it", function()
    -- a constraint the job_started event breaks: PostgREST answers 400 (23514) for that row only
    SB.query(sb, "alter table public.events add constraint no_start check (kind <> 'job_started') not valid")
    finally(function()
      SB.query(sb, "alter table public.events drop constraint no_start")
    end)
    local code = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_sb4", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=30" })
    assert.are.equal(200, code)
    local text = H.eventually("the parked row in the log", function()
      local t = H.log_text(srv)
      return t:find("parked", 1, true) and t
    end)
    assert.matches("Supabase refused row %d+ for table events", text)
    assert.matches("23514", text)
    local _, _, m = H.request(srv, "GET", "/metrics")
    assert.matches('mrprov_outbox_deliveries_total{outcome="parked"} 1', m, 1, true)
    -- later rows of the same subscription still arrive
    H.eventually("the later rows", function()
      local r = instance_row(sb, "sub_sb4")
      return r and r.status == "running"
    end)
  end)

  it("provisions from the schema's own signed trigger, once for a duplicate delivery", function()
    SB.query(sb, "insert into public.subscriptions (id, account_id, tier, status)"
      .. " values ('sub_trig1', 'acc_t', 'starter', 'active')")
    local reqs = SB.webhook_requests(sb)
    local req = reqs[#reqs]
    assert.is_truthy(req, "the trigger sent nothing")
    local headers = { ["webhook-id"] = req.headers["webhook-id"],
                      ["webhook-timestamp"] = req.headers["webhook-timestamp"],
                      ["webhook-signature"] = req.headers["webhook-signature"] }
    local code, j = H.request(srv, "POST", "/api/v1/webhooks/supabase", req.body, headers)
    assert.are.equal(202, code, cjson.encode(j))
    local code2, j2 = H.request(srv, "POST", "/api/v1/webhooks/supabase", req.body, headers)
    assert.are.equal(200, code2)
    assert.are.equal("duplicate", j2.status)
    local st = H.wait_for(srv, "/api/v1/status/sub_trig1", function(s) return s.status == "running" end)
    assert.are.equal("starter", st.tier)
    assert.are.equal("acc_t", st.account_id)
    local jobs = SB.query(sb, "select count(distinct job_id) as n from public.events"
      .. " where subscription_id = 'sub_trig1'")
    H.eventually("the job's events", function()
      jobs = SB.query(sb, "select count(distinct job_id) as n from public.events"
        .. " where subscription_id = 'sub_trig1'")
      return tonumber(jobs[1].n) >= 1
    end)
    assert.are.equal(1, tonumber(jobs[1].n))
    -- a tampered body is refused
    local code3 = H.request(srv, "POST", "/api/v1/webhooks/supabase", req.body:gsub("starter", "enterprise"),
      headers)
    assert.are.equal(401, code3)
  end)
end)
