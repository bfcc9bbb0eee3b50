-- lua/api.lua and lua/requests.lua: routes, answers and the decisions of
-- the write requests, on the real store binding over an in-memory SQLite.
local memstore = require "memstore"
local store = memstore.install()
local cjson = require "cjson"

local describe_store = memstore.describer(describe, pending)

describe_store("the API", function()
  local api, instances, plan

  setup(function()
    memstore.dokku("dry-run")
    for _, m in ipairs({ "executor", "plan", "requests", "api" }) do
      package.loaded[m] = nil
    end
    api, instances, plan = require "api", require "instances", require "plan"
  end)
  before_each(function()
    memstore.reset()
    memstore.boot()
  end)

  local function call(route, body, extra)
    local req = { body = type(body) == "table" and cjson.encode(body) or body or "" }
    for k, v in pairs(extra or {}) do
      req[k] = v
    end
    local status, text, headers = api.handle(route, req)
    return status, cjson.decode(text), headers
  end

  it("accepts a provision: an instance row, a queued job, the admin password for the API caller", function()
    local status, b = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "free" })
    assert.are.equal(202, status)
    assert.are.equal("provisioning", b.status)
    assert.matches("^mr%-sub1%-", b.app_name)
    assert.are.equal(plan.admin_password(b.app_name), b.admin_password)
    assert.are.equal(b.app_name, b.subdomain)
    local inst = instances.get("sub_1")
    assert.are.equal(b.app_name, inst.app_name)
    assert.are.equal("queued", instances.job(b.job_id).state)
    assert.are.equal("provision", instances.job(b.job_id).operation)
    -- the same request again changes nothing
    local again, b2 = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "free" })
    assert.are.equal(200, again)
    assert.are.equal("an instance already exists for this subscription", b2.message)
    assert.are.equal(1, #store.query("SELECT 1 AS x FROM jobs"))
  end)

  it("refuses a bad body, a custom domain under BASE_DOMAIN and one another instance holds", function()
    local status, b = call("provision", "{not json")
    assert.are.equal(400, status)
    assert.are.equal("invalid_json", b.error.code)
    status, b = call("provision", { subscription_id = "sub_1", tier = "enterprise", custom_domain = "x.mindroom.chat" })
    assert.are.equal(422, status)
    assert.are.equal("custom_domain", b.error.field)
    assert.are.equal(202, (call("provision", { subscription_id = "sub_1", tier = "enterprise",
                                               custom_domain = "chat.example.org" })))
    status, b = call("provision",
      { subscription_id = "sub_2", tier = "enterprise", custom_domain = "chat.example.org" })
    assert.are.equal(409, status)
    assert.are.equal("custom_domain", b.error.field)
    assert.is_nil(instances.get("sub_2"))
  end)

  it("answers status and job views, and 404 for what does not exist", function()
    local _, p = call("provision", { subscription_id = "sub_1", tier = "free" })
    local status, v = call("status", nil, { param = "sub_1" })
    assert.are.equal(200, status)
    assert.are.equal(p.job_id, v.job.id)
    assert.are.equal("queued", v.job.state)
    status, v = call("job", nil, { param = p.job_id })
    assert.are.equal(200, status)
    assert.are.same({}, v.steps)
    assert.are.equal(404, (call("status", nil, { param = "sub_none" })))
    assert.are.equal(404, (call("job", nil, { param = "job_ffff" })))
    assert.are.equal(404, (call("job", nil, { param = "../etc" })))
    assert.are.equal(404, (call("nowhere")))
  end)

  it("updates and deprovisions only the subscription's own app, once", function()
    local _, p = call("provision", { subscription_id = "sub_1", tier = "free" })
    local status, b = call("update", { subscription_id = "sub_1", app_name = "mr-sub1-00000000", tier = "free" })
    assert.are.equal(409, status)
    assert.are.equal("app_name", b.error.field)
    assert.are.equal(404, (call("update", { subscription_id = "sub_9", app_name = p.app_name, tier = "free" })))
    status = call("update", { subscription_id = "sub_1", app_name = p.app_name, config_updates = { A = "1" } })
    assert.are.equal(202, status)
    assert.are.same({ A = "1" }, instances.get("sub_1").spec.config_updates)
    status = call("deprovision", { subscription_id = "sub_1", app_name = p.app_name })
    assert.are.equal(202, status)
    assert.are.equal("deprovisioning", instances.get("sub_1").status)
    status, b = call("deprovision", { subscription_id = "sub_1", app_name = p.app_name })
    assert.are.equal(409, status)
    assert.matches("already being deprovisioned", b.error.message)
  end)

  it("refuses bad config_overrides with 422 naming the key, stores good ones and renders them (issue 14 item 6)",
    function()
      local status, b = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "starter",
        config_overrides = { agents = { coder = { tools = { "shell", "web_search" } } } } })
      assert.are.equal(422, status)
      assert.are.equal("config_overrides.agents.coder.tools[1]", b.error.field)
      assert.matches("unknown tool 'web_search'", b.error.message)
      assert.is_nil(instances.get("sub_1"))
      status, b = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "starter",
        config_overrides = { colour = "red" } })
      assert.are.equal(422, status)
      assert.are.equal("config_overrides.colour", b.error.field)

      local good = { timezone = "Europe/Berlin", agents = { coder = { instructions = { "Use tabs." } } } }
      status = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "starter",
        config_overrides = good })
      assert.are.equal(202, status)
      local inst = instances.get("sub_1")
      assert.are.same(good, inst.spec.config_overrides)
      -- the plan of the instance (the split profile: MINDROOM_CONFIG_YAML) carries the merged config
      local state = assert(plan.desired_state(inst, require("generation").current()))
      local yaml
      for _, a in ipairs(state.apps) do yaml = yaml or (a.env and a.env.MINDROOM_CONFIG_YAML) end
      assert.truthy(yaml:find("timezone: Europe/Berlin", 1, true), yaml)
      assert.truthy(yaml:find("- Use tabs.", 1, true), yaml)
      assert.truthy(yaml:find("- duckduckgo", 1, true), yaml)
      -- POST /plan validates them the same way (its commands show values as [set])
      status = call("plan", { subscription_id = "sub_2", tier = "starter", config_overrides = good })
      assert.are.equal(200, status)
      local p
      status, p = call("plan", { subscription_id = "sub_2", tier = "starter", config_overrides = { router = 1 } })
      assert.are.equal(422, status)
      assert.are.equal("config_overrides.router", p.error.field)

      -- an update that moves to a tier the kept overrides do not fit is refused
      status = call("update", { subscription_id = "sub_1", app_name = inst.app_name, config_overrides = {
        agents = { coder = { rooms = { "dev" } } } } })
      assert.are.equal(202, status)
      status, b = call("update", { subscription_id = "sub_1", app_name = inst.app_name, tier = "free" })
      assert.are.equal(422, status)
      assert.are.equal("config_overrides.agents.coder.display_name", b.error.field)
      assert.are.equal("starter", instances.get("sub_1").tier)
      -- {} drops them
      status = call("update", { subscription_id = "sub_1", app_name = inst.app_name, tier = "free",
        config_overrides = {} })
      assert.are.equal(202, status)
      assert.is_nil(instances.get("sub_1").spec.config_overrides)
    end)

  it("folds the job's outcome in when the client waits", function()
    local _, p = call("provision", { subscription_id = "sub_1", tier = "free" })
    instances.update_job(p.job_id, { state = "succeeded", result = { provisioning_time_seconds = 1.5 } })
    local status, b, headers = call("update", { subscription_id = "sub_1", app_name = p.app_name, tier = "free" },
      { prefer = "wait=5" })
    assert.are.equal(200, status)
    assert.are.equal("wait=5", headers["Preference-Applied"])
    assert.are.equal("queued", b.job_state) -- the update's own job, as the store holds it
    assert.are.equal(600, api.prefer_wait("wait=100000"))
    assert.is_nil(api.prefer_wait("respond-async"))
  end)

  it("plans through the same module as `mrprov plan`", function()
    local status, b = call("plan", { subscription_id = "sub_1", tier = "free" })
    assert.are.equal(200, status)
    local r = require("validate_request").provision_request({ subscription_id = "sub_1", tier = "free" },
      require("boot").current().tiers)
    local direct = assert(plan.plan_for(r, require("boot").current()))
    local function without_name(list)
      local out = {}
      for i, line in ipairs(list) do
        out[i] = line:gsub("mr%-sub1%-%w+", "APP")
      end
      return out
    end
    assert.is_true(#b.commands > 5)
    assert.are.same(without_name(direct.commands), without_name(b.commands))
    assert.is_false(b.existing)
    assert.are.equal(0, #store.query("SELECT 1 AS x FROM instances")) -- no side effect
  end)
end)
