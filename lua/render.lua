-- Renders a tier into MindRoom's config.yaml (agents and the rooms they join,
-- models, router, memory, defaults, timezone; no secrets), with an instance's
-- config_overrides merged in. Only MindRoom's root keys (config/main.py:375-463,
-- extra="forbid"); the rules it must pass are lua/mindroom_schema.lua's.
-- The output is byte-for-byte deterministic (sorted keys, lists in order) because
-- the engine compares it to decide whether an instance's config changed.
local schema = require "mindroom_schema"
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

local sorted_keys = schema.sorted_keys

-- A plain Lua document is emitted as YAML: a table marked as a list
-- (schema.seq) or with keys 1..n only is a sequence, any other table a
-- mapping (an empty unmarked table is an empty mapping).
local function emit_node(emit, node)
  local ty = type(node)
  if ty == "string" then
    emit({
      type = "SCALAR", value = node, plain_implicit = true, quoted_implicit = true,
      style = plain_safe(node) and "PLAIN" or "SINGLE_QUOTED",
    })
  elseif ty == "boolean" or (ty == "number" and math.type(node) == "integer") then
    emit({ type = "SCALAR", value = tostring(node), plain_implicit = true, quoted_implicit = false, style = "PLAIN" })
  elseif ty == "number" then
    -- a float stays a float when read back (1.0, not 1)
    local v = ("%.17g"):format(node)
    if not v:find("[.eE]") then v = v .. ".0" end
    emit({ type = "SCALAR", value = v, plain_implicit = true, quoted_implicit = false, style = "PLAIN" })
  elseif ty == "table" and (next(node) ~= nil or getmetatable(node) == schema.SEQ_MT) and schema.is_seq(node) then
    emit({ type = "SEQUENCE_START", style = "BLOCK" })
    for _, v in ipairs(node) do emit_node(emit, v) end
    emit({ type = "SEQUENCE_END" })
  elseif ty == "table" then
    emit({ type = "MAPPING_START", style = "BLOCK" })
    for _, k in ipairs(sorted_keys(node)) do
      emit_node(emit, k)
      emit_node(emit, node[k])
    end
    emit({ type = "MAPPING_END" })
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
    for _, k in ipairs(sorted_keys(node)) do
      local ok, err = check_strings(k, where .. " key")
      if not ok then return nil, err end
      ok, err = check_strings(node[k], schema.sub(where, k))
      if not ok then return nil, err end
    end
  end
  return true
end

-- to_yaml(doc) → YAML text of a plain document (what config_yaml writes;
-- the caller has checked its strings).
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

-- What mrprov writes into every instance's config.yaml beside the tier's
-- agents and models (MindRoom's defaults otherwise):
--   memory.backend: file — markdown memory files with keyword search
--     (config/memory.py:25-31,215-220). The default, mem0, embeds with
--     provider openai (config/memory.py:62-69) and extracts with an ollama
--     LLM (config/memory.py:72-76): keys and a server an instance is not
--     promised, so a tier gets `file` (or `none`) and a customer who has the
--     keys can set mem0 through config_overrides.
--   router.model: the tier's router model (config/models.py:599-603).
--   timezone: UTC (MindRoom's default, config/main.py:437-440), written out so
--     an operator reading the file sees it.
M.TIMEZONE = "UTC"

-- document(tier) → the config as a plain table (lists marked schema.seq).
-- tier is a normalized tier (lua/tiers.lua).
function M.document(tier)
  local agents = {}
  for _, a in ipairs(tier.agents) do
    local tools, rooms = schema.seq(), schema.seq()
    for i, t in ipairs(a.tools) do tools[i] = t end
    for i, r in ipairs(a.rooms or {}) do rooms[i] = r end
    agents[a.name] = {
      display_name = a.display_name, role = a.role, model = a.model, tools = tools, rooms = rooms,
    }
  end
  local models = {}
  for name, m in pairs(tier.models) do
    models[name] = { provider = m.provider, id = m.id }
  end
  local rooms = {}
  for key, r in pairs(tier.rooms or {}) do
    rooms[key] = { display_name = r.display_name, description = r.description }
  end
  return {
    agents = agents,
    models = models,
    rooms = rooms,
    router = { model = tier.router and tier.router.model or "default" },
    memory = { backend = tier.memory and tier.memory.backend or "file" },
    defaults = { markdown = true },
    timezone = M.TIMEZONE,
  }
end

-- config_doc(tier, overrides) → the tier's document with the overrides
-- merged in (schema.merge: mappings deeply, lists and scalars replaced),
-- checked against MindRoom's rules (lua/mindroom_schema.lua); or nil, path,
-- message naming the first broken rule. overrides: schema.value's output
-- (nil or an empty table: none).
function M.config_doc(tier, overrides)
  local doc = M.document(tier)
  if overrides ~= nil and next(overrides) ~= nil then
    -- again here: overrides read back from the store lost their list marks
    local ov, path, message = schema.value(overrides, "")
    if not ov then return nil, path, message end
    doc = schema.merge(doc, ov)
  end
  local ok, path, message = schema.check(doc)
  if not ok then return nil, path, message end
  return doc
end

-- config_yaml(tier, instance) → string, or nil and an error (a text that is
-- not NUL-free UTF-8, or overrides that break a rule). instance: { app_name,
-- subscription_id, account_id, tier, config_overrides }: only the overrides
-- shape the file — ids and secrets travel as separate environment, so two
-- instances of a tier without overrides get the same bytes.
function M.config_yaml(tier, instance)
  local overrides = instance and instance.config_overrides
  local doc, path, message = M.config_doc(tier, overrides)
  if not doc then
    local from = (overrides and next(overrides) ~= nil) and "config_overrides." or ("tier " .. tier.name .. ": ")
    return nil, ("render: %s%s: %s"):format(from, path, message)
  end
  local ok, err = check_strings(doc, "config")
  if not ok then return nil, err end
  return to_yaml(doc)
end

-- emit(doc) → the YAML text of any plain document, or nil and why (text
-- that is not NUL-free UTF-8).
function M.emit(doc)
  local ok, err = check_strings(doc, "config")
  if not ok then return nil, err end
  return to_yaml(doc)
end

return M
