-- Loads the tier files (tiers/*.lua: plain data returning a table), resolves
-- `extends` and hands each table to lua/tier_check.lua, which validates every
-- field and normalizes it. Every error is `file:line: message` so `mrprov
-- check` can point at the broken line.
local cjson = require "cjson"
local json = require "json"
local tier_check = require "tier_check"

local M = {}

-- A tier file may run this many VM instructions (pattern matching counts as
-- well), this much memory and time; data never needs more, and a stray loop
-- must not hang start-up or a reload.
M.INSTRUCTIONS = 1000000
M.MEMORY = 16 * 1024 * 1024
M.SECONDS = 5

local LIMIT_ORDER = tier_check.LIMIT_ORDER
local find_line, word = tier_check.find_line, tier_check.word
local sorted_keys, append = tier_check.sorted_keys, tier_check.append

-- A fresh environment per file: only pure functions, nothing that does I/O,
-- no randomness (tiers must read the same every time), no shared tables a
-- file could change for the rest of the process.
local function sandbox()
  local m = {}
  for k, v in pairs(math) do m[k] = v end
  m.random, m.randomseed = nil, nil
  return {
    math = m, ipairs = ipairs, pairs = pairs, next = next, select = select,
    tostring = tostring, tonumber = tonumber, type = type,
  }
end

-- run(fn) → true, value | false, message: the one bounded run boot.lua
-- gives (the service's C sandbox: instructions, also inside the string
-- library, memory and time); the unit specs pass a Lua stand-in. what: the
-- kind of file in the error ("tier", "host"). Also lua/hosts.lua's.
local function run_file(path, src, run, what)
  local fn, err = load(src, "@" .. path, "t", sandbox())
  if not fn then return nil, err end
  local ok, value = run(fn)
  if not ok then
    value = tostring(value)
    if value:sub(1, #path + 1) ~= path .. ":" then value = path .. ":1: " .. value end
    return nil, value
  end
  if type(value) ~= "table" then
    return nil, path .. ":1: a " .. (what or "tier") .. " file must return a table"
  end
  return value
end
M.run_file = run_file

-- Loading ------------------------------------------------------------------

-- load_dir(dir, fs [, profiles]) → { [name] = tier }, or nil, "file:line: message".
-- fs.list(dir) → sorted file names (or nil, err); fs.read(path) → text (or nil, err);
-- fs.run(fn) → true, value | false, message: runs a file's chunk bounded
-- (boot.lua's; required). profiles: see check_profile.
function M.load_dir(dir, fs, profiles)
  assert(fs.run, "tiers.load_dir needs fs.run (the sandbox)")
  dir = dir:gsub("/+$", "")
  local names, lerr = fs.list(dir)
  if not names then return nil, ("%s: cannot list tiers: %s"):format(dir, tostring(lerr)) end
  local files = {}
  for _, f in ipairs(names) do
    if f:match("%.lua$") then files[#files + 1] = f end
  end
  table.sort(files)
  if #files == 0 then return nil, dir .. ": no tier files (*.lua)" end

  local entries, order = {}, {}
  for _, f in ipairs(files) do
    local path = dir .. "/" .. f
    local base = f:sub(1, -5)
    local e = { path = path, base = base }
    local src, rerr = fs.read(path)
    if not src then
      e.err = ("%s:1: cannot read: %s"):format(path, tostring(rerr))
    else
      e.src = src
      e.value, e.err = run_file(path, src, fs.run)
    end
    entries[base] = e
    order[#order + 1] = base
  end

  local done = {}
  local function resolve(base, stack)
    if done[base] then return done[base].tier, done[base].err end
    local e = entries[base]
    if e.err then return nil, e.err end
    local t = e.value
    local function at(patterns, message)
      return ("%s:%d: %s"):format(e.path, find_line(e.src, patterns), message)
    end
    local parent
    if t.extends ~= nil then
      local p = t.extends
      if type(p) ~= "string" or not entries[p] then
        return nil, at({ word("extends") }, ("extends unknown tier '%s'"):format(tostring(p)))
      end
      if p == base or stack[p] then
        local chain = {}
        for i = 1, #stack do chain[i] = stack[i] end
        chain[#chain + 1] = base
        chain[#chain + 1] = p
        return nil, at({ word("extends") }, "extends cycle: " .. table.concat(chain, " -> "))
      end
      stack[base] = true
      stack[#stack + 1] = base
      local perr
      parent, perr = resolve(p, stack)
      stack[base] = nil
      stack[#stack] = nil
      if not parent then return nil, perr end
    end
    local tier, patterns, message = tier_check.normalize(t, base, parent, profiles)
    local result
    if tier then
      tier.file = e.path
      result = { tier = tier }
    else
      result = { err = at(patterns, message) }
    end
    done[base] = result
    return result.tier, result.err
  end

  local out = {}
  for _, base in ipairs(order) do
    local tier, err = resolve(base, {})
    if not tier then return nil, err end
    out[tier.name] = tier
  end
  return out
end

-- Reading ------------------------------------------------------------------

function M.names(tiers_by_name)
  return sorted_keys(tiers_by_name)
end

local function null_if_nil(v)
  if v == nil then return cjson.null end
  return v
end

-- A JSON-ready view for GET /api/v1/tiers and `mrprov tiers`; unlimited
-- limits are JSON null, and lists are json.array so an empty one stays [].
function M.describe(tier)
  local limits = {}
  for _, k in ipairs(LIMIT_ORDER) do limits[k] = null_if_nil(tier.limits[k]) end
  local agents = {}
  for i, a in ipairs(tier.agents) do
    agents[i] = {
      name = a.name, display_name = a.display_name, role = a.role, model = a.model,
      tools = json.array(append(a.tools)),
    }
  end
  local models = {}
  for name, m in pairs(tier.models) do models[name] = { provider = m.provider, id = m.id } end
  local flags = {}
  for k, v in pairs(tier.flags) do flags[k] = v end
  return {
    name = tier.name,
    display_name = tier.display_name,
    extends = null_if_nil(tier.extends),
    limits = limits,
    agents = json.array(agents),
    tools = json.array(append(tier.tools)),
    models = models,
    flags = flags,
  }
end

-- The limits an instance runs with: the tier's, unless the tier allows custom
-- limits (flags.custom_limits) and the request gave some. request_limits is
-- validate_request.limits' output: absent key = tier value, cjson.null = unlimited.
-- Returns a new table; nil means unlimited.
function M.effective_limits(tier, request_limits)
  local out = {}
  for _, k in ipairs(LIMIT_ORDER) do out[k] = tier.limits[k] end
  if tier.flags.custom_limits and request_limits then
    for _, k in ipairs(LIMIT_ORDER) do
      local v = request_limits[k]
      if v == cjson.null then
        out[k] = nil
      elseif v ~= nil then
        out[k] = v
      end
    end
  end
  return out
end

return M
