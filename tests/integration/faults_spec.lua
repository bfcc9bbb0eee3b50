-- Integration: faults outside mrprov (SPEC §7 "Nothing lost", "Clean
-- failure"). Each ends in a correct state or a clear `failed` with the cause,
-- never a stuck job:
--   * the PostgREST gateway answers 500s, then holds every request past
--     mrprov's timeout (SUPABASE_TIMEOUT), then is healthy again: the jobs
--     complete regardless (Supabase is a mirror), the outbox holds the rows,
--     /ready and /metrics show it, and every row arrives once, in order;
--   * a Dokku command that never returns, on every attempt: the job fails
--     with the cause and rolls back; a repeat after the fault resumes it;
--   * sshd gone for good mid-job: the job fails with the cause; once sshd is
--     back a repeat converges to exactly one set of objects.
local H = require "harness"
local D = require "dokku_harness"
local SB = require "supabase_harness"
local cjson = require "cjson"
local socket = require "socket"


local function metric(srv, name, labels)
  local _, _, text = H.request(srv, "GET", "/metrics")
  local pat = name:gsub("_", "%%_") .. "{" .. labels:gsub("[%p]", "%%%0") .. "} ([%d%.e%+]+)"
  return tonumber(text:match(pat))
end

-- The apps and services of instance app on the simulator, each list sorted.
local function objects_of(h, app)
  local o = D.objects_of(D.state(h), app)
  o.storage = nil
  return o
end

local function free_tier_objects(app)
  return { apps = { app, app .. "-backend", app .. "-frontend" }, postgres = { app .. "-db" },
           redis = { app .. "-redis" } }
end

-- sshd + simulator, PostgreSQL + gateway and mrprov (with SUPABASE_TIMEOUT)
-- for the describe block it is called in; the table it returns gets h, sb
-- and srv in setup.
local function dokku_and_supabase(supabase_timeout)
  local t = {}
  setup(function()
    t.h = D.start()
    t.sb = SB.start()
    t.srv = H.start({ env = D.mrprov_env(t.h, { SUPABASE_URL = t.sb.url, SUPABASE_SERVICE_KEY = t.sb.key,
                                                SUPABASE_TIMEOUT = supabase_timeout, LOG_LEVEL = "INFO" }) })
  end)
  teardown(function()
    H.cleanup()
    D.stop_all()
    if t.sb then
      SB.stop(t.sb)
    end
  end)
  return t
end

describe("PostgREST gateway faults #integration", function()
  local stack = dokku_and_supabase("2")

  it("completes the jobs through 500s and a hanging gateway; every row arrives once, in order", function()
    local sb, srv = stack.sb, stack.srv
    H.wait_for(srv, "/ready", function(r) return r.ready end, 20)
    local t0 = socket.gettime()
    SB.reset_requests(sb)

    -- phase 1: every PostgREST request answers 500
    SB.fault(sb, "500")
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_gw1", account_id = "acc_gw", tier = "free" }, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("running", j.status, "Supabase is a mirror: the provision must not wait for it")
    local app = j.app_name
    local code2, j2 = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_gw1", app_name = app,
                                                               tier = "starter" }, { Prefer = "wait=60" })
    assert.are.equal(200, code2, cjson.encode(j2))
    assert.are.equal("running", j2.status)
    local depth = metric(srv, "mrprov_outbox_depth", 'state="pending"')
    assert.is_true(depth ~= nil and depth >= 6, "outbox depth during the 500s: " .. tostring(depth))
    local ready = H.eventually("/ready to report the 500s", function()
      local rc, r = H.request(srv, "GET", "/ready")
      local why = table.concat(r and r.reasons or {}, "; ")
      return rc == 503 and r.checks.supabase ~= "ok" and why:find("HTTP 500", 1, true) and r, why
    end, 10)
    assert.matches("injected fault", table.concat(ready.reasons, " "))
    local function faulted(mode)
      local n = 0
      for _, r in ipairs(SB.requests(sb)) do
        if r.fault == mode then n = n + 1 end
      end
      return n
    end
    -- 500s for a while: several retries (with backoff) and probes meet them
    H.eventually("three requests answered 500", function() return faulted("500") >= 3, faulted("500") end, 20)
    assert.is_nil(SB.rows(sb, "instances", { subscription_id = "sub_gw1" })[1])

    -- phase 2: the gateway accepts and never answers (longer than SUPABASE_TIMEOUT)
    SB.fault(sb, "timeout")
    H.eventually("two requests held by the gateway", function() return faulted("timeout") >= 2 end, 20)
    H.eventually("/ready to report the timeout", function()
      local rc, r = H.request(srv, "GET", "/ready")
      local why = table.concat(r and r.reasons or {}, "; ")
      return rc == 503 and why:find("Timeout", 1, true), why
    end, 10)
    assert.is_true(metric(srv, "mrprov_outbox_depth", 'state="pending"') >= 6)
    -- a job during the hang completes too (and adds its rows behind the others)
    local code3, j3 = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_gw1", app_name = app,
                                                               config_updates = { GW_TEST = "1" } },
      { Prefer = "wait=60" })
    assert.are.equal(200, code3, cjson.encode(j3))
    assert.are.equal("running", j3.status)
    assert.is_nil(SB.rows(sb, "instances", { subscription_id = "sub_gw1" })[1])

    -- phase 3: healthy again
    SB.fault(sb, "ok")
    local row = H.eventually("the final row", function()
      local r = SB.rows(sb, "instances", { subscription_id = "sub_gw1" })[1]
      return r and r.status == "running" and r.tier == "starter"
        and metric(srv, "mrprov_outbox_depth", 'state="pending"') == 0 and r
    end, 30)
    assert.are.equal(app, row.app_name)
    assert.are.equal("acc_gw", row.account_id)
    assert.are.equal("https://" .. app .. ".mindroom.chat", row.frontend_url)
    assert.are.equal("https://api." .. app .. ".mindroom.chat", row.backend_url)
    assert.are.equal(512, cjson.decode(row.limits).memory_mb)
    assert.are.equal(0, metric(srv, "mrprov_outbox_depth", 'state="parked"'))
    H.wait_for(srv, "/ready", function(r) return r.ready and r.checks.supabase == "ok" end, 10)

    -- every event once, in the order the jobs ran
    local seq = {}
    for _, e in ipairs(SB.query(sb, "select kind, operation, job_id from public.events"
        .. " where subscription_id = 'sub_gw1' order by id")) do
      seq[#seq + 1] = e.operation .. ":" .. e.kind
    end
    assert.are.same({ "provision:job_started", "provision:job_succeeded", "update:job_started",
                      "update:job_succeeded", "update:job_started", "update:job_succeeded" }, seq)
    -- the instance rows reached the gateway in the order they were written:
    -- each delivered row's updated_at is not older than the one before
    local delivered, last = 0, ""
    local statuses = {}
    for _, r in ipairs(SB.requests(sb)) do
      if r.method == "POST" and r.path:match("^/rest/v1/instances") and r.status and r.status < 300 then
        local b = cjson.decode(r.body)
        if b.subscription_id == "sub_gw1" then
          assert.is_true(b.updated_at >= last, "instance rows out of order")
          last = b.updated_at
          statuses[#statuses + 1] = b.status .. "/" .. b.tier
        end
      end
      if r.status and r.status < 300 and r.method == "POST" then
        delivered = delivered + 1
      end
    end
    assert.are.equal("running/starter", statuses[#statuses])
    assert.are.equal("provisioning/free", statuses[1])
    -- what mrprov counted as delivered is exactly what the gateway stored
    assert.are.equal(delivered, metric(srv, "mrprov_outbox_deliveries_total", 'outcome="delivered"'))

    -- the log names the causes, and holds no secret
    local log = H.log_text(srv)
    assert.matches("HTTP 500", log)
    assert.matches("Timeout was reached", log)
    assert.matches("Supabase answers again", log)
    assert.is_nil(log:find(sb.key, 1, true), "the service key leaked into the log")
    assert.is_nil(log:find(j.admin_password, 1, true), "the admin password leaked into the log")
    io.stdout:write(string.format("# gateway faults: %.1f s, %d requests answered 500, %d held, %d rows delivered\n",
      socket.gettime() - t0, faulted("500"), faulted("timeout"), delivered))
  end)
end)

describe("PostgREST answers lost after the write #integration", function()
  local stack = dokku_and_supabase("1")

  it("stores every event and backup once when a write's answer is lost and mrprov sends it again", function()
    local sb, srv = stack.sb, stack.srv
    H.wait_for(srv, "/ready", function(r) return r.ready end, 20)
    SB.reset_requests(sb)
    -- every write of an event (then of a backup) is carried out, none is
    -- answered: each goes again after SUPABASE_TIMEOUT, until it is answered
    SB.fault(sb, "lost", nil, "^POST /rest/v1/events")
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_lost", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code)
    local code2 = H.request(srv, "DELETE", "/api/v1/deprovision",
      { subscription_id = "sub_lost", app_name = j.app_name, backup_data = true }, { Prefer = "wait=60" })
    assert.are.equal(200, code2)
    local function lost_writes()
      local n = {}
      for _, r in ipairs(SB.requests(sb)) do
        if r.fault == "lost" and r.method == "POST" then
          local t = r.path:match("^/rest/v1/(%w+)")
          n[t] = (n[t] or 0) + 1
        end
      end
      return n
    end
    H.eventually("lost writes of events", function() return (lost_writes().events or 0) >= 2 end, 20)
    SB.fault(sb, "lost", nil, "^POST /rest/v1/backups")
    H.eventually("lost writes of backups", function() return (lost_writes().backups or 0) >= 2 end, 30)
    SB.fault(sb, "ok")
    H.eventually("the outbox to drain", function()
      local r = SB.rows(sb, "instances", { subscription_id = "sub_lost" })[1]
      return r and r.status == "deprovisioned" and metric(srv, "mrprov_outbox_depth", 'state="pending"') == 0
    end, 30)
    local seq = {}
    for _, e in ipairs(SB.query(sb, "select kind, operation from public.events where subscription_id = 'sub_lost'"
        .. " order by id")) do
      seq[#seq + 1] = e.operation .. ":" .. e.kind
    end
    assert.are.same({ "provision:job_started", "provision:job_succeeded", "deprovision:job_started",
                      "deprovision:job_succeeded" }, seq)
    local backups = SB.query(sb, "select service from public.backups where subscription_id = 'sub_lost'"
      .. " order by service")
    -- the backend's storage directory (a tar.gz), the two services' exports: each stored once
    assert.are.same({ { service = j.app_name .. "-backend" }, { service = j.app_name .. "-db" },
                      { service = j.app_name .. "-redis" } }, backups)
    local lost = lost_writes()
    io.stdout:write(string.format("# lost answers: events %d, instances %d, backups %d writes resent\n",
      lost.events or 0, lost.instances or 0, lost.backups or 0))
  end)
end)

describe("Dokku faults #integration", function()
  local h, srv

  setup(function()
    h = D.start()
    srv = H.start({ env = D.mrprov_env(h, { DOKKU_COMMAND_TIMEOUT = "1", LOG_LEVEL = "INFO" }) })
  end)

  teardown(function()
    H.cleanup()
    D.stop_all()
  end)

  it("fails a job whose Dokku command never returns, with the cause, and rolls it back", function()
    D.set_faults(h, { { match = "domains:set %S+%-frontend", action = "hang" } })
    local t0 = socket.gettime()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_hang2", account_id = "acc_1", tier = "free" })
    assert.are.equal(202, code)
    -- while it retries, the job says what it waits for
    local waiting = H.wait_for(srv, "/api/v1/status/sub_hang2", function(s)
      return s.job ~= cjson.null and s.job.waiting_for ~= cjson.null
    end, 30)
    assert.matches("timed out after 1 s", waiting.job.waiting_for)
    local st = H.wait_for(srv, "/api/v1/status/sub_hang2", function(s)
      return s.job.state == "failed" or s.job.state == "succeeded"
    end, 90)
    local took = socket.gettime() - t0
    assert.are.equal("failed", st.job.state)
    assert.are.equal("failed", st.status)
    assert.is_truthy(st.error:find("domains:set " .. j.app_name .. "-frontend", 1, true), st.error)
    assert.matches("timed out after 1 s", st.error)
    assert.are.same({ apps = {}, postgres = {}, redis = {} }, objects_of(h, j.app_name))
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    assert.matches("timed out", job.error)
    -- no hung command is left running on the server
    H.eventually("the hung commands to end", function()
      -- (by app name: other test runs on this machine may hang their own)
      local p = io.popen("pgrep -f " .. H.sh_quote("[d]okku-sim.*domains:set " .. j.app_name) .. " | wc -l")
      local n = tonumber(p:read("l"))
      p:close()
      return n == 0, n .. " still running"
    end, 10)
    -- the cause gone, a repeat resumes the same instance
    D.set_faults(h, {})
    local code2, j2 = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_hang2", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code2)
    assert.are.equal(j.app_name, j2.app_name)
    assert.are.equal("running", j2.status)
    assert.are.same(free_tier_objects(j.app_name), objects_of(h, j.app_name))
    io.stdout:write(string.format("# hanging command: failed after %.1f s\n", took))
  end)

  it("restarts what an update changed when its restart failed once and the retry finds nothing to change", function()
    D.set_faults(h, {})
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_rst", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code)
    local app = j.app_name
    local before = #D.log(h)
    D.set_faults(h, { { match = "ps:restart %S+%-backend", action = "fail", exit = 1, times = 1,
                        stderr = " !     " .. app .. "-backend currently has a deploy lock in place. Exiting..." } })
    local code2, j2 = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_rst", app_name = app,
                                                               tier = "starter" }, { Prefer = "wait=60" })
    assert.are.equal(200, code2)
    assert.are.equal("running", j2.status, cjson.encode(j2))
    -- after the last change to the backend, a successful restart of it
    local last_change, last_start = 0, 0
    for i, e in ipairs(D.log(h)) do
      local line = table.concat(e.argv, " ")
      if i > before and e.exit == 0 and line:find(app .. "-backend", 1, true) then
        if line:find("config:set", 1, true) or line:find("resource:limit", 1, true) then
          last_change = i
        elseif line:find("ps:restart", 1, true) then
          last_start = i
        end
      end
    end
    assert.is_true(last_change > 0, "the update changed nothing")
    assert.is_true(last_start > last_change, "the backend was not restarted after its last change")
    assert.are.equal("512m", D.state(h).apps[app .. "-backend"].resources["_default_.limit.memory"])
  end)

  it("fails a job with the cause when sshd goes away for good; a repeat converges once it is back", function()
    D.set_faults(h, { { match = "git:from%-image", action = "delay", ms = 1000 } })
    local before = #D.log(h)
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_gone", account_id = "acc_1", tier = "free" })
    assert.are.equal(202, code)
    H.eventually("a deploy to start", function()
      local _, st = H.request(srv, "GET", "/api/v1/status/sub_gone")
      return st.job.step ~= cjson.null and st.job.step:find("git:from-image", 1, true)
    end, 30)
    assert.is_true(#D.log(h) > before)
    D.stop_sshd(h)
    local t0 = socket.gettime()
    local st = H.wait_for(srv, "/api/v1/status/sub_gone", function(s)
      return s.job.state == "failed" or s.job.state == "succeeded"
    end, 90)
    local took = socket.gettime() - t0
    assert.are.equal("failed", st.job.state)
    assert.are.equal("failed", st.status)
    assert.matches("connect", st.error:lower())
    D.start_sshd(h)
    D.set_faults(h, {})
    H.wait_for(srv, "/ready", function(r) return r.checks.dokku == "ok" end, 40)
    local code2, j2 = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_gone", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code2)
    assert.are.equal(j.app_name, j2.app_name)
    assert.are.equal("running", j2.status, cjson.encode(j2))
    assert.are.same(free_tier_objects(j.app_name), objects_of(h, j.app_name))
    io.stdout:write(string.format("# sshd gone: failed after %.1f s\n", took))
  end)
end)
