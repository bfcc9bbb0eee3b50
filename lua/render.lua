-- Renders a tier into MindRoom's config.yaml (agents, models, tools; no secrets).
-- The output is byte-for-byte deterministic (sorted keys, lists in order) because
-- the engine compares it to decide whether an instance's config changed.
local yaml = require "yaml"

local M = {}

-- Plain scalars a YAML 1.1 or 1.2 reader would not keep as strings: booleans
-- (yes/no/on/off, y/n), nulls, numbers, dates, .inf/.nan. Only strings that
-- start with a letter and are not one of these words stay plain; the rest are
-- quoted. libyaml itself still decides how to quote and escape.
local NON_STRING_WORDS = {
  ["true"] = true, ["false"] = true, yes = true, no = true, on = true, off = true,
  y = true, n = true, null = true,
}

local function plain_safe(s)
  return s:match("^[A-Za-z]") ~= nil and not NON_STRING_WORDS[s:lower()]
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- Node constructors: a tiny tree of explicit mappings and sequences, so that
-- the emitter never has to guess whether a Lua table is a list or a map.
local function map(t) return { kind = "map", value = t } end
local function seq(t) return { kind = "seq", value = t } end

local function emit_node(emit, node)
  local ty = type(node)
  if ty == "string" then
    emit({
      type = "SCALAR", value = node, plain_implicit = true, quoted_implicit = true,
      style = plain_safe(node) and "PLAIN" or "SINGLE_QUOTED",
    })
  elseif ty == "boolean" or ty == "number" then
    emit({ type = "SCALAR", value = tostring(node), plain_implicit = true, quoted_implicit = false, style = "PLAIN" })
  elseif ty == "table" and node.kind == "map" then
    emit({ type = "MAPPING_START", style = "BLOCK" })
    for _, k in ipairs(sorted_keys(node.value)) do
      emit_node(emit, k)
      emit_node(emit, node.value[k])
    end
    emit({ type = "MAPPING_END" })
  elseif ty == "table" and node.kind == "seq" then
    emit({ type = "SEQUENCE_START", style = "BLOCK" })
    for _, v in ipairs(node.value) do emit_node(emit, v) end
    emit({ type = "SEQUENCE_END" })
  else
    error("render: cannot emit a " .. ty, 2)
  end
end

-- lua-yaml's emitter crashes the process on invalid UTF-8, and its parser cuts
-- a string at NUL, so such strings are refused before anything is emitted.
local function check_strings(node, where)
  local ty = type(node)
  if ty == "string" then
    if node:find("\0", 1, true) or not utf8.len(node) then
      return nil, "render: " .. where .. " is not NUL-free UTF-8 text"
    end
  elseif ty == "table" then
    local keys = sorted_keys(node.value)
    for _, k in ipairs(keys) do
      local ok, err = check_strings(k, where .. " key")
      if not ok then return nil, err end
      local sub = node.kind == "map" and (where .. "." .. tostring(k)) or (where .. "[" .. k .. "]")
      ok, err = check_strings(node.value[k], sub)
      if not ok then return nil, err end
    end
  end
  return true
end

local function to_yaml(root)
  local emitter = yaml.emitter()
  local function emit(event)
    local ok, out = emitter.emit(event)
    if not ok then error("render: yaml emitter: " .. tostring(out), 0) end
    return out
  end
  emit({ type = "STREAM_START", encoding = "UTF8" })
  emit({ type = "DOCUMENT_START", implicit = true })
  emit_node(emit, root)
  emit({ type = "DOCUMENT_END", implicit = true })
  return emit({ type = "STREAM_END" })
end

-- config_yaml(tier, instance) → string, or nil and an error for text that is
-- not NUL-free UTF-8 (validated tiers never have any). tier is a normalized tier (lua/tiers.lua);
-- instance is { app_name, subscription_id, account_id, tier }: only app_name and
-- the tier name are written — ids and secrets travel as separate environment.
function M.config_yaml(tier, instance)
  local agents = {}
  for _, a in ipairs(tier.agents) do
    local tools = {}
    for i, t in ipairs(a.tools) do tools[i] = t end
    agents[a.name] = map({
      display_name = a.display_name,
      role = a.role,
      model = a.model,
      tools = seq(tools),
    })
  end
  local models = {}
  for name, m in pairs(tier.models) do
    models[name] = map({ provider = m.provider, id = m.id })
  end
  local root = map({
    agents = map(agents),
    models = map(models),
    defaults = map({ markdown = true }),
    instance = map({
      app_name = instance.app_name,
      tier = instance.tier or tier.name,
    }),
  })
  local ok, err = check_strings(root, "config")
  if not ok then return nil, err end
  return to_yaml(root)
end

return M
