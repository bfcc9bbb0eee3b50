-- Readiness (issue 15 item 2, issue 14 item 5) through the real binary, a
-- real sshd with the Dokku simulator, and a loopback stand-in for the
-- instance's health endpoint (tests/fixtures/health-server): a profile whose
-- app declares `health = { path = ... }` makes a provision `starting` until
-- the endpoint answers 200, then `running`; one that never answers within
-- HEALTH_TIMEOUT_SECONDS is `unhealthy` with the answer (no secret), keeps
-- its apps, and becomes `running` on a later re-check once it answers; an
-- update checks again; dry-run skips the check and says so. The bounds are
-- seconds via settings; nothing asserts how fast anything was.
local D = require "dokku_harness"
local H = require "harness"
local cjson = require "cjson"
local socket = require "socket"

-- One app holding the instance, with a health check.
local READY = [[
return {
  description = "one app that answers a readiness check",
  build = function(ctx)
    return {
      apps = {
        { name = ctx.names.app, role = "main", image = ctx.settings.backend_image, container_port = 8765,
          domains = { ctx.names.domain }, letsencrypt = { email = ctx.settings.letsencrypt_email },
          health = { path = "/api/ready" } },
      },
    }
  end,
}
]]

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function profiles_dir()
  local dir = H.tmpdir() .. "/profiles"
  os.execute("mkdir -p " .. dir .. " && cp " .. H.root .. "/profiles/*.lua " .. dir .. "/")
  write(dir .. "/ready.lua", READY)
  return dir
end

-- The health endpoint stand-in: { dir, port, mode(m), requests() }.
local function health_server(mode)
  local dir = H.tmpdir()
  write(dir .. "/mode", mode)
  os.execute("lua5.4 " .. H.sh_quote(H.root .. "/tests/fixtures/health-server") .. " " .. H.sh_quote(dir)
    .. " >/dev/null 2>&1 &")
  local port = H.eventually("the health server's port", function()
    return tonumber(H.read_file(dir .. "/port") or "")
  end, 10)
  return {
    dir = dir, port = port,
    mode = function(m) write(dir .. "/mode", m) end,
    requests = function()
      local out = {}
      for line in (H.read_file(dir .. "/requests") or ""):gmatch("[^\n]+") do out[#out + 1] = line end
      return out
    end,
    stop = function() write(dir .. "/stop", "") end,
  }
end

local function status(s, sub, pred, timeout)
  return H.wait_for(s, "/api/v1/status/" .. sub, pred, timeout or 30)
end

describe("readiness: running means answering #integration", function()
  local h, hs, profiles

  setup(function()
    h = D.start()
    profiles = profiles_dir()
  end)

  teardown(function()
    if hs then hs.stop() end
    H.cleanup()
    D.stop_all()
  end)

  local function start(extra)
    local env = D.mrprov_env(h, { PROFILES_DIR = profiles, PROFILE = "ready",
      HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. hs.port .. "/{app}{path}", HEALTH_REQUEST_TIMEOUT = "2" })
    for k, v in pairs(extra) do env[k] = v end
    return H.start({ env = env })
  end

  it("is starting until the health path answers 200, then running", function()
    hs = health_server("fail:2")
    local s = start({ HEALTH_TIMEOUT_SECONDS = "60", HEALTH_RECHECK_INTERVAL = "0" })
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_ready1", account_id = "acc_1", tier = "starter" }, { Prefer = "wait=60" })
    assert.are.equal(200, code)
    assert.are.equal("succeeded", j.job_state, j.error)
    -- deployed, but the endpoint has not answered 200 yet (it answers 503 twice first)
    assert.are.equal("starting", j.status)
    local app = j.app_name
    local st = status(s, "sub_ready1", function(x) return x.status == "running" end)
    assert.are.equal("healthy", st.health_state)
    assert.is_string(st.health_checked_at)
    local seen = hs.requests()
    assert.is_true(#seen >= 3, #seen .. " checks")
    assert.are.equal("GET /" .. app .. "/api/ready HTTP/1.1", seen[1])
    -- the provision job says what it waited for; the check is a job of its own
    local _, pj = H.request(s, "GET", "/api/v1/jobs/" .. j.job_id)
    assert.matches("health check: http://127%.0%.0%.1:%d+/" .. app:gsub("%p", "%%%0") .. "/api/ready must answer 200",
      pj.result.health)
    assert.are.equal("health", st.job.operation)
    assert.are.equal("succeeded", st.job.state)
    -- /metrics: per instance (labelled by app only), and the count by state
    local mcode, _, metrics = H.request(s, "GET", "/metrics")
    assert.are.equal(200, mcode)
    local esc = app:gsub("%p", "%%%0")
    assert.matches('\nmrprov_instance_ready{app="' .. esc .. '"} 1\n', metrics)
    assert.matches('\nmrprov_instance_health_checked_timestamp_seconds{app="' .. esc .. '"} %d', metrics)
    assert.matches('\nmrprov_instances_health{state="healthy"} 1\n', metrics)
    H.stop(s)
  end)

  it("is unhealthy with the answer after the bound, keeps its apps, and recovers on a re-check", function()
    hs.mode("fail")
    local s = start({ HEALTH_TIMEOUT_SECONDS = "2", HEALTH_RECHECK_INTERVAL = "1" })
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_ready2", account_id = "acc_1", tier = "starter" }, { Prefer = "wait=60" })
    assert.are.equal(200, code)
    assert.are.equal("starting", j.status)
    local app = j.app_name
    local st = status(s, "sub_ready2", function(x) return x.status == "unhealthy" end)
    assert.are.equal("unhealthy", st.health_state)
    assert.matches("^not ready after 2 s: HTTP 503: ", st.error)
    assert.is_truthy(st.error:find("not ready: waiting for", 1, true), st.error)
    assert.is_nil(st.error:find("hunter2", 1, true), st.error) -- a credential in the answer is redacted
    assert.is_nil(st.health_error:find("hunter2", 1, true))
    -- not rolled back: the app is still on the (simulated) Dokku host
    assert.are.same({ app }, D.objects_of(D.state(h), app).apps)

    -- an update deploys again and checks again (still failing: starting, then unhealthy)
    local ucode, u = H.request(s, "PUT", "/api/v1/update", { subscription_id = "sub_ready2", app_name = app },
      { Prefer = "wait=60" })
    assert.are.equal(200, ucode)
    assert.are.equal("succeeded", u.job_state, u.error)
    assert.are.equal("starting", u.status)
    status(s, "sub_ready2", function(x) return x.status == "unhealthy" end)

    -- the endpoint answers: the periodic re-check moves it to running
    hs.mode("ok")
    st = status(s, "sub_ready2", function(x) return x.status == "running" end)
    assert.are.equal("healthy", st.health_state)
    assert.are.equal(cjson.null, st.error)
    assert.are.equal(cjson.null, st.health_error)
    H.stop(s)
  end)

  it("skips the check in dry-run and says so", function()
    local s = H.start({ env = { PROFILES_DIR = profiles, PROFILE = "ready",
      HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. hs.port .. "/{app}{path}" } })
    local before = #hs.requests()
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_ready3", account_id = "acc_1", tier = "starter" }, { Prefer = "wait=30" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status)
    local _, st = H.request(s, "GET", "/api/v1/status/sub_ready3")
    assert.are.equal("skipped", st.health_state)
    local _, pj = H.request(s, "GET", "/api/v1/jobs/" .. j.job_id)
    assert.are.equal("health check skipped: dry-run (no request is sent)", pj.result.health)
    assert.is_truthy(H.log_text(s):find("health check skipped: dry-run", 1, true))
    socket.sleep(0.2)
    assert.are.equal(before, #hs.requests())
    H.stop(s)
  end)
end)
