-- Integration (issue 15 items 3 and 4): the drift sweep through the real
-- binary, a real sshd and the Dokku simulator (split profile). An operator
-- changes a provisioned instance by hand (unsets an env key, changes a
-- limit, removes a domain, unlinks redis) and creates an app named like an
-- instance's: one sweep (POST /api/v1/reconcile) reports exactly those four
-- resources and the orphan; in repair mode the job it queues sends only the
-- commands that fix them; the orphan is never touched; a repair job killed
-- with -9 resumes like any job.
local H = require "harness"
local D = require "dokku_harness"
local cjson = require "cjson"

local ORPHAN = "mr-orphan01-abcdefgh"

local function sweep(srv)
  local code, started = H.request(srv, "POST", "/api/v1/reconcile")
  if code == 409 then
    -- one still under way (started before): let it end, then start ours
    H.wait_for(srv, "/api/v1/reconcile", function(r) return r.job_id == started.job_id end, 30)
    code, started = H.request(srv, "POST", "/api/v1/reconcile")
  end
  assert.are.equal(202, code, cjson.encode(started))
  local rep = H.wait_for(srv, "/api/v1/reconcile", function(r)
    return r.job_id == started.job_id
  end, 30)
  assert.are.equal("finished", rep.state)
  return rep
end

local function by_type(entries)
  local out = {}
  for _, e in ipairs(entries) do
    out[#out + 1] = e.type .. " " .. e.app
  end
  table.sort(out)
  return out
end

local mutating = D.mutating

local function env_key(h, app)
  local keys = {}
  for k in pairs(D.state(h).apps[app].env) do
    if not k:find("^DOKKU_") and k ~= "DATABASE_URL" and k ~= "REDIS_URL" and k ~= "GIT_REV" then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  return keys[1]
end

local function drift_by_hand(h, app)
  local backend, frontend = app .. "-backend", app .. "-frontend"
  local key = env_key(h, backend)
  local function run(cmd)
    local code, _, err = D.ssh(h, cmd)
    assert.are.equal(0, code, cmd .. ": " .. tostring(err))
  end
  run("--quiet config:unset --no-restart " .. backend .. " " .. key)
  run("--quiet resource:limit --memory 777m " .. backend)
  run("--quiet domains:remove " .. frontend .. " " .. D.state(h).apps[frontend].domains[1])
  run("--quiet redis:unlink " .. app .. "-redis " .. backend .. " --no-restart")
  run("--quiet apps:create " .. ORPHAN)
  run("--quiet apps:create some-other-app")
  return key
end

-- The frontend's only domain removed, its certificate no longer covers the
-- app's first domain: letsencrypt:active answers false on the server
-- (le:internal-functions fn-letsencrypt-is-active; the simulator's
-- le_active), so the TLS resource's own probe differs too.
local EXPECTED = function(app)
  local out = { "config " .. app .. "-backend", "limits " .. app .. "-backend", "domains " .. app .. "-frontend",
                "letsencrypt " .. app .. "-frontend", "link " .. app .. "-backend" }
  table.sort(out)
  return out
end

describe("drift sweep #integration", function()
  local h
  setup(function()
    h = D.start()
  end)
  teardown(function()
    H.cleanup()
    D.stop_all()
  end)

  it("reports exactly the resources changed by hand and the orphan, and repairs only those", function()
    local env = D.mrprov_env(h, { RECONCILE_INTERVAL = "0" })
    local srv = H.start({ env = env })
    local sub = "sub_drift"
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = sub, account_id = "acc_1", tier = "free" }, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    local app = j.app_name
    -- in sync: a sweep finds nothing, and the status view says when it looked
    local clean = sweep(srv)
    assert.are.equal(1, clean.instances_checked)
    assert.are.equal(0, clean.drifted_count)
    local _, st0 = H.request(srv, "GET", "/api/v1/status/" .. sub)
    assert.are.same({}, st0.drift.resources)

    drift_by_hand(h, app)
    local rep = sweep(srv)
    assert.are.equal("report", rep.mode)
    assert.are.equal(1, rep.drifted_count)
    assert.are.equal(sub, rep.drifted[1].subscription_id)
    assert.are.same(EXPECTED(app), by_type(rep.drifted[1].resources))
    for _, e in ipairs(rep.drifted[1].resources) do
      assert.is_true(#e.commands > 0, cjson.encode(e))
      for _, c in ipairs(e.commands) do
        -- shown as plans show them: no value of a config:set
        assert.is_nil(c:match("config:set .-=[^%[ ]"), c)
      end
    end
    assert.are.same({ ORPHAN }, rep.orphans.app)
    assert.are.equal(1, rep.orphans_count)
    assert.are.same({}, rep.repaired)
    local _, st = H.request(srv, "GET", "/api/v1/status/" .. sub)
    assert.are.same(EXPECTED(app), by_type(st.drift.resources))
    assert.are.equal("running", st.status)
    local _, _, metrics = H.request(srv, "GET", "/metrics")
    assert.matches("\nmrprov_drift_instances 1\n", metrics)
    assert.matches('\nmrprov_orphans{kind="app"} 1\n', metrics)
    assert.matches("\nmrprov_reconcile_instances_checked 1\n", metrics)
    assert.matches('"msg":"drift found"', H.log_text(srv))
    H.stop(srv)

    -- `mrprov reconcile --dry-run` prints the same, changing nothing
    local before = #D.log(h)
    local ccode, out, err = H.run({ "reconcile", "--dry-run", "--json" }, {
      STATE_DB = srv.dir .. "/data/mrprov.db", DOKKU_HOST = env.DOKKU_HOST, DOKKU_PORT = env.DOKKU_PORT,
      DOKKU_USER = env.DOKKU_USER, DOKKU_SSH_KEY_PATH = env.DOKKU_SSH_KEY_PATH,
      DOKKU_KNOWN_HOSTS = env.DOKKU_KNOWN_HOSTS, LETSENCRYPT_EMAIL = "ops@example.com",
      TIERS_DIR = H.root .. "/tiers", HOOKS_DIR = H.root .. "/hooks", LUA_DIR = H.root .. "/lua",
    }, srv.dir)
    assert.are.equal(0, ccode, tostring(err))
    local dry = cjson.decode(out)
    assert.are.equal("dry-run", dry.mode)
    assert.are.same(EXPECTED(app), by_type(dry.drifted[1].resources))
    assert.are.same({ ORPHAN }, dry.orphans.app)
    assert.are.same({}, mutating(h, before))
    local ucode = H.run({ "reconcile" }, {})
    assert.are.equal(2, ucode)

    -- repair: the job it queues sends only the fixes
    env.RECONCILE_MODE = "repair"
    local srv2 = H.start({ dir = srv.dir, env = env })
    local since = #D.log(h)
    local rep2 = sweep(srv2)
    assert.are.same({ sub }, rep2.repaired)
    local job_id = rep2.drifted[1].repair_job_id
    assert.is_string(job_id)
    local done = H.wait_for(srv2, "/api/v1/jobs/" .. job_id, function(x)
      return x.state == "succeeded" or x.state == "failed"
    end, 60)
    assert.are.equal("succeeded", done.state, cjson.encode(done))
    local sent = mutating(h, since)
    local fixes = {}
    local entries = {}
    for _, e in ipairs(rep2.drifted[1].resources) do entries[#entries + 1] = e end
    -- (a removed domain leaves the certificate stale: its fix re-enables it)
    for _, e in ipairs(rep2.drifted[1].follow_ups) do entries[#entries + 1] = e end
    for _, e in ipairs(entries) do
      for _, c in ipairs(e.commands) do
        fixes[#fixes + 1] = c:gsub("^dokku %-%-quiet ", "")
      end
    end
    local restarts = {}
    for _, a in ipairs(rep2.drifted[1].restarts) do
      restarts[a] = true
    end
    for _, c in ipairs(sent) do
      c = c:gsub("^%-%-quiet ", "")
      local known = restarts[c:match("^ps:restart (%S+)$") or ""]
      for _, f in ipairs(fixes) do
        -- config:set values are shown as [set] in the report
        local pat = "^" .. f:gsub("[%%%-%.%+%*%?%(%)%^%$%[%]]", "%%%0"):gsub("%%%[set%%%]", ".+") .. "$"
        known = known or c:match(pat) ~= nil
      end
      assert.is_true(known, "a command that fixes no reported drift was sent: " .. c .. "\n" ..
        table.concat(fixes, "\n"))
    end
    assert.is_true(#sent >= #fixes, table.concat(sent, "\n"))
    -- converged: the next sweep finds nothing, and the orphan is still there
    local rep3 = sweep(srv2)
    assert.are.equal(0, rep3.drifted_count, cjson.encode(rep3.drifted))
    assert.are.same({ ORPHAN }, rep3.orphans.app)
    assert.is_table(D.state(h).apps[ORPHAN])
    local _, st3 = H.request(srv2, "GET", "/api/v1/status/" .. sub)
    assert.are.equal("running", st3.status)
    assert.are.same({}, st3.drift.resources)
    H.stop(srv2)
  end)

  it("a repair job killed with -9 resumes like any job", function()
    D.reset(h)
    local env = D.mrprov_env(h, { RECONCILE_INTERVAL = "0", RECONCILE_MODE = "repair" })
    local srv = H.start({ env = env })
    local sub = "sub_drift_kill"
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = sub, account_id = "acc_1", tier = "free" }, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    drift_by_hand(h, j.app_name)
    -- every command slow: the kill lands inside the repair job
    D.set_faults(h, { { match = "^%-%-quiet [a-z]+:[a-z]", action = "delay", ms = 150 } })
    local _, started = H.request(srv, "POST", "/api/v1/reconcile")
    local st = H.wait_for(srv, "/api/v1/status/" .. sub, function(s)
      return s.job ~= cjson.null and s.job.operation == "update" and s.job.state == "running"
        and s.job.step ~= cjson.null
    end, 30)
    assert.is_string(started.job_id)
    H.stop(srv, "KILL")
    D.set_faults(h, {})
    local srv2 = H.start({ dir = srv.dir, env = env })
    local done = H.wait_for(srv2, "/api/v1/jobs/" .. st.job.id, function(x)
      return x.state == "succeeded" or x.state == "failed"
    end, 60)
    assert.are.equal("succeeded", done.state, cjson.encode(done))
    local rep = sweep(srv2)
    assert.are.equal(0, rep.drifted_count, cjson.encode(rep.drifted))
    H.stop(srv2)
  end)
end)
