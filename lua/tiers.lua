-- Loads the tier files (tiers/*.lua: plain data returning a table), resolves
-- `extends`, validates every field and returns normalized tiers. Every error is
-- `file:line: message` so `mrprov check` can point at the broken line.
local cjson = require "cjson"
local json = require "json"
local validate = require "validate"

local M = {}

-- A tier file may run this many VM instructions (pattern matching counts as
-- well), this much memory and time; data never needs more, and a stray loop
-- must not hang start-up or a reload.
M.INSTRUCTIONS = 1000000
M.MEMORY = 16 * 1024 * 1024
M.SECONDS = 5

local TOP_FIELDS = {
  name = true, display_name = true, extends = true, limits = true, agents = true,
  add_agents = true, tools = true, add_tools = true, models = true, flags = true, profile = true,
}

-- kind, min, max, whether min itself is excluded; max nil = no upper bound.
local LIMITS = {
  memory_mb = { "int", 64, 262144 },
  cpu = { "number", 0, 64, true },
  storage_gb = { "int", 1, 10000 },
  agents = { "int", 1 },
  messages_per_day = { "int", 0 },
}
local LIMIT_ORDER = { "memory_mb", "cpu", "storage_gb", "agents", "messages_per_day" }

-- custom_limits: request limits override the tier's (SPEC §5.2, enterprise).
local FLAGS = { custom_domains = true, matrix = true, custom_limits = true }
local AGENT_FIELDS = { name = true, display_name = true, role = true, tools = true, model = true }
local MODEL_FIELDS = { provider = true, id = true }

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function word(s)
  return "%f[%w_]" .. tostring(s):gsub("%p", "%%%0") .. "%f[^%w_]"
end

local function quoted(s)
  return "[\"']" .. tostring(s):gsub("%p", "%%%0") .. "[\"']"
end

-- The line of the first source line matching any of the patterns, tried in
-- order from most to least specific; 1 when none matches.
local function find_line(src, patterns)
  for _, pat in ipairs(patterns) do
    local n = 0
    for line in (src .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      if line:find(pat) then return n end
    end
  end
  return 1
end

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
-- library, memory and time); the unit specs pass a Lua stand-in.
local function run_file(path, src, run)
  local fn, err = load(src, "@" .. path, "t", sandbox())
  if not fn then return nil, err end
  local ok, value = run(fn)
  if not ok then
    value = tostring(value)
    if value:sub(1, #path + 1) ~= path .. ":" then value = path .. ":1: " .. value end
    return nil, value
  end
  if type(value) ~= "table" then
    return nil, path .. ":1: a tier file must return a table"
  end
  return value
end

-- Validation --------------------------------------------------------------

-- Each checker raises a { patterns, message } table through error(); resolve()
-- turns it into `file:line: message` with the file's source at hand.
local function bad(patterns, message)
  error({ patterns = patterns, message = message }, 0)
end

-- Text that ends up in config.yaml and API answers: UTF-8 without NUL, which
-- the YAML emitter and parser cannot carry.
local function text_ok(v, maxlen)
  return type(v) == "string" and #v > 0 and #v <= maxlen and not v:find("\0", 1, true)
    and validate.utf8_valid(v)
end

local function check_string(v, field, maxlen)
  if not text_ok(v, maxlen) then
    bad({ word(field) }, ("%s must be non-empty UTF-8 text of at most %d bytes"):format(field, maxlen))
  end
  return v
end

local function check_limits(t)
  if t == nil then return {} end
  if type(t) ~= "table" then bad({ word("limits") }, "limits must be a table") end
  local out = {}
  for _, k in ipairs(sorted_keys(t)) do
    local rule = LIMITS[k]
    if not rule then bad({ word(k), word("limits") }, ("limits: unknown limit '%s'"):format(tostring(k))) end
    local v, kind, min, max, open = t[k], rule[1], rule[2], rule[3], rule[4]
    local range = max and ("from %s to %s"):format(min, max) or ("of at least %s"):format(min)
    if open then range = ("above %s and at most %s"):format(min, max) end
    local n
    if type(v) == "number" and v == v then
      if kind == "int" then n = math.tointeger(v) else n = v end
    end
    if n == nil or (open and n <= min) or (not open and n < min) or (max and n > max) then
      bad({ word(k), word("limits") }, ("limits.%s must be %s %s"):format(
        k, kind == "int" and "an integer" or "a number", range))
    end
    if k == "cpu" and not validate.cpu(n) then
      -- formats to "0" for Dokku, which Docker reads as "no limit"
      bad({ word(k), word("limits") }, "limits.cpu must be at least 0.001")
    end
    out[k] = kind == "int" and n or n + 0.0
  end
  return out
end

local function check_name_list(v, field, what)
  if not is_list(v) then bad({ word(field) }, field .. " must be a list of " .. what .. " names") end
  local seen = {}
  for _, name in ipairs(v) do
    if type(name) ~= "string" or not name:match("^[a-z][a-z0-9_]*$") or #name > 64 then
      bad({ word(field) }, ("%s: invalid %s name %q (a-z 0-9 _, starting with a letter)"):format(
        field, what, tostring(name)))
    end
    if seen[name] then bad({ quoted(name), word(field) }, ("%s: duplicate %s '%s'"):format(field, what, name)) end
    seen[name] = true
  end
end

local function check_models(t)
  if type(t) ~= "table" or next(t) == nil or is_list(t) then
    bad({ word("models") }, "models must be a non-empty table of name = { provider = ..., id = ... }")
  end
  local out = {}
  for _, name in ipairs(sorted_keys(t)) do
    if type(name) ~= "string" or not name:match("^[a-z][a-z0-9_-]*$") or #name > 32 then
      bad({ word("models") }, ("models: invalid model name '%s'"):format(tostring(name)))
    end
    local m = t[name]
    local at = { word(name), word("models") }
    if type(m) ~= "table" then bad(at, ("models.%s must be a table"):format(name)) end
    for _, k in ipairs(sorted_keys(m)) do
      if not MODEL_FIELDS[k] then bad({ word(k), word(name) }, ("models.%s: unknown field '%s'"):format(name, k)) end
    end
    if type(m.provider) ~= "string" or not m.provider:match("^[a-z][a-z0-9_-]*$") or #m.provider > 32 then
      bad(at, ("models.%s.provider must be a provider name (a-z 0-9 _ -)"):format(name))
    end
    if type(m.id) ~= "string" or not m.id:match("^[A-Za-z0-9][A-Za-z0-9._:/-]*$") or #m.id > 128 then
      bad(at, ("models.%s.id must be a model id (A-Z a-z 0-9 . _ : / -)"):format(name))
    end
    out[name] = { provider = m.provider, id = m.id }
  end
  return out
end

-- Where an agent list starts: `agents = {` (also add_agents) before any
-- mention of the word, which limits.agents shares.
local AGENTS_AT = { "agents%s*=%s*{", word("agents") }

local function check_agent(a, i, tools_set, models)
  if type(a) ~= "table" then bad(AGENTS_AT, ("agents[%d] must be a table"):format(i)) end
  local name = a.name
  if type(name) ~= "string" or not name:match("^[a-z][a-z0-9_]*$") or #name > 32 then
    bad(AGENTS_AT, ("agents[%d].name must be 1-32 characters of a-z 0-9 _, starting with a letter"):format(i))
  end
  local at = { "name%s*=%s*" .. quoted(name), quoted(name), AGENTS_AT[1] }
  for _, k in ipairs(sorted_keys(a)) do
    if not AGENT_FIELDS[k] then bad(at, ("agent '%s': unknown field '%s'"):format(name, tostring(k))) end
  end
  for _, k in ipairs({ "display_name", "role" }) do
    local v = a[k]
    if not text_ok(v, 2000) then
      bad(at, ("agent '%s': %s must be non-empty UTF-8 text of at most 2000 bytes"):format(name, k))
    end
  end
  if not is_list(a.tools) then bad(at, ("agent '%s': tools must be a list of tool names"):format(name)) end
  local seen = {}
  for _, tool in ipairs(a.tools) do
    if type(tool) ~= "string" or not tools_set[tool] then
      bad(at, ("agent '%s': tool '%s' is not granted by the tier's tools"):format(name, tostring(tool)))
    end
    if seen[tool] then bad(at, ("agent '%s': duplicate tool '%s'"):format(name, tool)) end
    seen[tool] = true
  end
  if type(a.model) ~= "string" or not models[a.model] then
    bad(at, ("agent '%s': model '%s' is not one of the tier's models"):format(name, tostring(a.model)))
  end
  local tools = {}
  for j, tool in ipairs(a.tools) do tools[j] = tool end
  return { name = name, display_name = a.display_name, role = a.role, tools = tools, model = a.model }
end

local function check_flags(t)
  if t == nil then t = {} end
  if type(t) ~= "table" then bad({ word("flags") }, "flags must be a table") end
  local out = {}
  for _, k in ipairs(sorted_keys(t)) do
    if not FLAGS[k] then bad({ word(k), word("flags") }, ("flags: unknown flag '%s'"):format(tostring(k))) end
    if type(t[k]) ~= "boolean" then bad({ word(k), word("flags") }, ("flags.%s must be true or false"):format(k)) end
  end
  for k in pairs(FLAGS) do out[k] = t[k] == true end
  return out
end

local function append(base, extra)
  local out = {}
  for _, v in ipairs(base or {}) do out[#out + 1] = v end
  for _, v in ipairs(extra or {}) do out[#out + 1] = v end
  return out
end

-- The tier's profile (an instance layout, lua/profiles.lua): its own
-- `profile`, else its parent's, else the default (the PROFILE setting).
-- profiles (optional): { by_name = loaded profiles, default = name, dir = PROFILES_DIR }.
local function check_profile(name, profiles)
  if name ~= nil and (type(name) ~= "string" or not validate.tier_name(name)) then
    bad({ word("profile") }, "profile must be a profile name (1-32 characters of a-z 0-9 _ -, starting with a letter)")
  end
  if not profiles then return name, nil end
  name = name or profiles.default
  local p = profiles.by_name[name]
  if not p then
    bad({ "profile%s*=", word("profile") }, ("profile '%s' is not one of the profiles in %s (%s)"):format(
      name, profiles.dir or "PROFILES_DIR", table.concat(sorted_keys(profiles.by_name), ", ")))
  end
  return name, p
end

-- Builds the normalized tier from the file's table t and the resolved parent.
local function normalize(t, base, parent, profiles)
  for _, k in ipairs(sorted_keys(t)) do
    if not TOP_FIELDS[k] then bad({ word(k) }, ("unknown field '%s'"):format(tostring(k))) end
  end
  if t.name == nil then bad({}, "name is required") end
  if not validate.tier_name(t.name) then
    bad({ word("name") }, "name must be 1-32 characters of a-z 0-9 _ -, starting with a letter")
  end
  if t.name ~= base then
    bad({ word("name") }, ("name '%s' does not match the file name '%s.lua'"):format(t.name, base))
  end
  parent = parent or {}
  local function pick(k)
    if t[k] ~= nil then return t[k] end
    return parent[k]
  end

  local tier = { name = t.name, extends = t.extends, display_name = pick("display_name") }
  if tier.display_name == nil then bad({}, "display_name is required") end
  check_string(tier.display_name, "display_name", 64)

  -- limits and flags come whole from the tier that sets them, so an inherited
  -- nil (unlimited) is never filled in from further up.
  if t.limits ~= nil or not parent.limits then
    tier.limits = check_limits(t.limits)
  else
    tier.limits = check_limits(parent.limits)
  end
  tier.flags = check_flags(pick("flags"))
  -- layout: the loaded profile itself, for lua/desired.lua (not data: never described)
  tier.profile, tier.layout = check_profile(pick("profile"), profiles)

  for _, k in ipairs({ "tools", "add_tools" }) do
    if t[k] ~= nil then check_name_list(t[k], k, "tool") end
  end
  tier.tools = append(pick("tools"), t.add_tools)
  check_name_list(tier.tools, t.add_tools and "add_tools" or "tools", "tool")
  local tools_set = {}
  for _, tool in ipairs(tier.tools) do tools_set[tool] = true end

  if pick("models") == nil then bad({}, "models is required") end
  tier.models = check_models(pick("models"))

  for _, k in ipairs({ "agents", "add_agents" }) do
    if t[k] ~= nil and not is_list(t[k]) then bad({ k .. "%s*=", word(k) }, k .. " must be a list of agents") end
  end
  local agents = append(pick("agents"), t.add_agents)
  if #agents == 0 then bad(AGENTS_AT, "agents must list at least one agent") end
  tier.agents = {}
  local seen = {}
  for i, a in ipairs(agents) do
    local agent = check_agent(a, i, tools_set, tier.models)
    if seen[agent.name] then
      bad({ "name%s*=%s*" .. quoted(agent.name), AGENTS_AT[1] },
        ("duplicate agent '%s'"):format(agent.name))
    end
    seen[agent.name] = true
    tier.agents[i] = agent
  end
  if tier.limits.agents and #tier.agents > tier.limits.agents then
    bad({ "agents%s*=%s*%d", word("limits") }, ("tier has %d agents but limits.agents is %d"):format(
      #tier.agents, tier.limits.agents))
  end
  return tier
end

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
    local ok, tier = pcall(normalize, t, base, parent, profiles)
    local result
    if ok then
      tier.file = e.path
      result = { tier = tier }
    elseif type(tier) == "table" and tier.message then
      result = { err = at(tier.patterns, tier.message) }
    else
      error(tier, 0) -- a bug in this module, not in the tier file
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
-- validate.limits' output: absent key = tier value, cjson.null = unlimited.
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
