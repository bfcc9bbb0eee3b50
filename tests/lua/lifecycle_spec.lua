-- lua/lifecycle.lua: the stop/start/restart/suspend/resume requests on the
-- real store binding over an in-memory SQLite: what each decides, which
-- job it queues, when it queues none, and what it refuses. The plan of a
-- stopped instance (no deploy, ps:stop) is checked through plan.desired_state.
local memstore = require "memstore"
local store = memstore.install()
local cjson = require "cjson"

local describe_store = memstore.describer(describe, pending)

describe_store("lifecycle.request", function()
  local lifecycle, requests, instances, plan, engine, generation

  setup(function()
    memstore.dokku("dry-run")
    for _, m in ipairs({ "executor", "plan", "requests", "webhooks", "lifecycle" }) do
      package.loaded[m] = nil
    end
    lifecycle, requests, instances = require "lifecycle", require "requests", require "instances"
    plan, engine, generation = require "plan", require "engine", require "generation"
  end)
  before_each(function()
    memstore.reset()
    memstore.boot()
  end)

  local function provisioned(sub, status)
    local r = { subscription_id = sub, account_id = "acc_1", tier = "starter" }
    local code = requests.provision_validated(r, {}, generation.current())
    assert.are.equal(202, code)
    local inst = instances.get(sub)
    inst.status = status or "running"
    store.tx(function() instances.save(inst) end)
    return inst
  end

  local function req(sub, action, opts)
    local status, body = lifecycle.request(sub, action, opts)
    return status, cjson.decode(body)
  end

  local function jobs_of(sub)
    return store.query("SELECT operation, state FROM jobs WHERE subscription_id = ? ORDER BY rowid", sub)
  end

  it("stop sets the flag and queues a job; a repeat queues none; start clears it", function()
    provisioned("sub_1")
    local code, b = req("sub_1", "stop")
    assert.are.equal(202, code, cjson.encode(b))
    assert.is_string(b.job_id)
    local inst = instances.get("sub_1")
    assert.is_true(inst.spec.stopped)
    assert.are.equal("updating", inst.status)
    assert.are.equal("stop", jobs_of("sub_1")[2].operation)
    -- the job converged: stopped
    inst.status = "stopped"
    store.tx(function() instances.save(inst) end)
    code, b = req("sub_1", "stop")
    assert.are.equal(200, code)
    assert.are.equal("stopped", b.status)
    assert.matches("already stopped", b.message)
    assert.are.equal(2, #jobs_of("sub_1"))
    -- restart of a stopped instance: start it instead
    code = req("sub_1", "restart")
    assert.are.equal(409, code)
    code, b = req("sub_1", "start")
    assert.are.equal(202, code, cjson.encode(b))
    assert.is_nil(instances.get("sub_1").spec.stopped)
    assert.are.equal("start", jobs_of("sub_1")[3].operation)
    -- starting one that is not stopped: nothing
    code, b = req("sub_1", "start")
    assert.are.equal(200, code)
    assert.matches("not stopped", b.message)
    assert.are.equal(3, #jobs_of("sub_1"))
    code = req("sub_1", "restart")
    assert.are.equal(202, code)
    assert.are.equal("restart", jobs_of("sub_1")[4].operation)
  end)

  it("refuses what it cannot do: unknown 404, deprovisioned 409, unknown action 422", function()
    assert.are.equal(404, (req("sub_none", "stop")))
    assert.are.equal(404, (req("../etc", "stop")))
    provisioned("sub_2", "deprovisioned")
    local code, b = req("sub_2", "stop")
    assert.are.equal(409, code)
    assert.matches("deprovisioned", b.error.message)
    provisioned("sub_3", "deprovisioning")
    assert.are.equal(409, (req("sub_3", "start")))
    assert.are.equal(422, (req("sub_3", "explode")))
  end)

  it("suspends; records a tier change for the resume; refuses start; resume applies the tier", function()
    provisioned("sub_4")
    local code, b = req("sub_4", "suspend", { from_webhook = true })
    assert.are.equal(202, code, cjson.encode(b))
    local inst = instances.get("sub_4")
    assert.is_true(inst.spec.stopped)
    assert.is_true(inst.spec.suspended)
    assert.are.equal("suspended", instances.stopped_status(inst.spec))
    assert.are.equal("suspend", jobs_of("sub_4")[2].operation)
    code, b = req("sub_4", "suspend", { from_webhook = true, tier = "professional" })
    assert.are.equal(200, code)
    assert.matches("recorded", b.message)
    inst = instances.get("sub_4")
    assert.are.equal("starter", inst.tier)
    assert.are.equal("professional", inst.spec.pending_tier)
    assert.are.equal(2, #jobs_of("sub_4"))
    -- an unknown tier does not hold the suspension up, and is not recorded
    code, b = req("sub_4", "suspend", { from_webhook = true, tier = "gold" })
    assert.are.equal(200, code)
    assert.matches("not recorded", b.message)
    assert.are.equal("professional", instances.get("sub_4").spec.pending_tier)
    code, b = req("sub_4", "start")
    assert.are.equal(409, code)
    assert.matches("suspended", b.error.message)
    assert.are.equal(409, (req("sub_4", "restart")))
    code = req("sub_4", "stop")
    assert.are.equal(200, code) -- it is stopped already
    code, b = req("sub_4", "resume", { from_webhook = true })
    assert.are.equal(202, code, cjson.encode(b))
    inst = instances.get("sub_4")
    assert.are.equal("professional", inst.tier)
    assert.is_nil(inst.spec.stopped)
    assert.is_nil(inst.spec.suspended)
    assert.is_nil(inst.spec.pending_tier)
    assert.are.equal("resume", jobs_of("sub_4")[3].operation)
    -- resume of one not suspended: nothing, or an update when the tier differs
    code = req("sub_4", "resume", { from_webhook = true })
    assert.are.equal(200, code)
    code = req("sub_4", "resume", { from_webhook = true, tier = "starter" })
    assert.are.equal(202, code)
    assert.are.equal("update", jobs_of("sub_4")[4].operation)
  end)

  it("a stopped instance plans no deploy and keeps its apps stopped", function()
    local inst = provisioned("sub_5")
    local cfg = generation.current()
    local function types(st)
      local seen = {}
      for _, r in ipairs(engine.resources(st)) do seen[r.type] = (seen[r.type] or 0) + 1 end
      return seen
    end
    local running = types(plan.desired_state(inst, cfg))
    assert.is_truthy(running.image)
    assert.is_truthy(running.processes)
    inst.spec.stopped = true
    local st = plan.desired_state(inst, cfg)
    assert.is_true(st.stopped)
    local stopped = types(st)
    assert.is_nil(stopped.image)
    assert.is_nil(stopped.letsencrypt)
    assert.are.equal(running.processes, stopped.processes)
    -- against deployed, running apps: only ps:stop
    local steps = engine.plan(engine.resources(st), function(r)
      if r.type == "processes" then return { running = "true" } end
      return nil
    end)
    local stops = 0
    for _, s in ipairs(steps) do
      for _, c in ipairs(s.commands) do
        if c.argv[1] == "ps:stop" then stops = stops + 1 end
        assert.is_nil(c.argv[1]:match("^git:") or c.argv[1]:match("^ps:re"), c.display)
      end
    end
    assert.are.equal(running.processes, stops)
  end)
end)
