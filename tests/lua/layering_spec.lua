-- The Lua modules form layers: a module requires only modules of its own
-- layer or below, and no chain of requires comes back to where it started.
-- The graph is read from the sources: every `require "x"` (also
-- `require("x")` and `pcall(require, "x")`) in lua/**/*.lua naming a file of
-- lua/ (cjson, yaml and the C bindings mrprov.* are not modules of lua/).
-- A new module is placed in LAYERS, or this spec fails.
local helper = require "helper"
local lfs = require "lfs"

-- Top first. A module's layer: its name in a layer's list, or the longest
-- prefix ending in "." (resources.* for the resource modules, which are one
-- file each and named by the engine, never by hand).
local LAYERS = {
  { "entry", "boot", "cli", "api", "worker" },              -- what C calls
  { "sweep", "reconcile" },                                  -- the drift sweep (runs the subscriptions sync)
  { "sync", "subscriptions_sync" },                          -- converging on Supabase's subscriptions table
  -- the write requests, Supabase webhooks, stop/start, a failed job's retry,
  -- fleet rollouts; the hosts API, moves between hosts
  { "handlers", "requests", "webhooks", "lifecycle", "retry", "rollout", "hosts_api", "move" },
  { "listings", "listings" },                                -- the API's list reads (instances, jobs)
  { "jobs", "plan", "converge", "health", "drift", "reconcile_bulk", "orphans" }, -- a job: its plan, applying it,
  -- readiness; an instance's drift, the sweep's bulk readings and orphans
  { "steps", "executor", "journal" },                        -- running commands, the step journal
  -- desired state, hooks, rows, model key; what hosts hold, placement
  { "model", "engine", "desired", "hooks", "instances", "model_key", "host_usage", "placement" },
  { "parts", "tiers", "tier_check", "profiles", "hook_handle", "hook_merge", "hosts" },
  { "resources", "resources." },                             -- lua/resources/*.lua
  { "resources.lib", "resources.lib." },                     -- what the resource modules share
  { "base", "validate", "validate_request", "json", "command", "redact", "store_error", "generation", "tar",
    -- config.yaml: rendering and MindRoom's rules (validate_request checks config_overrides with them)
    "render", "mindroom_schema", "mindroom_tools" },
}

local ROOT = "lua"

local function layer_of(name)
  local best, best_len
  for rank, layer in ipairs(LAYERS) do
    for i = 2, #layer do
      local entry = layer[i]
      if entry == name then return rank end
      if entry:sub(-1) == "." and name:sub(1, #entry) == entry and (not best_len or #entry > best_len) then
        best, best_len = rank, #entry
      end
    end
  end
  return best
end

-- Every lua/**/*.lua as { [module name] = path }.
local function modules()
  local out = {}
  local function walk(dir, prefix)
    for f in lfs.dir(dir) do
      if f ~= "." and f ~= ".." then
        local path = dir .. "/" .. f
        local mode = lfs.attributes(path, "mode")
        if mode == "directory" then
          walk(path, prefix .. f .. ".")
        elseif f:match("%.lua$") then
          out[prefix .. f:sub(1, -5)] = path
        end
      end
    end
  end
  walk(ROOT, "")
  return out
end

local read = helper.read_file

-- The modules of lua/ a source requires, comments left out.
local function requires_of(src, known)
  src = src:gsub("%-%-%[(=*)%[.-%]%1%]", ""):gsub("%-%-[^\n]*", "")
  local out, seen = {}, {}
  local function add(name)
    if known[name] and not seen[name] then
      seen[name] = true
      out[#out + 1] = name
    end
  end
  for _, pat in ipairs({ "require%s*%(?%s*[\"']([%w_.]+)[\"']", "pcall%(%s*require%s*,%s*[\"']([%w_.]+)[\"']" }) do
    for name in src:gmatch(pat) do add(name) end
  end
  table.sort(out)
  return out
end

local function graph(files)
  local g = {}
  for name, path in pairs(files) do g[name] = requires_of(read(path), files) end
  return g
end

local function sorted(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- A cycle as "a -> b -> a", or nil.
local function find_cycle(g)
  local state, stack = {}, {}
  local function visit(n)
    state[n] = "open"
    stack[#stack + 1] = n
    for _, m in ipairs(g[n] or {}) do
      if state[m] == "open" then
        local from
        for i, s in ipairs(stack) do
          if s == m then from = i end
        end
        local chain = { table.unpack(stack, from) }
        chain[#chain + 1] = m
        return table.concat(chain, " -> ")
      elseif not state[m] then
        local c = visit(m)
        if c then return c end
      end
    end
    stack[#stack] = nil
    state[n] = "done"
  end
  for _, n in ipairs(sorted(g)) do
    if not state[n] then
      local c = visit(n)
      if c then return c end
    end
  end
end

-- Every require that goes up a layer, as "a (layer) requires b (layer)".
local function upward(g)
  local out = {}
  for _, a in ipairs(sorted(g)) do
    for _, b in ipairs(g[a]) do
      local ra, rb = layer_of(a), layer_of(b)
      if ra and rb and rb < ra then
        out[#out + 1] = ("%s (%s) requires %s (%s)"):format(a, LAYERS[ra][1], b, LAYERS[rb][1])
      end
    end
  end
  return out
end

describe("the layers of lua/", function()
  local files = modules()
  local g = graph(files)

  it("finds the modules and their requires", function()
    for _, m in ipairs({ "boot", "worker", "engine", "validate", "resources.app", "resources.lib.contract" }) do
      assert.is_truthy(files[m], m)
    end
    assert.are.same({ "command", "resources.lib.contract" }, g["resources.app"])
    -- C bindings and third-party modules are not edges
    for _, b in ipairs(g.executor) do assert.is_nil(b:find("^mrprov%.")) end
  end)

  it("places every module in a layer", function()
    local unplaced = {}
    for _, m in ipairs(sorted(files)) do
      if not layer_of(m) then unplaced[#unplaced + 1] = m end
    end
    assert.are.same({}, unplaced)
  end)

  it("has no require cycle", function()
    assert.is_nil(find_cycle(g))
  end)

  it("has no module requiring a module of a layer above it", function()
    assert.are.same({}, upward(g))
  end)

  -- The checks themselves, on a graph with the faults they look for.
  it("would see an upward require and a cycle", function()
    local bad = {}
    for k, v in pairs(g) do bad[k] = { table.unpack(v) } end
    bad.validate[#bad.validate + 1] = "worker"
    local found = false
    for _, u in ipairs(upward(bad)) do found = found or u == "validate (base) requires worker (entry)" end
    assert.is_true(found)
    assert.is_string(find_cycle(bad))
    assert.are.same({ "desired", "json" }, requires_of('local json = require "json"\n-- require "boot"\n'
      .. '--[[ require "api" ]]\nlocal ok = pcall(require, "desired")\nlocal x = require("mrprov.sys")\n'
      .. 'local c = require "cjson"', { json = true, boot = true, api = true, desired = true }))
  end)
end)
