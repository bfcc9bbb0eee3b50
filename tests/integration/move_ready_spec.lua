-- A move asks its target before the switch (issue 16, item 5: "its health
-- check answers; then domains and TLS switch") when HEALTH_URL_TEMPLATE
-- asks the Dokku host itself ({host}): the real binary, two real sshd
-- "hosts" with their own simulator state, the mindroom profile (its
-- MindRoom app has a health path), and the loopback health server standing
-- in for each host's copy (the path's first segment is the host's name).
-- - the target's copy never answers: the move fails before the switch
--   after HEALTH_TIMEOUT_SECONDS, the target is rolled back, the instance
--   stays on its host, running, its apps untouched;
-- - it answers: the move finishes, says the target answered before the
--   switch, and the readiness check after it asks the new host;
-- - a stopped instance moves and stays stopped (nothing runs to be asked).
-- Bounds are seconds; nothing asserts how fast anything was.
local D = require "dokku_harness"
local H = require "harness"
local cjson = require "cjson"

local NAMES = { "h1", "h2" }

describe("a move asks its target before the switch #integration", function()
  local by_name, srv, dir, health = {}, nil, nil, nil

  local function status(sub)
    local code, v = H.request(srv, "GET", "/api/v1/status/" .. sub)
    assert.are.equal(200, code)
    return v
  end

  local function job_done(job_id, timeout)
    return H.wait_for(srv, "/api/v1/jobs/" .. job_id, function(j)
      return j.state == "succeeded" or j.state == "failed"
    end, timeout)
  end

  -- The health server's requests for paths under /host/app.
  local function asked(host, app)
    local n = 0
    for _, line in ipairs(health.requests()) do
      if line:find(" /" .. host .. "/" .. app .. "/", 1, true) then n = n + 1 end
    end
    return n
  end

  setup(function()
    for _, n in ipairs(NAMES) do
      by_name[n] = D.start()
    end
    health = H.health_server("ok")
    dir = H.tmpdir()
    os.execute("mkdir -p " .. dir .. "/hosts")
    for _, n in ipairs(NAMES) do
      H.write_file(dir .. "/hosts/" .. n .. ".lua",
        D.host_file(by_name[n], { "capacity = { memory_mb = 4096, cpu = 8, instances = 8 }," }))
    end
    srv = H.start({ dir = dir, env = { HOSTS_DIR = dir .. "/hosts", DOKKU_HOST_KEY_TOFU = "true",
      DOKKU_POOL_SIZE = "2", LETSENCRYPT_EMAIL = "ops@example.com", WORKERS = "4", PROFILE = "mindroom",
      HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. health.port .. "/{host}/{app}{path}",
      HEALTH_TIMEOUT_SECONDS = "3", HEALTH_REQUEST_TIMEOUT = "1" } })
  end)

  teardown(function()
    if health then health.stop() end
    if srv then H.stop(srv) end
    for _, n in ipairs(NAMES) do D.stop(by_name[n]) end
  end)

  it("rolls back a move whose target never answers, then moves once it does", function()
    assert.are.equal(200, (H.request(srv, "POST", "/api/v1/hosts/h2/drain")))
    local code, j = H.request(srv, "POST", "/api/v1/provision", { subscription_id = "sub_mr1", account_id = "acc_mr",
                                                                  tier = "free" })
    assert.are.equal(202, code, cjson.encode(j))
    assert.are.equal(200, (H.request(srv, "POST", "/api/v1/hosts/h2/undrain")))
    local app = j.app_name
    H.wait_for(srv, "/api/v1/status/sub_mr1", function(v) return v.status == "running" end, 60)
    assert.are.equal("h1", status("sub_mr1").host)
    -- the readiness check asks the instance's own host
    assert.is_true(asked("h1", app) >= 1)
    local before = D.state(by_name.h1).apps

    health.mode("fail-path:h2")
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_mr1/move", { host = "h2" })
    assert.are.equal(202, code, cjson.encode(j))
    local job = job_done(j.job_id, 90)
    assert.are.equal("failed", job.state)
    assert.matches("rolled back", job.error)
    assert.matches("did not answer its readiness check", job.error, 1, true)
    assert.is_nil(job.error:find("hunter2", 1, true)) -- the answer's credential is not copied
    assert.is_true(asked("h2", app) >= 1, "the target was not asked")
    local v = status("sub_mr1")
    assert.are.equal("h1", v.host)
    assert.are.equal("running", v.status)
    -- nothing of the instance is left on the target; the source's apps as they were
    for name in pairs(D.state(by_name.h2).apps) do
      assert.is_nil(name:find(app, 1, true), name .. " left on h2")
    end
    local after = D.state(by_name.h1).apps
    for name, a in pairs(before) do
      assert.same(a.domains, after[name].domains)
      assert.are.equal(a.deploy.running, after[name].deploy.running)
    end

    health.mode("ok")
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_mr1/move", { host = "h2" })
    assert.are.equal(202, code, cjson.encode(j))
    job = job_done(j.job_id, 90)
    assert.are.equal("succeeded", job.state, tostring(job.error))
    assert.matches("answered on h2 before the switch", job.result.target_ready, 1, true)
    H.wait_for(srv, "/api/v1/status/sub_mr1", function(x) return x.status == "running" and x.host == "h2" end, 60)
    for name in pairs(D.state(by_name.h1).apps) do
      assert.is_nil(name:find(app, 1, true), name .. " left on h1")
    end

    -- a stopped instance (nothing writes meanwhile) moves and stays stopped;
    -- nothing runs to be asked before the switch
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_mr1/stop", nil, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("stopped", status("sub_mr1").status)
    health.mode("fail-path:h1")
    code, j = H.request(srv, "POST", "/api/v1/instances/sub_mr1/move", { host = "h1" })
    assert.are.equal(202, code, cjson.encode(j))
    job = job_done(j.job_id, 90)
    assert.are.equal("succeeded", job.state, tostring(job.error))
    assert.matches("the instance is stopped", job.result.target_ready, 1, true)
    v = status("sub_mr1")
    assert.are.equal("h1", v.host)
    assert.are.equal("stopped", v.status)
    for name, a in pairs(D.state(by_name.h1).apps) do
      if name:find(app, 1, true) then
        assert.is_false(a.deploy.running == true, name .. " runs")
      end
    end
  end)
end)
