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
      { { image = V2, selector = { labels = "region=eu" } }, "selector.labels" },
      { { image = V2, selector = { labels = { "eu" } } }, "selector.labels" },
      { { image = V2, selector = { labels = { Region = "eu" } } }, "selector.labels" },
      { { image = V2, selector = { labels = { ["a b"] = "eu" } } }, "selector.labels" },
      { { image = V2, selector = { labels = { region = { "eu" } } } }, "selector.labels" },
      { { image = V2, selector = { labels = { region = ("x"):rep(254) } } }, "selector.labels" },
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

  it("takes selector.labels as a host file's labels are checked; an empty table selects by no label", function()
    local r = assert(rollout.validate({ image = V2, selector = { labels = { region = "eu", gpu = true, rack = 3 } } },
      cfg))
    assert.are.same({ region = "eu", gpu = true, rack = 3 }, r.selector.labels)
    r = assert(rollout.validate({ image = V2, selector = { labels = {} } }, cfg))
    assert.is_nil(r.selector.labels)
  end)

  it("takes env as config_updates are checked; a rollout sets an image, env, or both", function()
    local r = assert(rollout.validate({ env = { X_FEATURE = "on", LOG_FORMAT = "json" } }, cfg))
    assert.are.same({ X_FEATURE = "on", LOG_FORMAT = "json" }, r.env)
    assert.is_nil(r.image)
    r = assert(rollout.validate({ image = V2, env = { X_FEATURE = "on" } }, cfg))
    assert.are.equal(V2, r.image)
    local cases = {
      { { env = "X=1" }, "env" }, { { env = { "X=1" } }, "env" }, { { env = {} }, "env" },
      { { env = { ["bad key"] = "1" } }, "env" }, { { env = { x_lower = "1" } }, "env.x_lower" },
      { { env = { MINDROOM_API_KEY = "k" } }, "env.MINDROOM_API_KEY" },
      { { env = { DOKKU_APP_TYPE = "x" } }, "env.DOKKU_APP_TYPE" },
      { { env = { DATABASE_URL = "x" } }, "env.DATABASE_URL" },
      { { env = { X = 1 } }, "env.X" }, { { env = { X = "a\0b" } }, "env.X" },
      { { env = { X = "007" } }, "env.X" }, { { env = { X = ("v"):rep(16 * 1024 + 1) } }, "env.X" },
      { { selector = { tiers = { "free" } } }, "image" },
    }
    for _, c in ipairs(cases) do
      local got, err = rollout.validate(c[1], cfg)
      assert.is_nil(got, cjson.encode(c[2]))
      assert.are.equal(c[2], err.field)
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

  -- host_files: { ["hosts/<name>.lua"] = source } (lua/hosts.lua), or nil
  -- for the implicit host alone.
  local function boot_mindroom(hook_files, host_files)
    local tiers = require "tiers"
    local t = assert(tiers.load_dir("tiers", helper.realfs(),
      { by_name = helper.shipped_profiles(), default = "mindroom", dir = "profiles" }))
    local hs = {}
    if hook_files then
      hs = assert(hooks.load_dir("h", helper.memfs(hook_files)))
    end
    local host_list
    if host_files then
      local hosts = require "hosts"
      host_list = assert(hosts.load_dir("hosts", helper.memfs(host_files), { key_path = "k", known_hosts = "kh" }))
    end
    boot.set({ settings = memstore.settings, tiers = t, hooks = hs, generation = 1, tiers_dir = "tiers",
               hooks_dir = "hooks", profiles = helper.shipped_profiles(), hosts = host_list })
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

  it("gives a new instance the target by the host it is placed on (selector.hosts)", function()
    -- no capacity declared: placement takes the host with the fewest
    -- instances, then by name, so provisions alternate a, b, a, b
    boot_mindroom(nil, { ["hosts/a.lua"] = 'return { host = "10.0.0.1" }',
                         ["hosts/b.lua"] = 'return { host = "10.0.0.2" }' })
    provisioned("sub_0")
    provisioned("sub_1")
    assert.are.equal("a", instances.get("sub_0").host)
    assert.are.equal("b", instances.get("sub_1").host)
    local id = create({ image = V2, selector = { hosts = { "b" } }, apply_to_new = true })
    provisioned("sub_new_a")
    provisioned("sub_new_b")
    assert.are.equal("a", instances.get("sub_new_a").host)
    assert.are.equal("b", instances.get("sub_new_b").host)
    assert.are.equal(V2, instances.get("sub_new_b").spec.image)
    assert.is_nil(instances.get("sub_new_a").spec.image)
    assert.are.equal(V2, mindroom_image("sub_new_b"))
    assert.is_string(id)
  end)

  it("selects by the labels of the instance's host, existing and new instances alike", function()
    -- placement alternates a, b, c (no capacity declared: fewest instances, then by name)
    boot_mindroom(nil, {
      ["hosts/a.lua"] = 'return { host = "10.0.0.1", labels = { region = "eu", gpu = true } }',
      ["hosts/b.lua"] = 'return { host = "10.0.0.2", labels = { region = "us", gpu = true } }',
      ["hosts/c.lua"] = 'return { host = "10.0.0.3" }',
    })
    for i = 1, 6 do provisioned("sub_" .. i) end
    local on = {}
    for i = 1, 6 do on[i] = instances.get("sub_" .. i).host end
    assert.are.same({ "a", "b", "c", "a", "b", "c" }, on)
    local function selected(id)
      local out = {}
      for _, e in ipairs(store.query("SELECT subscription_id FROM rollout_instances WHERE rollout_id = ? " ..
          "ORDER BY subscription_id", id)) do
        out[#out + 1] = e.subscription_id
      end
      return out
    end
    local id = create({ image = V2, selector = { labels = { gpu = true } } })
    assert.are.same({ "sub_1", "sub_2", "sub_4", "sub_5" }, selected(id))
    rollout.act(id, "abort")
    -- every label must match; a host without the label is not taken
    local r = assert(rollout.validate({ image = V2, selector = { labels = { gpu = true, region = "us" } } },
      generation.current()))
    r.apply_to_new = true
    local out = rollout.create(r)
    assert.are.same({ "sub_2", "sub_5" }, selected(out.id))
    -- new instances: on b (region us) the target, on a and c the setting
    provisioned("sub_7")
    provisioned("sub_8")
    provisioned("sub_9")
    assert.are.same({ "a", "b", "c" }, { instances.get("sub_7").host, instances.get("sub_8").host,
                                         instances.get("sub_9").host })
    assert.is_nil(instances.get("sub_7").spec.image)
    assert.are.equal(V2, instances.get("sub_8").spec.image)
    assert.is_nil(instances.get("sub_9").spec.image)
    rollout.act(out.id, "abort")
    r = assert(rollout.validate({ image = V2, selector = { labels = { region = "ap" } } }, generation.current()))
    local none = rollout.create(r)
    assert.are.equal(422, none.status)
    assert.matches("matches no instance", none.err.message)
  end)

  it("the implicit host carries no labels: selector.labels takes none of its instances", function()
    provisioned("sub_1")
    local r = assert(rollout.validate({ image = V2, selector = { labels = { region = "eu" } } },
      generation.current()))
    assert.are.equal(422, rollout.create(r).status)
    local id = create({ image = V2, selector = { labels = {} } })
    assert.are.equal("pending", entry(id, "sub_1").state)
  end)

  -- The MindRoom app's environment in the instance's desired state.
  local function main_env(sub)
    local st = assert(plan.desired_state(instances.get(sub), generation.current()))
    for _, a in ipairs(st.apps) do
      if a.role == "main" then return a.env, a end
    end
  end

  it("sets env on each instance by the update job; rollback restores each key's value before or unsets it",
    function()
    for i = 1, 4 do provisioned("sub_" .. i) end
    local VALUE = "feature-value-rollout-1"
    store.tx(function()
      -- sub_2: an earlier rollout set the key; sub_3: the customer's own value
      local i2 = instances.get("sub_2")
      i2.spec.env, i2.spec.env_owned = { X_FEATURE = "earlier-value-0" }, { X_FEATURE = true }
      instances.save(i2)
      local i3 = instances.get("sub_3")
      i3.spec.config_updates = { X_FEATURE = "customer-value-3" }
      instances.save(i3)
    end)
    assert.is_true(rollout.pin("sub_4", true).pinned)
    local outbox = package.loaded["mrprov.outbox"]
    local was_enabled = outbox.enabled
    outbox.enabled = function() return true end
    finally(function() outbox.enabled = was_enabled end)
    local id = create({ env = { X_FEATURE = VALUE }, waves = { "100%" }, parallel = 4 })
    tick(id)
    for i = 1, 3 do
      local sub = "sub_" .. i
      local e = entry(id, sub)
      assert.are.equal("updating", e.state, sub)
      local job = instances.job(e.job_id)
      assert.are.equal("update", job.operation)
      assert.are.same({ "X_FEATURE" }, job.request.env_keys)
      assert.is_nil(job.request.image)
      assert.is_falsy(cjson.encode(job.request):find(VALUE, 1, true))
      assert.are.equal(VALUE, main_env(sub).X_FEATURE)
      assert.is_nil(instances.get(sub).spec.image) -- an env rollout leaves the image
    end
    assert.are.equal("skipped", entry(id, "sub_4").state)
    assert.are.equal("pinned (keeps its environment)", entry(id, "sub_4").error)
    assert.are.same({ env = { X_FEATURE = cjson.null } }, cjson.decode(entry(id, "sub_1").from_fields))
    assert.are.same({ env = { X_FEATURE = "earlier-value-0" } }, cjson.decode(entry(id, "sub_2").from_fields))
    assert.are.equal("skipped", entry(id, "sub_4").state)
    assert.is_nil(main_env("sub_4").X_FEATURE)
    for i = 1, 3 do finish_step(id, "sub_" .. i, "running") end
    assert.is_nil(tick(id))
    assert.are.equal("finished", rollout.get(id).state)
    -- a customer's later update keeps the rollout's value
    local code = requests.update_validated({ subscription_id = "sub_3", app_name = instances.get("sub_3").app_name,
      config_updates = { X_NOTE = "1" } }, {}, generation.current())
    assert.are.equal(202, code)
    store.exec("UPDATE jobs SET state = 'succeeded' WHERE subscription_id = 'sub_3'")
    store.tx(function()
      local i3 = instances.get("sub_3")
      i3.status = "running"
      instances.save(i3)
    end)
    assert.are.equal(VALUE, main_env("sub_3").X_FEATURE)
    -- the view and the events show keys, never a value
    local v = rollout.view(id)
    assert.are.same({ X_FEATURE = "[set]" }, v.env)
    assert.are.equal(cjson.null, v.image)
    local shown = cjson.encode(v)
    assert.is_falsy(shown:find(VALUE, 1, true))
    assert.is_falsy(shown:find("earlier-value-0", 1, true))
    for _, e in ipairs(v.instances) do
      if e.subscription_id == "sub_2" then
        assert.are.same({ X_FEATURE = "[set]" }, e.previous_env)
      elseif e.subscription_id == "sub_1" then
        assert.are.same({ X_FEATURE = cjson.null }, e.previous_env)
      end
    end
    for _, row in ipairs(store.query("SELECT payload FROM outbox")) do
      assert.is_falsy(row.payload:find(VALUE, 1, true), row.payload)
    end

    assert.are.equal("rolling_back", rollout.act(id, "rollback").state)
    tick(id)
    for i = 1, 3 do
      assert.are.equal("reverting", entry(id, "sub_" .. i).state)
    end
    -- sub_1: not set before: gone from the state, and owned, so the job
    -- unsets it on the app; sub_2: the earlier value; sub_3: the customer's
    local env1, app1 = main_env("sub_1")
    assert.is_nil(env1.X_FEATURE)
    assert.is_true(app1.env_owned_keys.X_FEATURE)
    assert.are.equal("earlier-value-0", main_env("sub_2").X_FEATURE)
    assert.are.equal("customer-value-3", main_env("sub_3").X_FEATURE)
    local config = require "resources.config"
    local spec = config.specs(app1)[1].spec
    local crypto = require "mrprov.crypto"
    local cmds = config.diff(spec, { env = { X_FEATURE = crypto.sha256_hex(VALUE), OTHER = crypto.sha256_hex("x") } })
    local argvs = {}
    for _, c in ipairs(cmds) do argvs[#argvs + 1] = table.concat(c.argv, " ") end
    local text = table.concat(argvs, "\n")
    assert.matches("config:unset --no-restart " .. app1.name .. " X_FEATURE", text, 1, true)
    assert.is_falsy(text:find("OTHER", 1, true))
    for i = 1, 3 do finish_step(id, "sub_" .. i, "running") end
    assert.is_nil(tick(id))
    assert.are.equal("rolled_back", rollout.get(id).state)
  end)

  it("env: a failed readiness counts against the budget and reverts at once; new instances get it when told",
    function()
    for i = 1, 3 do provisioned("sub_" .. i) end
    local id = create({ env = { X_FEATURE = "on-value-2" }, waves = { "100%" }, parallel = 1, failure_budget = 0,
                        rollback_on_failure = true, apply_to_new = true, selector = { tiers = { "free" } } })
    provisioned("sub_new", "free")
    provisioned("sub_other", "starter")
    assert.are.equal("on-value-2", main_env("sub_new").X_FEATURE)
    assert.is_true(instances.get("sub_new").spec.env_owned.X_FEATURE)
    assert.is_nil(main_env("sub_other").X_FEATURE)
    tick(id)
    finish_step(id, "sub_1", "unhealthy")
    tick(id)
    assert.are.equal("halted", rollout.get(id).state)
    assert.are.equal("reverting", entry(id, "sub_1").state)
    assert.is_nil(main_env("sub_1").X_FEATURE)
    assert.are.equal("pending", entry(id, "sub_2").state)
    assert.is_nil(main_env("sub_2").X_FEATURE)
  end)

  it("skips an env rollout where the layout's own variable of that name wins", function()
    provisioned("sub_1")
    local id = create({ env = { LOG_LEVEL = "DEBUG" } })
    tick(id)
    local e = entry(id, "sub_1")
    assert.are.equal("skipped", e.state)
    assert.matches("sets one of the keys itself", e.error)
    assert.is_nil(instances.get("sub_1").spec.env)
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
