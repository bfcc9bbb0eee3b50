-- Every resource module keeps the contract (lua/resources/lib/contract.lua),
-- the engine's module list is the files in lua/resources/, and a module
-- dropped in (tests/fixtures/resources/checks.lua) is planned with no other
-- file changed.
local fakes = require "fakes"
local helper = require "helper"
local contract = require "resources.lib.contract"
local desired = require "desired"
local engine = require "engine"

local settings = helper.settings
local A = "mr-sub1-abcd1234"

local function state(inst)
  inst = inst or {}
  inst.app_name, inst.subscription_id, inst.tier = A, "sub_1", "professional"
  return assert(desired.build({ instance = inst, tier = helper.shipped_tiers().professional, settings = settings,
                                admin_password = "s3cret" }))
end

-- The *.lua files directly in lua/resources/, as the engine lists them.
local function files()
  local names, list = assert(require("mrprov.sys").source_list("lua/resources")), {}
  for _, n in ipairs(names) do
    local t = n:match("^(.*)%.lua$")
    if t then
      list[#list + 1] = t
    end
  end
  return list
end

local read = helper.read_file

-- The module list of a LUA_DIR with the fixture dropped into resources/.
local function with_fixture()
  package.preload["resources.checks"] = function()
    return dofile("tests/fixtures/resources/checks.lua")
  end
  return assert(engine.load(function(dir)
    assert.are.equal("lua/resources", dir)
    local names = assert(require("mrprov.sys").source_list(dir))
    names[#names + 1] = "checks.lua"
    table.sort(names)
    return names
  end))
end

describe("the resource contract", function()
  assert(fakes)
  after_each(function()
    package.preload["resources.checks"] = nil
    package.loaded["resources.checks"] = nil
    assert(engine.load())
  end)

  it("is kept by every module in lua/resources/", function()
    local types = files()
    assert.is_true(#types >= 10)
    for _, t in ipairs(types) do
      local mod = require("resources." .. t)
      local ok, why = contract.check(mod, t)
      assert.is_true(ok, t .. ": " .. tostring(why))
    end
  end)

  it("is kept by the dropped-in fixture", function()
    local mod = dofile("tests/fixtures/resources/checks.lua")
    assert.is_true(contract.check(mod, "checks"))
  end)

  it("makes the engine's module list the files in lua/resources/ (helpers live in lib/)", function()
    local listed = {}
    for _, mod in ipairs(engine.list) do
      listed[#listed + 1] = mod.type
    end
    table.sort(listed)
    assert.are.same(files(), listed)
    assert.is_nil(engine.modules.probe)
    assert.is_nil(engine.modules.contract)
  end)

  it("leaves every resource type out of the engine and the worker", function()
    for _, path in ipairs({ "lua/engine.lua", "lua/worker.lua", "lua/converge.lua", "lua/executor.lua",
                            "lua/journal.lua" }) do
      local src = read(path)
      for _, t in ipairs(files()) do
        assert.is_nil(src:find('"' .. t .. '"', 1, true), path .. " names the resource type " .. t)
        assert.is_nil(src:find("resources." .. t, 1, true), path .. " requires resources." .. t)
      end
    end
  end)

  it("refuses a module that does not keep it, naming what is missing", function()
    local function without(field)
      local mod = {}
      for k, v in pairs(require "resources.storage") do
        mod[k] = v
      end
      mod[field] = nil
      return contract.check(mod, "storage")
    end
    for _, f in ipairs({ "type", "phase", "order", "from", "specs", "locks", "creates", "probe", "diff", "model",
                         "undo" }) do
      local ok, why = without(f)
      assert.is_nil(ok, f)
      assert.matches("M%." .. f, why)
    end
    local ok, why = contract.check(require "resources.storage", "volumes")
    assert.is_nil(ok)
    assert.matches('M.type must be "volumes"', why, 1, true)
    local td = setmetatable({ exists = false }, { __index = require "resources.app" })
    ok, why = contract.check(td, "app")
    assert.is_nil(ok)
    assert.matches("M.exists", why, 1, true)
  end)

  it("refuses to load a broken module dropped in, naming its file", function()
    package.preload["resources.checks"] = function()
      local mod = dofile("tests/fixtures/resources/checks.lua")
      mod.locks = nil
      return mod
    end
    local ok, err = engine.load(function(dir)
      local names = assert(require("mrprov.sys").source_list(dir))
      names[#names + 1] = "checks.lua"
      return names
    end)
    assert.is_nil(ok)
    assert.are.equal("lua/resources/checks.lua: M.locks must be a function", err)
  end)

  it("plans a dropped-in module's commands with no other file changed", function()
    local before = engine.lines(assert(engine.plan(engine.resources(state()), function() return nil end)))
    for _, l in ipairs(before) do
      assert.is_nil(l:find("checks:", 1, true))
    end
    with_fixture()
    local lines = engine.lines(assert(engine.plan(engine.resources(state()), function() return nil end)))
    local function at(p)
      for i, l in ipairs(lines) do
        if l == p then
          return i
        end
      end
      error("missing " .. p .. " in\n" .. table.concat(lines, "\n"))
    end
    for _, app in ipairs({ A .. "-backend", A .. "-frontend" }) do
      local set = at("dokku --quiet checks:set " .. app .. " wait-to-retire 60")
      -- its phase and order place it: after the app's ports, before its deploy
      assert.is_true(set < at("dokku --quiet git:from-image " .. app .. " mindroom/" .. app:match("%-(%a+)$")
        .. ":1"))
    end
    assert.are.equal(#before + 2, #lines)
    -- and once applied it is converged
    local applied = {}
    for _, s in ipairs(assert(engine.plan(engine.resources(state()), function(r) return applied[r.key] end))) do
      local model, known = engine.model_after(s)
      if known then
        applied[s.resource.key] = model
      end
    end
    assert.are.same({}, engine.plan(engine.resources(state()), function(r) return applied[r.key] end))
  end)
end)
