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
    assert.are.equal(b.app_name .. ".mindroom.chat", b.subdomain) -- the instance's domain, not its app name
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

  it("records the layout (profile) at provision and keeps it when the default changes (issue 14 item 4)", function()
    local helper = require "helper"
    local cfg = require("generation").current()
    assert.are.equal(202, (call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "free" })))
    local inst = instances.get("sub_1")
    assert.are.equal("split", inst.spec.profile) -- this configuration's default
    local function app_names(c)
      local state = assert(plan.desired_state(inst, c))
      local names = {}
      for _, a in ipairs(state.apps) do
        if not a.absent then names[#names + 1] = a.name:sub(#inst.app_name + 1) end
      end
      table.sort(names)
      return table.concat(names, ",")
    end
    assert.are.equal(",-backend,-frontend", app_names(cfg))
    -- the operator moves the default to mindroom: new instances get it, this one keeps split
    local by_profile = helper.shipped_profiles()
    local moved = { settings = cfg.settings, hooks = cfg.hooks, profiles = by_profile,
      tiers = assert(require("tiers").load_dir("tiers", helper.realfs(),
        { by_name = by_profile, default = "mindroom", dir = "profiles" })) }
    assert.are.equal(",-backend,-frontend", app_names(moved))
    -- an instance from before the record (the store's v5 upgrade writes split) or a new one
    inst.spec.profile = nil
    assert.are.equal(",-matrix", app_names(moved))
    -- a recorded layout no longer loaded is an error, not another layout
    inst.spec.profile = "gone"
    local state, err = plan.desired_state(inst, moved)
    assert.is_nil(state)
    assert.matches("profile gone of this instance is not loaded", err)
  end)

  it("refuses a bad body, a custom domain under BASE_DOMAIN and one another instance holds", function()
    local status, b = call("provision", "{not json")
    assert.are.equal(400, status)
    assert.are.equal("invalid_json", b.error.code)
    status, b = call("provision",
      { subscription_id = "sub_1", account_id = "acc_1", tier = "enterprise", custom_domain = "x.mindroom.chat" })
    assert.are.equal(422, status)
    assert.are.equal("custom_domain", b.error.field)
    assert.are.equal(202, (call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "enterprise",
                                               custom_domain = "chat.example.org" })))
    status, b = call("provision",
      { subscription_id = "sub_2", account_id = "acc_1", tier = "enterprise", custom_domain = "chat.example.org" })
    assert.are.equal(409, status)
    assert.are.equal("custom_domain", b.error.field)
    assert.is_nil(instances.get("sub_2"))
  end)

  it("answers status and job views, and 404 for what does not exist", function()
    local _, p = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "free" })
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
    local _, p = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "free" })
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
    local _, p = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "free" })
    instances.update_job(p.job_id, { state = "succeeded", result = { provisioning_time_seconds = 1.5 } })
    local status, b, headers = call("update", { subscription_id = "sub_1", app_name = p.app_name, tier = "free" },
      { prefer = "wait=5" })
    assert.are.equal(200, status)
    assert.are.equal("wait=5", headers["Preference-Applied"])
    assert.are.equal("queued", b.job_state) -- the update's own job, as the store holds it
    assert.are.equal(600, api.prefer_wait("wait=100000"))
    assert.is_nil(api.prefer_wait("respond-async"))
  end)

  it("requires account_id on provision, as the original service (422 when missing or null)", function()
    for _, body in ipairs({ { subscription_id = "sub_1", tier = "free" },
                            { subscription_id = "sub_1", account_id = cjson.null, tier = "free" } }) do
      local status, b = call("provision", body)
      assert.are.equal(422, status)
      assert.are.equal("account_id", b.error.field)
      assert.matches("account_id is required", b.error.message)
    end
    assert.is_nil(instances.get("sub_1"))
    -- a plan is a preview: it may leave the account out
    assert.are.equal(200, (call("plan", { subscription_id = "sub_1", tier = "free" })))
  end)

  it("answers subdomain as the instance's domain: its own name or the custom domain", function()
    local _, b = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "enterprise",
                                     custom_domain = "chat.example.org" })
    assert.are.equal("chat.example.org", b.subdomain)
    local _, again = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "enterprise" })
    assert.are.equal("chat.example.org", again.subdomain)
    local _, u = call("update", { subscription_id = "sub_1", app_name = b.app_name, tier = "enterprise" })
    assert.are.equal("chat.example.org", u.subdomain)
    local _, d = call("deprovision", { subscription_id = "sub_1", app_name = b.app_name })
    assert.are.equal("chat.example.org", d.subdomain)
    local _, f = call("provision", { subscription_id = "sub_2", account_id = "acc_1", tier = "free" })
    assert.are.equal(f.app_name .. ".mindroom.chat", f.subdomain)
  end)

  it("refuses requested limits below the original's minimums (128 MB, 0.1 CPU), naming the field", function()
    local base = { subscription_id = "sub_1", account_id = "acc_1", tier = "enterprise" }
    for field, v in pairs({ memory_mb = 127, cpu_limit = 0.09 }) do
      local body = { limits = { [field] = v } }
      for k, x in pairs(base) do body[k] = x end
      local status, b = call("provision", body)
      assert.are.equal(422, status, field)
      assert.are.equal("limits." .. field, b.error.field)
    end
    base.limits = { memory_mb = 128, cpu_limit = 0.1 }
    local status, p = call("provision", base)
    assert.are.equal(202, status)
    status = call("update", { subscription_id = "sub_1", app_name = p.app_name, limits = { cpu_limit = 0.05 } })
    assert.are.equal(422, status)
  end)

  it("refuses update limits on a tier without custom_limits with 422 naming the tier, never drops them", function()
    local _, p = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "starter" })
    local before = instances.get("sub_1").spec.limits
    local status, b = call("update", { subscription_id = "sub_1", app_name = p.app_name,
                                       limits = { memory_mb = 1024, cpu_limit = 0.75 } })
    assert.are.equal(422, status)
    assert.are.equal("limits", b.error.field)
    assert.matches("starter tier", b.error.message)
    assert.are.same(before, instances.get("sub_1").spec.limits)
    assert.are.equal(1, #store.query("SELECT 1 AS x FROM jobs"))
    -- moving to a tier that takes them in the same request applies them
    status = call("update", { subscription_id = "sub_1", app_name = p.app_name, tier = "enterprise",
                              limits = { memory_mb = 1024, cpu_limit = 0.75 } })
    assert.are.equal(202, status)
    assert.are.equal(1024, instances.get("sub_1").spec.limits.memory_mb)
    -- and moving away from it with limits names the tier refusing them
    status, b = call("update", { subscription_id = "sub_1", app_name = p.app_name, tier = "professional",
                                 limits = { memory_mb = 1024 } })
    assert.are.equal(422, status)
    assert.matches("professional tier", b.error.message)
  end)

  it("reports restart_required from the update's plan: its commands marked restart or deploys", function()
    local _, p = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "free" })
    instances.update_job(p.job_id, { state = "running" })
    require("worker").run(p.job_id)
    assert.are.equal("running", instances.get("sub_1").status)
    -- nothing changes: nothing restarts
    local status, b = call("update", { subscription_id = "sub_1", app_name = p.app_name, tier = "free" })
    assert.are.equal(202, status)
    assert.is_false(b.restart_required)
    -- a new tier changes limits and environment, which take effect on restart
    status, b = call("update", { subscription_id = "sub_1", app_name = p.app_name, tier = "starter" })
    assert.are.equal(202, status)
    assert.is_true(b.restart_required)
  end)

  it("shows the original service's InstanceInfo fields beside mrprov's own in the status view", function()
    local _, p = call("provision", { subscription_id = "sub_1", account_id = "acc_1", tier = "starter" })
    local _, v = call("status", nil, { param = "sub_1" })
    assert.are.equal("https://" .. p.app_name .. ".mindroom.chat", v.frontend_url)
    assert.are.equal(v.urls.frontend, v.frontend_url)
    assert.are.equal(v.urls.backend, v.backend_url)
    assert.are.equal(cjson.null, v.matrix_url)
    assert.are.equal(p.app_name .. ".mindroom.chat", v.subdomain)
    assert.are.equal(cjson.null, v.last_health_check)
    assert.are.equal(0.5, v.limits.cpu)
    assert.are.equal(0.5, v.limits.cpu_limit)
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
