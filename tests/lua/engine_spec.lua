local fakes = require "fakes"
local helper = require "helper"
local desired = require "desired"
local engine = require "engine"

local settings = helper.settings

local A = "mr-sub1-abcd1234"

local function state(tier_name, inst)
  local tiers = helper.shipped_tiers()
  inst = inst or {}
  inst.app_name, inst.subscription_id, inst.tier = A, "sub_1", tier_name
  return desired.build({ instance = inst, tier = tiers[tier_name], settings = settings, admin_password = "s3cret" })
end

-- Plans against a recorded model (dry-run view), then records what applying it leaves.
local function plan_and_apply(st, applied)
  local steps = assert(engine.plan(engine.resources(st), function(r) return applied[r.key] end))
  for _, s in ipairs(steps) do
    local model, known = engine.model_after(s)
    if known then
      applied[s.resource.key] = model
    end
  end
  return engine.lines(steps), steps
end

local function index_of(lines, pattern)
  for i, l in ipairs(lines) do
    if l:find(pattern, 1, true) then
      return i
    end
  end
end

describe("engine", function()
  assert(fakes)

  it("plans a new instance in dependency order", function()
    local lines = plan_and_apply(state("professional", { enable_matrix = true }), {})
    local function at(p)
      return assert(index_of(lines, p), "missing " .. p)
    end
    assert.is_true(at("apps:create " .. A .. "-backend") < at("postgres:link " .. A .. "-db " .. A .. "-backend"))
    assert.is_true(at("postgres:create " .. A .. "-db") < at("postgres:link"))
    assert.is_true(at("config:set --encoded --no-restart " .. A .. "-backend")
      < at("git:from-image " .. A .. "-backend mindroom/backend:1"))
    assert.is_true(at("git:from-image " .. A .. "-backend") < at("letsencrypt:enable " .. A .. "-backend"))
    assert.is_true(at("letsencrypt:set " .. A .. "-backend email ops@example.com") < at("letsencrypt:enable " .. A
      .. "-backend"))
    assert.is_nil(index_of(lines, "ps:restart"), "a new instance is deployed, not restarted")
    for _, l in ipairs(lines) do
      assert.matches("^dokku %-%-quiet ", l)
      assert.is_nil(l:find("s3cret", 1, true))
      assert.is_nil(l:find(fakes.base64("s3cret"), 1, true))
    end
  end)

  it("sends every value base64-encoded", function()
    local _, steps = plan_and_apply(state("free"), {})
    for _, s in ipairs(steps) do
      for _, c in ipairs(s.commands) do
        if c.argv[1] == "config:set" then
          for i = 5, #c.argv do
            local k, v = c.argv[i]:match("^([A-Z_]+)=(.*)$")
            assert.is_string(k)
            assert.matches("^[A-Za-z0-9+/]*=*$", v)
            if k == "MINDROOM_ADMIN_PASSWORD" then
              assert.are.equal("s3cret", fakes.unbase64(v))
            end
          end
        end
      end
    end
  end)

  it("plans nothing for a converged instance", function()
    local applied = {}
    plan_and_apply(state("starter", { enable_matrix = true }), applied)
    local again = plan_and_apply(state("starter", { enable_matrix = true }), applied)
    assert.are.same({}, again)
  end)

  it("plans only the differences of a tier change, restarting each changed app once", function()
    local applied = {}
    plan_and_apply(state("starter"), applied)
    local lines = plan_and_apply(state("professional"), applied)
    assert.is_nil(index_of(lines, "apps:create"))
    assert.is_nil(index_of(lines, "git:from-image"))
    assert.is_truthy(index_of(lines, "resource:limit --memory 2048m --cpu 1 " .. A .. "-backend"))
    assert.is_truthy(index_of(lines, "resource:limit --memory 2048m --cpu 1 " .. A .. "-frontend"))
    local cfg = lines[index_of(lines, "config:set --encoded --no-restart " .. A .. "-backend")]
    assert.is_truthy(cfg:find("MINDROOM_TIER=", 1, true))
    assert.is_nil(cfg:find("MINDROOM_ADMIN_PASSWORD", 1, true), "unchanged keys are not sent")
    local restarts = 0
    for _, l in ipairs(lines) do
      if l:find("ps:restart", 1, true) then
        restarts = restarts + 1
      end
    end
    assert.are.equal(2, restarts)
    assert.are.equal(#lines, index_of(lines, "ps:restart " .. A .. "-frontend"))
  end)

  it("pending: only the resources the model says change, plus each touched app's starter", function()
    local applied = {}
    plan_and_apply(state("starter"), applied)
    local list = engine.resources(state("professional"))
    local keys = {}
    for _, r in ipairs(engine.pending(list, applied)) do
      keys[#keys + 1] = r.key
    end
    -- the tier change touches the limits of both apps and the backend's
    -- config; the image resource of each is kept (it restarts the app);
    -- nothing else
    table.sort(keys)
    assert.are.same({ "config:" .. A .. "-backend", "image:" .. A .. "-backend",
      "image:" .. A .. "-frontend", "limits:" .. A .. "-backend", "limits:" .. A .. "-frontend" }, keys)
    -- the list's order is kept, and the entries are the list's own
    local pending = engine.pending(list, applied)
    local pos = {}
    for i, r in ipairs(list) do pos[r] = i end
    for i = 2, #pending do
      assert.is_true(pos[pending[i - 1]] < pos[pending[i]])
    end
    -- nothing changed: nothing to converge; an owed restart keeps its starter
    assert.are.same({}, engine.pending(engine.resources(state("starter")), applied))
    local owed = engine.pending(engine.resources(state("starter")), applied, { A .. "-backend" })
    assert.are.equal(1, #owed)
    assert.are.equal("image:" .. A .. "-backend", owed[1].key)
    -- no record at all (an instance older than the model): everything
    assert.are.equal(#list, #engine.pending(list, {}))
  end)

  it("requests a certificate again after a domain change, after domains:set", function()
    local applied = {}
    plan_and_apply(state("enterprise", { custom_domain = "old.example.com" }), applied)
    -- the probe still sees the old certificate as active
    assert.is_true(applied["letsencrypt:" .. A .. "-frontend"].active)
    local lines = plan_and_apply(state("enterprise", { custom_domain = "new.example.com" }), applied)
    local set = assert(index_of(lines, "domains:set " .. A .. "-frontend new.example.com"))
    local enable = assert(index_of(lines, "letsencrypt:enable " .. A .. "-frontend"), table.concat(lines, "\n"))
    assert.is_true(set < enable)
    assert.is_true(index_of(lines, "domains:set " .. A .. "-backend api.new.example.com")
      < index_of(lines, "letsencrypt:enable " .. A .. "-backend"))
    assert.are.same({}, plan_and_apply(state("enterprise", { custom_domain = "new.example.com" }), applied))
  end)

  it("switching the Matrix server unsets the old server's variables and unmounts its data path", function()
    local applied = {}
    plan_and_apply(state("professional", { enable_matrix = true, matrix_type = "tuwunel" }), applied)
    local lines = plan_and_apply(state("professional", { enable_matrix = true, matrix_type = "synapse" }), applied)
    local mx = A .. "-matrix"
    assert.is_truthy(index_of(lines, "config:unset --no-restart " .. mx
      .. " TUWUNEL_ALLOW_REGISTRATION TUWUNEL_DATABASE_PATH TUWUNEL_SERVER_NAME"), table.concat(lines, "\n"))
    assert.is_truthy(index_of(lines, "storage:unmount " .. mx .. " /srv/data/" .. mx .. ":/var/lib/tuwunel"))
    assert.is_true(index_of(lines, "storage:unmount " .. mx) < index_of(lines, "storage:mount " .. mx
      .. " /srv/data/" .. mx .. ":/data"))
    assert.are.same({}, plan_and_apply(state("professional", { enable_matrix = true, matrix_type = "synapse" }),
      applied))
  end)

  it("destroys the Matrix app when Matrix is switched off", function()
    local applied = {}
    plan_and_apply(state("professional", { enable_matrix = true }), applied)
    local lines = plan_and_apply(state("professional", { enable_matrix = false }), applied)
    assert.is_truthy(index_of(lines, "apps:destroy --force " .. A .. "-matrix"))
    assert.is_false(applied["app:" .. A .. "-matrix"].exists)
  end)

  it("tears down in reverse dependency order, backups first, only what exists", function()
    local applied = {}
    plan_and_apply(state("free"), applied)
    local steps = assert(engine.teardown(state("free"), function(r) return applied[r.key] end, { backup = true }))
    local lines = engine.lines(steps)
    local function at(p)
      return assert(index_of(lines, p), "missing " .. p)
    end
    assert.is_true(at("postgres:export " .. A .. "-db") < at("postgres:unlink " .. A .. "-db " .. A .. "-backend"))
    assert.is_true(at("redis:export") < at("postgres:unlink"))
    assert.is_true(at("redis:unlink") < at("postgres:destroy " .. A .. "-db -f"))
    assert.is_true(at("redis:destroy " .. A .. "-redis -f") < at("apps:destroy --force " .. A .. "-frontend"))
    assert.is_true(at("apps:destroy --force " .. A .. "-backend") < #lines)
    assert.are.equal("dokku --quiet apps:destroy --force " .. A, lines[#lines])
    assert.is_nil(index_of(lines, A .. "-matrix"), "never created, not destroyed")
    local none = engine.teardown(state("free"), function() return nil end, { backup = true })
    assert.are.same({}, engine.lines(none))
  end)

  it("surfaces a probe failure instead of guessing", function()
    local steps, err = engine.plan(engine.resources(state("free")), function() return nil, "connection lost" end)
    assert.is_nil(steps)
    assert.are.equal("connection lost", err)
  end)
end)
