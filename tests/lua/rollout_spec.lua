-- lua/rollout.lua: the request's validation (hostile input), the wave
-- sizes, and the driver's ticks on the real store binding over an in-memory
-- SQLite (store v7) with the mindroom profile: the per-instance image in
-- the desired state, a step as the ordinary update job, waves, the failure
-- budget, pins (flag and hook), waiting for an instance's own job, rollback,
-- and the target for instances provisioned during a rollout.
local memstore = require "memstore"
local store = memstore.install()
local cjson = require "cjson"
local helper = require "helper"

local V2 = "ghcr.io/mindroom-ai/mindroom:v2026.12.1"

describe("rollout.validate", function()
  local rollout, cfg
  setup(function()
    rollout = require "rollout"
    cfg = { tiers = helper.shipped_tiers() }
  end)

  it("normalizes a good request with its defaults", function()
    local r = assert(rollout.validate({ image = V2, selector = { tiers = { "free", "free", "starter" } },
      waves = { 1, "10%", 100 }, parallel = 4, failure_budget = 2 }, cfg))
    assert.are.same({ "free", "starter" }, r.selector.tiers)
    assert.are.same({ 1, "10%", 100 }, r.waves)
    assert.are.equal(4, r.parallel)
    assert.are.equal(0, r.pause_seconds)
    assert.is_false(r.rollback_on_failure)
    assert.is_false(r.apply_to_new)
    r = assert(rollout.validate({ image = V2 }, cfg))
    assert.are.same({ 1, "100%" }, r.waves)
    assert.are.equal(1, r.parallel)
  end)

  it("refuses hostile input, naming the field", function()
    local cases = {
      { { image = "x y" }, "image" }, { { image = "a;b" }, "image" }, { {}, "image" },
      { { image = V2, ["$where"] = 1 }, "?where" },
      { { image = V2, selector = { 1, 2 } }, "selector" },
      { { image = V2, selector = { tiers = "free" } }, "selector.tiers" },
      { { image = V2, selector = { tiers = { "free", "../x" } } }, "selector.tiers[2]" },
      { { image = V2, selector = { hosts = { "a b" } } }, "selector.hosts[1]" },
      { { image = V2, selector = { hosts = { ("h"):rep(64) } } }, "selector.hosts[1]" },
      { { image = V2, selector = { labels = {} } }, "selector.labels" },
      { { image = V2, selector = { subscription_ids = { "sub 1" } } }, "selector.subscription_ids[1]" },
      { { image = V2, selector = { percent = 101 } }, "selector.percent" },
      { { image = V2, selector = { percent = 0 / 0 } }, "selector.percent" },
      { { image = V2, selector = { nope = 1 } }, "selector" },
      { { image = V2, waves = {} }, "waves" },
      { { image = V2, waves = { 0 } }, "waves[1]" },
      { { image = V2, waves = { 1, "0%" } }, "waves[2]" },
      { { image = V2, waves = { "100 %" } }, "waves[1]" },
      { { image = V2, waves = { 2.5 } }, "waves[1]" },
      { { image = V2, parallel = 101 }, "parallel" },
      { { image = V2, pause_seconds = -1 }, "pause_seconds" },
      { { image = V2, pause_seconds = math.huge }, "pause_seconds" },
      { { image = V2, failure_budget = 0.5 }, "failure_budget" },
      { { image = V2, apply_to_new = 1 }, "apply_to_new" },
    }
    for _, c in ipairs(cases) do
      local r, err = rollout.validate(c[1], cfg)
      assert.is_nil(r, cjson.encode(c[2]))
      assert.are.equal(c[2], err.field)
      assert.is_string(err.message)
    end
  end)

  it("sizes waves: counts or percentages, never past the selection, the last takes the rest", function()
    assert.are.same({ 1, 10, 29 }, rollout.wave_sizes({ 1, 10, 100 }, 40))
    assert.are.same({ 1, 10, 29 }, rollout.wave_sizes({ 1, "25%", "100%" }, 40))
    assert.are.same({ 1, 2, 37 }, rollout.wave_sizes({ 1, "5%", "10%" }, 40))
    assert.are.same({ 1 }, rollout.wave_sizes({ 1, 10, 100 }, 1))
    assert.are.same({ 3 }, rollout.wave_sizes({ 5 }, 3))
    assert.are.same({ 1, 10, 10, 10, 9 }, rollout.wave_sizes({ 1, 10, 10, 10, 10 }, 40))
  end)
end)

local describe_store = memstore.describer(describe, pending)

describe_store("rollout driver", function()
  local rollout, requests, instances, plan, generation, boot, hooks

  setup(function()
    memstore.dokku("dry-run")
    for _, m in ipairs({ "executor", "plan", "requests", "rollout" }) do
      package.loaded[m] = nil
    end
    rollout, requests, instances = require "rollout", require "requests", require "instances"
    plan, generation, boot, hooks = require "plan", require "generation", require "boot", require "hooks"
  end)

  local function boot_mindroom(hook_files)
    local tiers = require "tiers"
    local t = assert(tiers.load_dir("tiers", helper.realfs(),
      { by_name = helper.shipped_profiles(), default = "mindroom", dir = "profiles" }))
    local hs = {}
    if hook_files then
      hs = assert(hooks.load_dir("h", helper.memfs(hook_files)))
    end
    boot.set({ settings = memstore.settings, tiers = t, hooks = hs, generation = 1, tiers_dir = "tiers",
               hooks_dir = "hooks", profiles = helper.shipped_profiles() })
  end

  before_each(function()
    memstore.reset()
    boot_mindroom()
  end)

  local function provisioned(sub, tier)
    local code = requests.provision_validated({ subscription_id = sub, account_id = "acc_1", tier = tier or "free" },
      {}, generation.current())
    assert.are.equal(202, code)
    store.tx(function()
      local inst = instances.get(sub)
      inst.status = "running"
      instances.save(inst)
      store.exec("UPDATE jobs SET state = 'succeeded' WHERE subscription_id = ?", sub)
    end)
  end

  local function tick(id)
    return store.tx(function() return rollout.tick(id, os.time()) end)
  end

  local function entry(id, sub)
    return store.query("SELECT * FROM rollout_instances WHERE rollout_id = ? AND subscription_id = ?", id, sub)[1]
  end

  -- The step's job finished and its instance is `status`.
  local function finish_step(id, sub, status)
    local e = entry(id, sub)
    store.tx(function()
      store.exec("UPDATE jobs SET state = 'succeeded' WHERE id = ?", e.job_id)
      local inst = instances.get(sub)
      inst.status = status
      inst.error = status == "unhealthy" and "not ready after 2 s: HTTP 503" or nil
      instances.save(inst)
    end)
  end

  local function mindroom_image(sub)
    local st = assert(plan.desired_state(instances.get(sub), generation.current()))
    for _, a in ipairs(st.apps) do
      if a.role == "main" then return a.image end
    end
  end

  local function create(body)
    local r = assert(rollout.validate(body, generation.current()))
    local out = rollout.create(r)
    assert.is_string(out.id, cjson.encode(out.err or {}))
    return out.id
  end

  it("steps the canary, then the next wave; the image is the instance's desired state and stays", function()
    for i = 1, 3 do provisioned("sub_" .. i) end
    assert.are.equal(memstore.settings.mindroom_image, mindroom_image("sub_1"))
    local id = create({ image = V2, waves = { 1, "100%" }, parallel = 2 })
    assert.are.equal(rollout.POLL_SECONDS, tick(id))
    local e = entry(id, "sub_1")
    assert.are.equal("updating", e.state)
    local job = instances.job(e.job_id)
    assert.are.equal("update", job.operation)
    assert.are.equal(id, job.request.rollout_id)
    assert.are.equal(V2, instances.get("sub_1").spec.image)
    assert.are.equal(V2, mindroom_image("sub_1"))
    assert.are.equal("pending", entry(id, "sub_2").state) -- wave 2 waits for the canary
    finish_step(id, "sub_1", "starting")
    tick(id)
    assert.are.equal("checking", entry(id, "sub_1").state)
    assert.are.equal("pending", entry(id, "sub_2").state)
    finish_step(id, "sub_1", "running")
    tick(id)
    assert.are.equal("done", entry(id, "sub_1").state)
    assert.are.equal("updating", entry(id, "sub_2").state)
    assert.are.equal("updating", entry(id, "sub_3").state)
    finish_step(id, "sub_2", "running")
    finish_step(id, "sub_3", "running")
    assert.is_nil(tick(id))
    assert.are.equal("finished", rollout.get(id).state)
    -- an update keeps the image (the spec is changed in place)
    local code = requests.update_validated({ subscription_id = "sub_2", app_name = instances.get("sub_2").app_name,
      config_updates = { X_NOTE = "1" } }, {}, generation.current())
    assert.are.equal(202, code)
    assert.are.equal(V2, mindroom_image("sub_2"))
  end)

  it("halts past the failure budget; rollback_on_failure reverts at once; rollback restores the rest", function()
    for i = 1, 4 do provisioned("sub_" .. i) end
    -- Supabase configured: the events go to the outbox with the change
    local outbox = package.loaded["mrprov.outbox"]
    local was_enabled = outbox.enabled
    outbox.enabled = function() return true end
    finally(function() outbox.enabled = was_enabled end)
    local id = create({ image = V2, waves = { "100%" }, parallel = 2, failure_budget = 0,
                        rollback_on_failure = true })
    tick(id)
    finish_step(id, "sub_1", "unhealthy")
    finish_step(id, "sub_2", "running")
    tick(id)
    local r = rollout.get(id)
    assert.are.equal("halted", r.state)
    assert.matches("failure budget is 0", r.reason)
    local e1 = entry(id, "sub_1")
    assert.are.equal("reverting", e1.state)
    assert.matches("not ready", e1.error)
    assert.is_nil(instances.get("sub_1").spec.image) -- back on the setting
    assert.are.equal("done", entry(id, "sub_2").state)
    assert.are.equal("pending", entry(id, "sub_3").state)
    assert.are.equal("pending", entry(id, "sub_4").state)
    finish_step(id, "sub_1", "running")
    assert.is_nil(tick(id))
    assert.are.equal("rolled_back", entry(id, "sub_1").state)
    -- rollback: the changed one (sub_2) goes back; the untouched stay so
    local out = rollout.act(id, "rollback")
    assert.are.equal("rolling_back", out.state)
    tick(id)
    assert.are.equal("reverting", entry(id, "sub_2").state)
    assert.is_nil(instances.get("sub_2").spec.image)
    finish_step(id, "sub_2", "running")
    assert.is_nil(tick(id))
    assert.are.equal("rolled_back", rollout.get(id).state)
    assert.are.equal("pending", entry(id, "sub_3").state)
    assert.are.equal(409, rollout.act(id, "rollback").status)
    local kinds = {}
    for _, row in ipairs(store.query("SELECT subscription_id, payload FROM outbox WHERE kind = 'events'")) do
      local ev = cjson.decode(row.payload)
      if ev.data.rollout_id == id then
        kinds[#kinds + 1] = row.subscription_id .. " " .. ev.kind
        assert.are.equal(V2, ev.data.image)
      end
    end
    local text = table.concat(kinds, "\n")
    for _, want in ipairs({ "_rollout_" .. id .. " rollout_started", "sub_1 rollout_instance_failed",
                            "_rollout_" .. id .. " rollout_halted", "sub_1 rollout_instance_rolled_back",
                            "sub_2 rollout_instance_done", "_rollout_" .. id .. " rollout_rolling_back",
                            "sub_2 rollout_instance_rolled_back", "_rollout_" .. id .. " rollout_rolled_back" }) do
      assert.is_truthy(text:find(want, 1, true), want .. " in:\n" .. text)
    end
  end)

  it("skips a pinned instance (flag or hook) and waits for an instance's own job", function()
    boot_mindroom({ ["h/subscription.sub_3.lua"] =
      "return { pinned = function(ctx) return ctx.tier == 'free' and 'customer validation' end }" })
    for i = 1, 4 do provisioned("sub_" .. i) end
    assert.is_true(rollout.pin("sub_1", true).pinned)
    store.tx(function()
      instances.create_job("sub_2", "update", { subscription_id = "sub_2" })
    end)
    local id = create({ image = V2, waves = { "100%" }, parallel = 4 })
    tick(id)
    assert.are.equal("skipped", entry(id, "sub_1").state)
    assert.matches("^pinned", entry(id, "sub_1").error)
    assert.are.equal("skipped", entry(id, "sub_3").state)
    assert.matches("pinned by its hook: customer validation", entry(id, "sub_3").error)
    assert.are.equal("pending", entry(id, "sub_2").state)
    assert.matches("waiting for the instance's own job", entry(id, "sub_2").error)
    assert.are.equal("updating", entry(id, "sub_4").state)
    assert.is_nil(instances.get("sub_1").spec.image)
    store.exec("UPDATE jobs SET state = 'succeeded' WHERE subscription_id = 'sub_2'")
    tick(id)
    assert.are.equal("updating", entry(id, "sub_2").state)
    -- the view reports them
    local v = rollout.view(id)
    assert.are.equal(2, v.counts.skipped)
  end)

  it("gives a new instance the target only when the rollout says so", function()
    provisioned("sub_1", "free")
    local id = create({ image = V2, selector = { tiers = { "free" } }, apply_to_new = true })
    provisioned("sub_new", "free")
    provisioned("sub_other", "starter")
    assert.are.equal(V2, instances.get("sub_new").spec.image)
    assert.is_nil(instances.get("sub_other").spec.image)
    rollout.act(id, "abort")
    provisioned("sub_late", "free")
    assert.is_nil(instances.get("sub_late").spec.image)
    local id2 = create({ image = V2, selector = { tiers = { "free" } } })
    provisioned("sub_plain", "free")
    assert.is_nil(instances.get("sub_plain").spec.image)
    assert.is_string(id2)
  end)

  it("allows one active rollout; pause, resume and abort follow their states", function()
    provisioned("sub_1")
    local id = create({ image = V2 })
    local r = assert(rollout.validate({ image = V2 }, generation.current()))
    assert.are.equal(409, rollout.create(r).status)
    assert.are.equal("paused", rollout.act(id, "pause").state)
    assert.are.equal(409, rollout.act(id, "pause").status)
    assert.is_nil(tick(id)) -- paused, nothing in flight: the driver ends
    assert.are.equal("pending", entry(id, "sub_1").state)
    assert.are.equal("running", rollout.act(id, "resume").state)
    assert.are.equal("aborted", rollout.act(id, "abort").state)
    assert.are.equal(409, rollout.act(id, "resume").status)
    assert.are.equal(404, rollout.act("ro_ffff", "pause").status)
    assert.are.equal(404, rollout.act("../x", "pause").status)
  end)
  it("lists rollouts with their total, failure budget and last change; the view names the allowed actions",
    function()
    provisioned("sub_1")
    provisioned("sub_2")
    local id = create({ image = V2, failure_budget = 3 })
    local l = rollout.list()[1]
    assert.are.equal(id, l.id)
    assert.are.equal(2, l.total)
    assert.are.equal(3, l.failure_budget)
    assert.are.equal(0, l.failures)
    assert.is_string(l.updated_at)
    assert.are.same({ "pause", "abort", "rollback" }, rollout.view(id).actions)
    rollout.act(id, "pause")
    assert.are.same({ "resume", "abort", "rollback" }, rollout.view(id).actions)
    assert.are.equal("paused", rollout.list()[1].state)
    rollout.act(id, "abort")
    assert.are.same({ "rollback" }, rollout.view(id).actions)
    -- none: still a JSON list
    assert.are.equal("[]", require("json").encode(rollout.actions_of("rolling_back")))
  end)

  it("runs as a durable job: re-queued while there is work, ended when paused and idle, queued again on resume",
    function()
    provisioned("sub_1")
    provisioned("sub_2")
    local id = create({ image = V2, waves = { 1, "100%" } })
    local function driver()
      return store.query("SELECT id, state, not_before FROM jobs WHERE subscription_id = ? ORDER BY rowid DESC",
        rollout.SUBSCRIPTION_PREFIX .. id)[1]
    end
    local d = driver()
    assert.are.equal("queued", d.state)
    store.exec("UPDATE jobs SET state = 'running' WHERE id = ?", d.id)
    rollout.run_job(instances.job(d.id))
    d = driver()
    assert.are.equal("queued", d.state)
    assert.is_string(d.not_before)
    assert.are.equal("updating", entry(id, "sub_1").state)
    -- the step's end brings the driver forward (worker.lua calls wake)
    finish_step(id, "sub_1", "running")
    store.tx(rollout.wake)
    assert.is_nil(driver().not_before)
    rollout.act(id, "pause")
    store.exec("UPDATE jobs SET state = 'running' WHERE id = ?", d.id)
    rollout.run_job(instances.job(d.id))
    assert.are.equal("succeeded", driver().state)
    assert.are.equal("done", entry(id, "sub_1").state)
    assert.are.equal("pending", entry(id, "sub_2").state)
    rollout.act(id, "resume")
    local again = driver()
    assert.are_not.equal(d.id, again.id)
    assert.are.equal("queued", again.state)
  end)
end)
