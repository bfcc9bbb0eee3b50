-- Stop, start, restart, suspend and resume (issue 15 item 1) through the
-- real binary, a real sshd with the Dokku simulator as forced command, and
-- the loopback health server standing in for MindRoom's /api/ready. The
-- mindroom profile: MindRoom ({app}) and its homeserver ({app}-matrix),
-- which starts first and stops last.
-- - stop: every app's processes stopped in the simulator, every object,
--   its storage and its environment kept; a repeat sends no command at all;
--   an update while stopped deploys and starts nothing;
-- - start: running again (`starting`, then `running` once it answers);
-- - restart: ps:restart of each app, homeserver first, then the check;
-- - a webhook past_due suspends (stopped in the simulator); a tier change
--   meanwhile is recorded, not applied; the API's start refuses (409);
--   active resumes with the new tier applied.
local D = require "dokku_harness"
local H = require "harness"
local cjson = require "cjson"

local SECRET = "whsec_lifecycle_0123456789abcdef"

local function wait_status(srv, sub, want, timeout)
  return H.wait_for(srv, "/api/v1/status/" .. sub, function(x)
    return x.status == want and x.job ~= cjson.null and x.job.state ~= "queued" and x.job.state ~= "running"
  end, timeout or 60)
end

-- The commands logged after entry `since`, as "sub app" lines (probes too).
local function commands(h, since)
  local out = {}
  for i, e in ipairs(D.log(h)) do
    if i > since then
      out[#out + 1] = table.concat(e.argv, " "):gsub("^%-%-quiet ", "")
    end
  end
  return out
end

local function index_of(list, text)
  for i, l in ipairs(list) do
    if l == text then return i end
  end
  return nil
end

local function has_prefix(list, prefix)
  for _, l in ipairs(list) do
    if l:sub(1, #prefix) == prefix then return l end
  end
  return nil
end

-- The environment without Dokku's restore flag (ps:stop sets it to 0, a
-- deploy to 1: Dokku's own, core:plugins/ps/triggers.go).
local function env_of(app)
  local out = {}
  for k, v in pairs(app.env) do
    if k ~= "DOKKU_APP_RESTORE" then out[k] = v end
  end
  return out
end

local function webhook(srv, sub, status, tier, old_status, old_tier)
  return H.request(srv, "POST", "/api/v1/webhooks/supabase", {
    type = "UPDATE", table = "subscriptions", schema = "public",
    record = { id = sub, account_id = "acc_1", tier = tier, status = status },
    old_record = { id = sub, account_id = "acc_1", tier = old_tier or tier, status = old_status },
  }, { Authorization = "Bearer " .. SECRET })
end

describe("stop, start, restart, suspend and resume #integration", function()
  local h, srv, health

  setup(function()
    h = D.start()
    health = H.health_server("ok")
    srv = H.start({ env = D.mrprov_env(h, { PROFILE = "mindroom", WEBHOOK_SECRET = SECRET,
      HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. health.port .. "/{app}{path}", HEALTH_TIMEOUT_SECONDS = "60",
      HEALTH_REQUEST_TIMEOUT = "2" }) })
  end)
  teardown(function()
    if health then health.stop() end
    H.cleanup()
    D.stop_all()
  end)

  local app

  it("stops every app and keeps everything; a repeat sends nothing; start runs it again", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_lc1", account_id = "acc_1", tier = "starter" })
    assert.are.equal(202, code, cjson.encode(j))
    app = j.app_name
    wait_status(srv, "sub_lc1", "running")
    local before = D.state(h)
    local hs = app .. "-matrix"
    assert.is_true(before.apps[app].deploy.running)
    assert.is_true(before.apps[hs].deploy.running)

    local since = #D.log(h)
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_lc1/stop", nil, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("succeeded", j.job_state, cjson.encode(j))
    assert.are.equal("stopped", j.status)
    local view = wait_status(srv, "sub_lc1", "stopped")
    assert.are.equal(cjson.null, view.health_state)
    local s = D.state(h)
    assert.is_false(s.apps[app].deploy.running)
    assert.is_false(s.apps[hs].deploy.running)
    -- every object, its storage and its environment are still there
    assert.are.same(D.objects_of(before, app), D.objects_of(s, app))
    for _, a in ipairs({ app, hs }) do
      assert.are.same(env_of(before.apps[a]), env_of(s.apps[a]))
      assert.are.same(before.apps[a].mounts, s.apps[a].mounts)
      assert.are.same(before.global.storage[a], s.global.storage[a])
      assert.is_true(s.apps[a].deploy.deployed)
    end
    -- MindRoom stops first, its homeserver last
    local cmds = commands(h, since)
    local mr_stop, hs_stop = index_of(cmds, "ps:stop " .. app), index_of(cmds, "ps:stop " .. hs)
    assert.is_truthy(mr_stop, table.concat(cmds, "\n"))
    assert.is_truthy(hs_stop)
    assert.is_true(mr_stop < hs_stop)
    assert.is_nil(has_prefix(cmds, "ps:start"))

    -- a repeat plans nothing: no job, not one command sent
    since = #D.log(h)
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_lc1/stop")
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("stopped", j.status)
    assert.matches("already stopped", j.message)
    assert.are.same({}, commands(h, since))

    -- an update while stopped records the change and starts nothing
    since = #D.log(h)
    code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_lc1", app_name = app,
      config_updates = { MRPROV_TEST_NOTE = "kept-while-stopped" } }, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("succeeded", j.job_state, cjson.encode(j))
    assert.are.equal("stopped", j.status)
    s = D.state(h)
    assert.is_false(s.apps[app].deploy.running)
    assert.is_false(s.apps[hs].deploy.running)
    cmds = commands(h, since)
    for _, verb in ipairs({ "ps:start", "ps:restart", "ps:rebuild", "git:from-image", "git:from-archive" }) do
      assert.is_nil(has_prefix(cmds, verb), table.concat(cmds, "\n"))
    end

    -- start: the homeserver first, then MindRoom; starting until it answers
    health.mode("fail:2")
    since = #D.log(h)
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_lc1/start", nil, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("succeeded", j.job_state, cjson.encode(j))
    assert.are.equal("starting", j.status)
    view = wait_status(srv, "sub_lc1", "running")
    assert.are.equal("healthy", view.health_state)
    s = D.state(h)
    assert.is_true(s.apps[app].deploy.running)
    assert.is_true(s.apps[hs].deploy.running)
    cmds = commands(h, since)
    local hs_start, mr_start = index_of(cmds, "ps:start " .. hs), index_of(cmds, "ps:start " .. app)
    assert.is_truthy(hs_start, table.concat(cmds, "\n"))
    assert.is_truthy(mr_start)
    assert.is_true(hs_start < mr_start)
    -- the update made while stopped is in place (ps:start released it)
    assert.are.equal("kept-while-stopped", s.apps[app].env.MRPROV_TEST_NOTE)

    -- starting a running instance: no job
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_lc1/start")
    assert.are.equal(200, code, cjson.encode(j))
    assert.matches("not stopped", j.message)
  end)

  it("restarts each app, homeserver first, then checks readiness", function()
    health.mode("fail:1")
    local since = #D.log(h)
    local code, j = H.request(srv, "POST", "/api/v1/instances/sub_lc1/restart")
    assert.are.equal(202, code, cjson.encode(j))
    assert.is_string(j.job_id)
    wait_status(srv, "sub_lc1", "running")
    local cmds = commands(h, since)
    local hs_r, mr_r = index_of(cmds, "ps:restart " .. app .. "-matrix"), index_of(cmds, "ps:restart " .. app)
    assert.is_truthy(hs_r, table.concat(cmds, "\n"))
    assert.is_truthy(mr_r)
    assert.is_true(hs_r < mr_r)
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    assert.are.equal("restart", job.operation)
    assert.matches("health check", job.result.health)
  end)

  it("answers 404, 405 and 409 as the other routes do", function()
    local code = H.request(srv, "POST", "/api/v1/instances/sub_nobody/stop")
    assert.are.equal(404, code)
    code = H.request(srv, "GET", "/api/v1/instances/sub_lc1/stop")
    assert.are.equal(405, code)
    code = H.request(srv, "POST", "/api/v1/instances/sub_lc1/explode")
    assert.are.equal(404, code)
    code = H.request(srv, "POST", "/api/v1/instances//stop")
    assert.are.equal(404, code)
  end)

  it("suspends on past_due, records a tier change, refuses start, resumes on active with the tier", function()
    local code, j = webhook(srv, "sub_lc1", "past_due", "starter", "active")
    assert.are.equal(202, code, cjson.encode(j))
    local view = wait_status(srv, "sub_lc1", "suspended")
    assert.are.equal("starter", view.tier)
    local s = D.state(h)
    assert.is_false(s.apps[app].deploy.running)
    assert.is_false(s.apps[app .. "-matrix"].deploy.running)

    -- a tier change while suspended: recorded, nothing sent to Dokku
    local since = #D.log(h)
    code, j = webhook(srv, "sub_lc1", "past_due", "professional", "past_due", "starter")
    assert.are.equal(200, code, cjson.encode(j))
    assert.matches("recorded", j.message)
    assert.are.same({}, commands(h, since))
    view = wait_status(srv, "sub_lc1", "suspended")
    assert.are.equal("starter", view.tier)

    -- only the subscription resumes it
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_lc1/start")
    assert.are.equal(409, code, cjson.encode(j))
    assert.matches("suspended", j.error.message)

    health.mode("ok")
    since = #D.log(h)
    code, j = webhook(srv, "sub_lc1", "active", "professional", "past_due")
    assert.are.equal(202, code, cjson.encode(j))
    view = wait_status(srv, "sub_lc1", "running")
    assert.are.equal("professional", view.tier)
    assert.are.equal(2048, view.limits.memory_mb)
    s = D.state(h)
    assert.is_true(s.apps[app].deploy.running)
    assert.is_true(s.apps[app .. "-matrix"].deploy.running)
    local cmds = commands(h, since)
    assert.is_truthy(has_prefix(cmds, "resource:limit"), table.concat(cmds, "\n"))
    -- the homeserver starts before MindRoom's deploy of the new tier's config
    local hs_start = index_of(cmds, "ps:start " .. app .. "-matrix")
    local deploy = has_prefix(cmds, "git:from-archive --archive-type tar " .. app .. " ")
    assert.is_truthy(hs_start, table.concat(cmds, "\n"))
    assert.is_truthy(deploy)
    assert.is_true(hs_start < index_of(cmds, deploy))
  end)
end)
