-- The field checks of one tier file (lua/tiers.lua loads the files and
-- resolves `extends`): every field of the table a tier file returns, merged
-- with its parent's, checked and normalized. A broken field is reported as
-- { patterns, message }: tiers.lua finds the first source line matching
-- one of the patterns (M.find_line) and answers `file:line: message`.
local schema = require "mindroom_schema"
local validate = require "validate"

local M = {}

local TOP_FIELDS = {
  name = true, display_name = true, extends = true, limits = true, agents = true,
  add_agents = true, tools = true, add_tools = true, models = true, flags = true, profile = true,
  rooms = true, add_rooms = true, router = true, memory = true,
  model_budget_usd = true, host_labels = true,
}
-- model_budget_usd: the monthly budget of the instance's own OpenRouter key
-- (lua/model_key.lua; 0 or absent = no key). At most this many USD.
M.MAX_MODEL_BUDGET = 1000000

-- kind, min, max, whether min itself is excluded; max nil = no upper bound.
local LIMITS = {
  memory_mb = { "int", 64, 262144 },
  cpu = { "number", 0, 64, true },
  storage_gb = { "int", 1, 10000 },
  agents = { "int", 1 },
  messages_per_day = { "int", 0 },
}
local LIMIT_ORDER = { "memory_mb", "cpu", "storage_gb", "agents", "messages_per_day" }
M.LIMIT_ORDER = LIMIT_ORDER

-- custom_limits: request limits override the tier's (SPEC §5.2, enterprise).
local FLAGS = { custom_domains = true, matrix = true, custom_limits = true }
local AGENT_FIELDS = { name = true, display_name = true, role = true, tools = true, model = true, rooms = true }
local ROOM_FIELDS = { display_name = true, description = true }
-- memory backends a tier may choose: mem0 (MindRoom's default) needs an
-- embedder key and an LLM server an instance is not promised (lua/render.lua).
local TIER_MEMORY = { file = true, none = true }
local MODEL_FIELDS = { provider = true, id = true }

function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end
local sorted_keys = M.sorted_keys

local is_list = validate.is_list

local function word(s)
  return "%f[%w_]" .. tostring(s):gsub("%p", "%%%0") .. "%f[^%w_]"
end
M.word = word

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
M.find_line = find_line

-- Each checker raises a { patterns, message } table through error();
-- M.normalize returns it, and tiers.lua turns it into `file:line: message`
-- with the file's source at hand.
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
    if what == "tool" and not schema.TOOLS[name] then
      -- config/main.py:1434: MindRoom refuses the whole config ("Unknown tool")
      bad({ quoted(name), word(field) }, ("%s: unknown tool '%s' (not in MindRoom's tool registry, "
        .. "lua/mindroom_tools.lua)"):format(field, name))
    end
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
    if not schema.PROVIDERS[schema.canonical_provider(m.provider)] then
      bad({ quoted(m.provider), word(name) }, ("models.%s.provider '%s' is not a provider MindRoom supports"):format(
        name, m.provider))
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

local function check_agent(a, i, tools_set, models, rooms)
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
  -- MindRoom's AgentConfig.rooms defaults to [] (config/agent.py:193): an
  -- agent in no room is never in a conversation.
  if not is_list(a.rooms) or #a.rooms == 0 then
    bad(at, ("agent '%s': rooms must list at least one room it joins"):format(name))
  end
  local seen_room = {}
  for _, r in ipairs(a.rooms) do
    if type(r) ~= "string" or not rooms[r] then
      bad(at, ("agent '%s': room '%s' is not one of the tier's rooms"):format(name, tostring(r)))
    end
    if seen_room[r] then bad(at, ("agent '%s': duplicate room '%s'"):format(name, r)) end
    seen_room[r] = true
  end
  local tools, arooms = {}, {}
  for j, tool in ipairs(a.tools) do tools[j] = tool end
  for j, r in ipairs(a.rooms) do arooms[j] = r end
  return { name = name, display_name = a.display_name, role = a.role, tools = tools, model = a.model, rooms = arooms }
end

-- rooms: key = { display_name, description } (config/agent.py:424-437);
-- MindRoom creates each as #<key>:<server name> (matrix/rooms.py:280-281).
local function check_rooms(t, field, out)
  if type(t) ~= "table" or is_list(t) and next(t) ~= nil then
    bad({ word(field) }, field .. " must be a table of key = { display_name = ..., description = ... }")
  end
  for _, key in ipairs(sorted_keys(t)) do
    if type(key) ~= "string" or not key:match("^[a-z][a-z0-9_]*$") or #key > 32 then
      bad({ word(field) }, ("%s: invalid room key '%s' (a-z 0-9 _, starting with a letter)"):format(
        field, tostring(key)))
    end
    local r = t[key]
    local at = { word(key), word(field) }
    if type(r) ~= "table" then bad(at, ("%s.%s must be a table"):format(field, key)) end
    for _, k in ipairs(sorted_keys(r)) do
      if not ROOM_FIELDS[k] then bad({ word(k), word(key) }, ("%s.%s: unknown field '%s'"):format(field, key, k)) end
    end
    for _, k in ipairs({ "display_name", "description" }) do
      if not text_ok(r[k], 2000) then
        bad(at, ("%s.%s.%s must be non-empty UTF-8 text of at most 2000 bytes"):format(field, key, k))
      end
    end
    out[key] = { display_name = r.display_name, description = r.description }
  end
  return out
end

-- router = { model = <a key of models> } (config/models.py:599-603);
-- absent: MindRoom's default, "default".
local function check_router(t, models)
  if t == nil then t = {} end
  if type(t) ~= "table" then bad({ word("router") }, "router must be a table { model = ... }") end
  for _, k in ipairs(sorted_keys(t)) do
    if k ~= "model" then bad({ word(k), word("router") }, ("router: unknown field '%s'"):format(tostring(k))) end
  end
  local model = t.model or "default"
  if type(model) ~= "string" or not models[model] then
    bad({ "router", word("models") }, ("router.model '%s' is not one of the tier's models"):format(tostring(model)))
  end
  return { model = model }
end

local function check_memory(t)
  if t == nil then t = {} end
  if type(t) ~= "table" then bad({ word("memory") }, "memory must be a table { backend = ... }") end
  for _, k in ipairs(sorted_keys(t)) do
    if k ~= "backend" then bad({ word(k), word("memory") }, ("memory: unknown field '%s'"):format(tostring(k))) end
  end
  local b = t.backend or "file"
  if not TIER_MEMORY[b] then
    bad({ word("backend"), word("memory") }, ("memory.backend '%s' must be file or none (mem0 needs an embedder "
      .. "key and an LLM the instance is not promised; a customer can choose it in config_overrides)"):format(
      tostring(b)))
  end
  return { backend = b }
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

function M.append(base, extra)
  local out = {}
  for _, v in ipairs(base or {}) do out[#out + 1] = v end
  for _, v in ipairs(extra or {}) do out[#out + 1] = v end
  return out
end
local append = M.append

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
  local budget = pick("model_budget_usd")
  if budget ~= nil and (type(budget) ~= "number" or budget ~= budget or budget < 0 or budget > M.MAX_MODEL_BUDGET) then
    bad({ word("model_budget_usd") }, ("model_budget_usd must be a number of USD from 0 to %d"):format(
      M.MAX_MODEL_BUDGET))
  end
  tier.model_budget_usd = budget or 0
  -- host_labels: what a Dokku host must carry to take this tier's instances
  -- (lua/placement.lua), e.g. { dedicated = true } or { region = "eu" }
  -- (nil when the tier sets none)
  if pick("host_labels") ~= nil then
    tier.host_labels = M.check_host_labels(pick("host_labels"), "host_labels")
  end
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
  tier.router = check_router(pick("router"), tier.models)
  tier.memory = check_memory(pick("memory"))

  -- rooms: the parent's (or the file's own `rooms`), then add_rooms over them
  tier.rooms = {}
  if pick("rooms") ~= nil then check_rooms(pick("rooms"), "rooms", tier.rooms) end
  if t.add_rooms ~= nil then check_rooms(t.add_rooms, "add_rooms", tier.rooms) end

  for _, k in ipairs({ "agents", "add_agents" }) do
    if t[k] ~= nil and not is_list(t[k]) then bad({ k .. "%s*=", word(k) }, k .. " must be a list of agents") end
  end
  local agents = append(pick("agents"), t.add_agents)
  if #agents == 0 then bad(AGENTS_AT, "agents must list at least one agent") end
  tier.agents = {}
  local seen = {}
  for i, a in ipairs(agents) do
    local agent = check_agent(a, i, tools_set, tier.models, tier.rooms)
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

-- A table of label = value (boolean, number or short string) a Dokku host
-- must carry (lua/hosts.lua labels); {} when nil. Also a hook's.
function M.check_host_labels(v, field)
  if v == nil then return {} end
  if type(v) ~= "table" then bad({ word(field) }, field .. " must be a table of label = value") end
  local out = {}
  for k, x in pairs(v) do
    local tx = type(x)
    if type(k) ~= "string" or not k:match("^[a-z][a-z0-9_]*$") or #k > 63
        or not (tx == "boolean" or tx == "number" or (tx == "string" and #x <= 253)) then
      bad({ word(field) }, field .. ": each entry is label = a boolean, a number or a short string")
    end
    out[k] = x
  end
  return out
end

-- normalize(t, base, parent, profiles) → the normalized tier, or nil,
-- patterns, message when a field is wrong. t: the file's table; base: its
-- file name without .lua; parent: the resolved tier it extends (or nil);
-- profiles: see check_profile.
function M.normalize(t, base, parent, profiles)
  local ok, tier = pcall(normalize, t, base, parent, profiles)
  if ok then return tier end
  if type(tier) == "table" and tier.message then return nil, tier.patterns, tier.message end
  error(tier, 0) -- a bug in this module, not in the tier file
end

return M
