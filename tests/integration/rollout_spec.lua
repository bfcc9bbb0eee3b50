-- Fleet rollouts (issue 18) through the real binary, a real sshd with the
-- Dokku simulator as forced command and the loopback health server standing
-- in for MindRoom's /api/ready. 40 instances of the mindroom profile across
-- the four tiers:
-- - a rollout with a canary of 1 and waves of 10 moves all 40, wave after
--   wave, and deploys each instance's MindRoom app exactly once (the
--   simulator's log: one git:from-archive per app); the status view and
--   /metrics show it;
-- - a release that never answers readiness (the health server says 503 for
--   apps deployed from it) halts once the failure budget is exceeded, the
--   rest untouched; rollback puts the changed ones back on their image;
-- - kill -9 mid-wave: the restarted service resumes the rollout where it
--   was (no instance finished before the kill is deployed again);
-- - pause, resume and abort; a pinned instance is skipped and reported;
-- - hostile and conflicting requests are refused; `mrprov rollout` lists;
-- - a step converges only what the change touches (converge "changed", the
--   default): the homeserver is not even probed and a hand-made drift there
--   stays; with converge "all" a step probes every resource and repairs it.
-- Bounds are seconds; nothing asserts how fast anything was.
local D = require "dokku_harness"
local H = require "harness"
local cjson = require "cjson"

local N = 40
local TIERS = { "free", "starter", "professional", "enterprise" }
local V2 = "ghcr.io/mindroom-ai/mindroom:v2026.12.1"
local BAD = "ghcr.io/mindroom-ai/mindroom:v2026.12.2-broken"
local V4 = "ghcr.io/mindroom-ai/mindroom:v2026.12.4"
local V5 = "ghcr.io/mindroom-ai/mindroom:v2026.12.5"

local function sub_of(i)
  return ("sub_ro%02d"):format(i)
end

-- The image each MindRoom app was last deployed from, by the simulator.
local function deployed(h, app)
  local a = D.state(h).apps[app]
  return a and a.git_context and a.git_context.from or nil
end

-- git:from-archive commands per app logged after entry `since`.
local function deploys(h, since)
  local out = {}
  for i, e in ipairs(D.log(h)) do
    if i > since and e.argv then
      local argv = e.argv
      local k = argv[1] == "--quiet" and 2 or 1
      if argv[k] == "git:from-archive" or argv[k] == "git:from-image" then
        local app
        for j = k + 1, #argv do
          if argv[j]:sub(1, 2) ~= "--" and argv[j - 1] ~= "--archive-type" then
            app = argv[j]
            break
          end
        end
        out[app] = (out[app] or 0) + 1
      end
    end
  end
  return out
end

-- The commands logged after entry `since` that name app (argv words).
local function commands_on(h, since, app)
  local out = {}
  for i, e in ipairs(D.log(h)) do
    if i > since and e.argv then
      for _, w in ipairs(e.argv) do
        if w == app then
          local k = e.argv[1] == "--quiet" and 2 or 1
          out[#out + 1] = e.argv[k]
          break
        end
      end
    end
  end
  return out
end

local function rollout_done(srv, id, states, timeout)
  local want = {}
  for _, s in ipairs(states) do want[s] = true end
  return H.wait_for(srv, "/api/v1/rollouts/" .. id, function(r)
    if not want[r.state] then return false end
    for _, e in ipairs(r.instances) do
      if e.state == "updating" or e.state == "checking" or e.state == "reverting" then return false end
    end
    return true
  end, timeout or 60)
end

local function entry(r, sub)
  for _, e in ipairs(r.instances) do
    if e.subscription_id == sub then return e end
  end
end

-- Jobs of the rollout's driver that wait or run (the store, read-only).
local function driver_live(srv, id)
  local rows = H.sqlite_rows(srv.env.STATE_DB, "SELECT count(*) AS n FROM jobs WHERE subscription_id = '_rollout_"
    .. id .. "' AND state IN ('queued', 'running')")
  return rows[1] and rows[1].n or 0
end

describe("fleet rollouts #integration", function()
  local h, srv, health, env, apps

  setup(function()
    h = D.start()
    health = H.health_server("ok", { sim_state = h.state })
    env = D.mrprov_env(h, { PROFILE = "mindroom", WORKERS = "4", DOKKU_POOL_SIZE = "4",
      HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. health.port .. "/{app}{path}", HEALTH_TIMEOUT_SECONDS = "2",
      HEALTH_REQUEST_TIMEOUT = "1" })
    srv = H.start({ env = env })
    apps = {}
    for i = 1, N do
      local code, j = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = sub_of(i), account_id = "acc_ro", tier = TIERS[(i - 1) % #TIERS + 1] })
      assert.are.equal(202, code, cjson.encode(j))
      apps[sub_of(i)] = j.app_name
    end
    for i = 1, N do
      H.wait_for(srv, "/api/v1/status/" .. sub_of(i), function(x) return x.status == "running" end, 120)
    end
  end)

  teardown(function()
    if health then health.stop() end
    H.cleanup()
    D.stop_all()
  end)

  it("refuses hostile and conflicting requests", function()
    local bad = {
      { image = "ghcr.io/x:1;rm -rf /" },
      { image = V2, extra = 1 },
      { image = V2, waves = { 0 } },
      { image = V2, waves = { "101%" } },
      { image = V2, waves = { "1.5" } },
      { image = V2, parallel = 0 },
      { image = V2, parallel = 1.5 },
      { image = V2, failure_budget = -1 },
      { image = V2, pause_seconds = "1" },
      { image = V2, rollback_on_failure = "yes" },
      { image = V2, selector = { tiers = { "nope" } } },
      { image = V2, selector = { hosts = { "Bad Host" } } },
      -- the implicit host (DOKKU_HOST) carries no labels: matches no instance
      { image = V2, selector = { labels = { team = "a" } } },
      { image = V2, selector = { subscription_ids = { "sub_missing" } } },
      { image = V2, selector = { percent = 0 } },
      { image = V2, selector = { hosts = { "elsewhere" } } },
    }
    for _, b in ipairs(bad) do
      local code, j = H.request(srv, "POST", "/api/v1/rollouts", b)
      assert.are.equal(422, code, cjson.encode(b) .. " → " .. cjson.encode(j))
      assert.is_string(j.error.message)
    end
    local code = H.request(srv, "POST", "/api/v1/rollouts", "{not json")
    assert.are.equal(400, code)
    code = H.request(srv, "GET", "/api/v1/rollouts/ro_0000")
    assert.are.equal(404, code)
    code = H.request(srv, "POST", "/api/v1/rollouts/ro_0000/pause")
    assert.are.equal(404, code)
  end)

  it("moves all 40 in waves (canary 1, then 10s), deploying each exactly once", function()
    local since = #D.log(h)
    local code, r = H.request(srv, "POST", "/api/v1/rollouts",
      { image = V2, waves = { 1, 10, 10, 10, 10 }, parallel = 4 })
    assert.are.equal(201, code, cjson.encode(r))
    assert.are.equal(40, r.total)
    -- a second rollout while this one is active is refused
    local c2 = H.request(srv, "POST", "/api/v1/rollouts", { image = V4 })
    assert.are.equal(409, c2)
    r = rollout_done(srv, r.id, { "finished" }, 90)
    assert.are.equal(40, r.counts.done, cjson.encode(r.counts))
    assert.are.equal(0, r.failures)
    assert.are.same({ 1, 10, 10, 10, 9 }, (function()
      local sizes = {}
      for _, w in ipairs(r.wave_progress) do sizes[#sizes + 1] = w.size end
      return sizes
    end)())
    -- wave after wave: no step of a wave started before the previous finished
    local ends, starts = {}, {}
    for _, e in ipairs(r.instances) do
      ends[e.wave] = (ends[e.wave] == nil or e.finished_at > ends[e.wave]) and e.finished_at or ends[e.wave]
      starts[e.wave] = (starts[e.wave] == nil or e.started_at < starts[e.wave]) and e.started_at or starts[e.wave]
    end
    for w = 2, #r.wave_progress do
      assert.is_true(starts[w] >= ends[w - 1], ("wave %d started %s, wave %d ended %s"):format(w, starts[w],
        w - 1, ends[w - 1]))
    end
    -- each MindRoom app deployed exactly once, from the target; the
    -- homeservers not at all
    local per_app = deploys(h, since)
    for i = 1, N do
      local app = apps[sub_of(i)]
      assert.are.equal(1, per_app[app], app .. ": " .. cjson.encode(per_app))
      assert.are.equal(V2, deployed(h, app))
      assert.is_nil(per_app[app .. "-matrix"])
    end
    local _, view = H.request(srv, "GET", "/api/v1/status/" .. sub_of(7))
    assert.are.equal(V2, view.image)
    assert.is_true(view.image_override)
    assert.is_false(view.pinned)
    -- a later update keeps the instance's image (no deploy back)
    local uc, u = H.request(srv, "PUT", "/api/v1/update", { subscription_id = sub_of(7), app_name = apps[sub_of(7)],
      config_updates = { MRPROV_TEST_NOTE = "after-rollout" } }, { Prefer = "wait=60" })
    assert.are.equal(200, uc, cjson.encode(u))
    assert.are.equal(V2, deployed(h, apps[sub_of(7)]))
    local _, _, metrics = H.request(srv, "GET", "/metrics")
    assert.matches('mrprov_rollout_instances{rollout="' .. r.id .. '",state="done"} 40', metrics, 1, true)
    assert.matches('mrprov_rollouts{state="finished"} 1', metrics, 1, true)
    assert.matches('"msg":"rollout finished"', H.log_text(srv), 1, true)
    local lc, list = H.request(srv, "GET", "/api/v1/rollouts")
    assert.are.equal(200, lc)
    assert.are.equal(r.id, list.rollouts[1].id)
  end)

  it("halts a release that never gets ready after the failure budget; rollback restores the changed ones",
    function()
    health.mode("fail-image:" .. BAD)
    local code, r = H.request(srv, "POST", "/api/v1/rollouts",
      { image = BAD, waves = { 1, 5, "100%" }, parallel = 2, failure_budget = 1 })
    assert.are.equal(201, code, cjson.encode(r))
    r = rollout_done(srv, r.id, { "halted" }, 60)
    assert.is_true(r.failures >= 2, cjson.encode(r.counts))
    assert.matches("failure budget is 1", r.reason)
    local changed, untouched = {}, 0
    for _, e in ipairs(r.instances) do
      if e.state == "failed" then
        changed[#changed + 1] = e.subscription_id
        assert.matches("not ready", e.error)
        assert.are.equal(BAD, deployed(h, apps[e.subscription_id]))
        assert.are.equal(V2, e.previous_image)
      else
        assert.are.equal("pending", e.state, cjson.encode(e))
        untouched = untouched + 1
        assert.are.equal(V2, deployed(h, apps[e.subscription_id]))
      end
    end
    assert.is_true(#changed == r.failures and untouched >= N - 1 - 5, cjson.encode(r.counts))
    -- the driver stopped: nothing more starts
    assert.are.equal(0, driver_live(srv, r.id))

    local since = #D.log(h)
    local ac, a = H.request(srv, "POST", "/api/v1/rollouts/" .. r.id .. "/rollback")
    assert.are.equal(200, ac, cjson.encode(a))
    r = rollout_done(srv, r.id, { "rolled_back" }, 60)
    assert.are.equal(#changed, r.counts.rolled_back, cjson.encode(r.counts))
    local per_app = deploys(h, since)
    for _, sub in ipairs(changed) do
      assert.are.equal(V2, deployed(h, apps[sub]))
      assert.are.equal(1, per_app[apps[sub]])
      local _, view = H.request(srv, "GET", "/api/v1/status/" .. sub)
      assert.are.equal("running", view.status)
      assert.are.equal(V2, view.image)
    end
    local n = 0
    for _ in pairs(per_app) do n = n + 1 end
    assert.are.equal(#changed, n, "only the changed ones are deployed again")
    local _, _, metrics = H.request(srv, "GET", "/metrics")
    assert.matches('mrprov_rollout_failures_total{rollout="' .. r.id .. '"}', metrics, 1, true)
    health.mode("ok")
  end)

  it("resumes where it was after kill -9 mid-wave; a pinned instance is skipped", function()
    local pc, p = H.request(srv, "POST", "/api/v1/instances/" .. sub_of(3) .. "/pin")
    assert.are.equal(200, pc, cjson.encode(p))
    assert.is_true(p.pinned)
    -- 12 instances of two tiers; slow deploys so the kill lands mid-wave
    D.settings(h, { deploy_ms = 400 })
    local since = #D.log(h)
    local code, r = H.request(srv, "POST", "/api/v1/rollouts",
      { image = V4, selector = { tiers = { "free", "professional" }, percent = 60 }, waves = { 1, "100%" },
        parallel = 2 })
    assert.are.equal(201, code, cjson.encode(r))
    local id = r.id
    local total = r.total
    assert.are.equal(12, total)
    local before = H.wait_for(srv, "/api/v1/rollouts/" .. id, function(x)
      return x.wave == 2 and (x.counts.done or 0) >= 2
    end, 60)
    H.stop(srv, "KILL")
    local done_before = {}
    for _, e in ipairs(before.instances) do
      if e.state == "done" then done_before[e.subscription_id] = true end
    end
    local killed_at = #D.log(h)
    D.settings(h, {})
    srv = H.start({ env = env, dir = srv.dir })
    r = rollout_done(srv, id, { "finished" }, 90)
    local skipped = entry(r, sub_of(3))
    assert.are.equal("skipped", skipped.state)
    assert.matches("pinned", skipped.error)
    assert.are.equal(V2, deployed(h, apps[sub_of(3)]))
    assert.are.equal(total - 1, r.counts.done, cjson.encode(r.counts))
    local after = deploys(h, killed_at)
    for _, e in ipairs(r.instances) do
      if e.state == "done" then
        assert.are.equal(V4, deployed(h, apps[e.subscription_id]))
      end
      if done_before[e.subscription_id] then
        assert.is_nil(after[apps[e.subscription_id]], e.subscription_id .. " deployed again after the restart")
      end
    end
    -- no instance outside the selection was touched
    local all = deploys(h, since)
    for i = 1, N do
      if not entry(r, sub_of(i)) then
        assert.is_nil(all[apps[sub_of(i)]])
      end
    end
    local _, view = H.request(srv, "GET", "/api/v1/status/" .. sub_of(3))
    assert.is_true(view.pinned)
    assert.are.equal(V2, view.image)
  end)

  it("pauses, resumes and aborts; the CLI lists and shows", function()
    local code, r = H.request(srv, "POST", "/api/v1/rollouts",
      { image = V5, selector = { tiers = { "starter" } }, waves = { 1, 1, "100%" }, parallel = 1 })
    assert.are.equal(201, code, cjson.encode(r))
    local id = r.id
    local pc, p = H.request(srv, "POST", "/api/v1/rollouts/" .. id .. "/pause")
    assert.are.equal(200, pc, cjson.encode(p))
    assert.are.equal("paused", p.state)
    -- what was in flight finishes; then the driver stops and nothing starts
    r = rollout_done(srv, id, { "paused" }, 30)
    H.eventually("the paused driver to stop", function() return driver_live(srv, id) == 0 end, 10)
    local _, settled = H.request(srv, "GET", "/api/v1/rollouts/" .. id)
    assert.are.equal(r.counts.pending, settled.counts.pending)
    assert.is_true(settled.counts.pending >= 8, cjson.encode(settled.counts))
    -- pause twice: 409
    assert.are.equal(409, (H.request(srv, "POST", "/api/v1/rollouts/" .. id .. "/pause")))
    local rc = H.request(srv, "POST", "/api/v1/rollouts/" .. id .. "/resume")
    assert.are.equal(200, rc)
    H.wait_for(srv, "/api/v1/rollouts/" .. id, function(x)
      return (x.counts.done or 0) >= (settled.counts.done or 0) + 2
    end, 60)
    local ac, a = H.request(srv, "POST", "/api/v1/rollouts/" .. id .. "/abort")
    assert.are.equal(200, ac, cjson.encode(a))
    r = rollout_done(srv, id, { "aborted" }, 30)
    H.eventually("the aborted driver to stop", function() return driver_live(srv, id) == 0 end, 10)
    assert.is_true(r.counts.pending > 0, cjson.encode(r.counts))
    for _, e in ipairs(r.instances) do
      if e.state == "pending" then
        assert.are_not.equal(V5, deployed(h, apps[e.subscription_id]))
      end
    end
    assert.are.equal(409, (H.request(srv, "POST", "/api/v1/rollouts/" .. id .. "/resume")))

    local cenv = {}
    for k, v in pairs(srv.env) do cenv[k] = v end
    local c, out, err = H.run({ "rollout", "--list", "--json" }, cenv, srv.dir)
    assert.are.equal(0, c, tostring(err))
    local listed = cjson.decode(out)
    assert.are.equal(id, listed.rollouts[1].id)
    c, out = H.run({ "rollout", "--show", id }, cenv, srv.dir)
    assert.are.equal(0, c)
    assert.matches(id .. " aborted", out, 1, true)
    c, _, err = H.run({ "rollout", "--create", '{"image": "bad image"}' }, cenv, srv.dir)
    assert.are.equal(2, c)
    assert.matches("image", err)
  end)

  it("converges only what the change touches; converge \"all\" probes and repairs the whole instance", function()
    local a, b = sub_of(9), sub_of(13) -- free tier, not pinned
    local function drift(sub)
      local hs = apps[sub] .. "-matrix"
      local keys = {}
      for k in pairs(D.state(h).apps[hs].env) do
        if not k:find("^DOKKU_") and k ~= "GIT_REV" then keys[#keys + 1] = k end
      end
      table.sort(keys)
      local code, _, err = D.ssh(h, "--quiet config:unset --no-restart " .. hs .. " " .. keys[1])
      assert.are.equal(0, code, tostring(err))
      return hs, keys[1]
    end
    local hs_a, key_a = drift(a)
    local hs_b, key_b = drift(b)
    local since = #D.log(h)
    local code, r = H.request(srv, "POST", "/api/v1/rollouts",
      { image = "ghcr.io/mindroom-ai/mindroom:v2026.12.6", selector = { subscription_ids = { a } } })
    assert.are.equal(201, code, cjson.encode(r))
    assert.are.equal("changed", r.converge)
    r = rollout_done(srv, r.id, { "finished" }, 60)
    assert.are.equal(1, r.counts.done, cjson.encode(r.counts))
    -- the homeserver: not one command, its drift left for the sweep
    assert.are.same({}, commands_on(h, since, hs_a))
    assert.is_nil(D.state(h).apps[hs_a].env[key_a])
    -- the MindRoom app: its deploy source and build context read, the
    -- deploy, the context's digest recorded; no other resource probed
    local seen = {}
    for _, c in ipairs(commands_on(h, since, apps[a])) do seen[c] = (seen[c] or 0) + 1 end
    assert.are.equal(1, seen["git:from-archive"], cjson.encode(seen))
    for _, other in ipairs({ "domains:report", "ports:report", "checks:report", "storage:list",
                             "letsencrypt:active", "resource:report", "ps:report" }) do
      assert.is_nil(seen[other], other .. " sent: " .. cjson.encode(seen))
    end

    since = #D.log(h)
    code, r = H.request(srv, "POST", "/api/v1/rollouts", { image = "ghcr.io/mindroom-ai/mindroom:v2026.12.6",
      selector = { subscription_ids = { b } }, converge = "all" })
    assert.are.equal(201, code, cjson.encode(r))
    assert.are.equal("all", r.converge)
    r = rollout_done(srv, r.id, { "finished" }, 60)
    assert.are.equal(1, r.counts.done, cjson.encode(r.counts))
    local on_hs = {}
    for _, c in ipairs(commands_on(h, since, hs_b)) do on_hs[c] = true end
    assert.is_true(on_hs["domains:report"] and on_hs["config:set"], cjson.encode(on_hs))
    assert.is_string(D.state(h).apps[hs_b].env[key_b])
    assert.are.equal("ghcr.io/mindroom-ai/mindroom:v2026.12.6", deployed(h, apps[b]))
    local bad = H.request(srv, "POST", "/api/v1/rollouts", { image = V4, converge = "some" })
    assert.are.equal(422, bad)
  end)
end)
