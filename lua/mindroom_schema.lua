-- MindRoom's config.yaml rules that mrprov checks before an instance gets a
-- config: the root keys, the required fields, tool names in MindRoom's
-- registry, every agent in a room, every model key referenced defined.
-- Facts from mindroom-ai/mindroom @ 9f69327b4 (cited file:line, paths under
-- src/mindroom/). MindRoom validates much more when it loads the file; these
-- are the rules a tier or a config override can break by a typo.
-- Also the hostile-input bounds of a config override (M.value).
local json = require "json"
local tools = require "mindroom_tools"
local validate = require "validate"

local M = {}

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- config/main.py:375-463: class Config, model_config extra="forbid".
M.ROOT_KEYS = set({
  "agents", "teams", "cultures", "rooms", "room_models", "room_thread_summary_models", "plugins", "debug",
  "prompts", "defaults", "memory", "knowledge_bases", "mcp_servers", "external_trigger_policy", "models",
  "tool_approval", "router", "voice", "calls", "event_journal", "matrix_sync", "timezone", "mindroom_user",
  "matrix_room_access", "matrix_space", "authorization", "bot_accounts",
})

-- The tool registry (lua/mindroom_tools.lua, generated from tools_metadata.json).
M.TOOLS = set(tools.names)
M.TOOL_SETUP = tools.setup

-- model_loading.py:42 (canonical_provider: lower case, "-" -> "_") and the
-- provider branches of _create_model_for_provider (model_loading.py:153-350).
M.PROVIDERS = set({
  "openai", "anthropic", "openrouter", "google", "gemini", "deepseek", "cerebras", "groq", "zai", "ollama",
  "azure", "vertexai_claude", "bedrock_claude", "llama_cpp", "codex", "openai_codex", "kimi", "kimi_code",
})

function M.canonical_provider(p)
  return (p:lower():gsub("-", "_"))
end

-- config/agent.py:176-280 (AgentConfig, extra="forbid").
local AGENT_FIELDS = set({
  "display_name", "role", "tools", "include_default_tools", "skills", "instructions", "rooms", "accept_invites",
  "markdown", "learning", "learning_mode", "model", "memory_backend", "memory_search", "compaction", "private",
  "knowledge_bases", "context_files", "thread_mode", "room_thread_modes", "num_history_runs",
  "num_history_messages", "compress_tool_results", "max_tool_calls_from_history", "show_tool_calls",
  "worker_tools", "worker_scope", "allow_self_config", "delegate_to",
})
-- config/agent.py:375-400 (TeamConfig).
local TEAM_FIELDS = set({
  "display_name", "role", "agents", "rooms", "model", "mode", "compaction", "num_history_runs",
  "num_history_messages", "max_tool_calls_from_history",
})
-- config/models.py:572-596 (ModelConfig).
local MODEL_FIELDS = set({ "provider", "id", "host", "api_key", "extra_kwargs", "context_window" })
-- config/models.py:599-603 (RouterConfig).
local ROUTER_FIELDS = set({ "model", "accept_invites" })
-- config/agent.py:424-437 (RoomConfig, extra="forbid").
local ROOM_FIELDS = set({ "display_name", "description", "encrypted" })
-- config/memory.py:12 (MemoryBackend).
M.MEMORY_BACKENDS = set({ "mem0", "file", "none" })
-- config/main.py:102-103: names alnum/underscore; router and user reserved.
local RESERVED_NAMES = set({ "router", "user" })

-- Fields whose value is a list, so an empty JSON array ([] decodes like {})
-- is written back as a list.
M.LIST_FIELDS = set({
  "tools", "rooms", "instructions", "skills", "knowledge_bases", "context_files", "worker_tools", "delegate_to",
  "agents", "plugins", "bot_accounts", "global_users", "include",
})

-- A list: a table marked json.array (so an empty one stays [] in the store
-- and YAML), or with keys 1..n only (an unmarked empty table counts as both).
M.seq = json.array
local SEQ_MT = getmetatable(json.array())
M.SEQ_MT = SEQ_MT

local function is_seq(v)
  if type(v) ~= "table" then return false end
  if getmetatable(v) == SEQ_MT then return true end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  for i = 1, n do
    if v[i] == nil then return false end
  end
  return true
end
local function is_map(v)
  if type(v) ~= "table" or getmetatable(v) == SEQ_MT then return false end
  for k in pairs(v) do
    if type(k) ~= "string" then return false end
  end
  return true
end
M.is_seq, M.is_map = is_seq, is_map

-- A table's keys, sorted by their text (an error names the same one
-- first; output is byte-deterministic). Also render's and validate_request's.
local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end
M.sorted_keys = sorted_keys

-- Path text of a key below `at` (JSON style: a.b, a[0]; list indexes 0-based).
local function sub(at, k)
  if type(k) == "number" then return ("%s[%d]"):format(at, k - 1) end
  if at == "" then return k end
  return at .. "." .. k
end
M.sub = sub

-- The field name of a path below prefix (path "" is prefix itself).
function M.join(prefix, path)
  if path == nil or path == "" then return prefix end
  if path:sub(1, 1) == "[" then return prefix .. path end
  return prefix .. "." .. path
end

-- Raises { path, message }; M.check catches it.
local function bad(path, message)
  error({ path = path, message = message }, 0)
end

-- A name from a request, echoed into an error only when plainly printable.
local function shown(s)
  if type(s) == "string" and #s <= 64 and s:match("^[%w_.:@#!+/-]+$") then return s end
  return "?"
end

local function text(v, path, what)
  if type(v) ~= "string" then bad(path, "must be " .. (what or "text")) end
end

local function known_fields(t, allowed, at)
  for _, k in ipairs(sorted_keys(t)) do
    if not allowed[k] then bad(sub(at, k), "is not a field MindRoom knows here") end
  end
end

local function need_map(v, at)
  if not is_map(v) then bad(at, "must be a mapping") end
end

local function need_seq(v, at)
  if not is_seq(v) then bad(at, "must be a list") end
end

-- A tool entry: "name" or { name = { overrides... } } (config/agent.py:183-186).
local function check_tools(list, at)
  need_seq(list, at)
  for i, entry in ipairs(list) do
    local name = entry
    if type(entry) == "table" then
      local keys = sorted_keys(entry)
      if not is_map(entry) or #keys ~= 1 then bad(sub(at, i), "must be a tool name or { name: {...} }") end
      name = keys[1]
    end
    if type(name) ~= "string" then bad(sub(at, i), "must be a tool name") end
    if not M.TOOLS[name] then
      bad(sub(at, i), ("names unknown tool '%s' (not in MindRoom's tool registry)"):format(shown(name)))
    end
  end
end

-- rooms: a configured room key, or a Matrix room ID (!) or alias (#).
local function check_rooms(list, at, doc, required)
  if list == nil then
    if required then bad(at, "is required: an agent joins at least one room") end
    return
  end
  need_seq(list, at)
  if required and #list == 0 then bad(at, "must name at least one room (an agent in no room never answers)") end
  local rooms = is_map(doc.rooms) and doc.rooms or {}
  for i, r in ipairs(list) do
    text(r, sub(at, i), "a room key")
    if not (r:sub(1, 1) == "!" or r:sub(1, 1) == "#" or rooms[r] ~= nil) then
      bad(sub(at, i), ("names room '%s', which is not a key of rooms (nor a room ID or alias)"):format(shown(r)))
    end
  end
end

local function check_model_ref(v, at, doc)
  if v == nil then return end
  text(v, at, "a model name")
  if not (is_map(doc.models) and doc.models[v] ~= nil) then
    bad(at, ("names model '%s', which is not a key of models"):format(shown(v)))
  end
end

local function check_agents(doc)
  if doc.agents == nil then return end
  need_map(doc.agents, "agents")
  for _, name in ipairs(sorted_keys(doc.agents)) do
    local at = sub("agents", name)
    if not name:match("^[A-Za-z0-9_]+$") or RESERVED_NAMES[name] then
      bad(at, "must be named with letters, digits and _ (not router or user)")
    end
    local a = doc.agents[name]
    need_map(a, at)
    known_fields(a, AGENT_FIELDS, at)
    if a.display_name == nil then bad(sub(at, "display_name"), "is required") end
    text(a.display_name, sub(at, "display_name"))
    if a.role ~= nil then text(a.role, sub(at, "role")) end
    -- AgentConfig.model defaults to "default" (config/agent.py:201)
    check_model_ref(a.model or "default", sub(at, "model"), doc)
    if a.tools ~= nil then check_tools(a.tools, sub(at, "tools")) end
    check_rooms(a.rooms, sub(at, "rooms"), doc, true)
  end
end

local function check_teams(doc)
  if doc.teams == nil then return end
  need_map(doc.teams, "teams")
  for _, name in ipairs(sorted_keys(doc.teams)) do
    local at = sub("teams", name)
    if not name:match("^[A-Za-z0-9_]+$") or RESERVED_NAMES[name] then
      bad(at, "must be named with letters, digits and _ (not router or user)")
    end
    if is_map(doc.agents) and doc.agents[name] then bad(at, "has the name of an agent") end
    local t = doc.teams[name]
    need_map(t, at)
    known_fields(t, TEAM_FIELDS, at)
    for _, k in ipairs({ "display_name", "role" }) do
      if t[k] == nil then bad(sub(at, k), "is required") end
      text(t[k], sub(at, k))
    end
    if t.agents == nil then bad(sub(at, "agents"), "is required") end
    need_seq(t.agents, sub(at, "agents"))
    if #t.agents == 0 then bad(sub(at, "agents"), "must name at least one agent") end
    for i, a in ipairs(t.agents) do
      if type(a) ~= "string" or not (is_map(doc.agents) and doc.agents[a]) then
        bad(sub(sub(at, "agents"), i), "is not one of the agents")
      end
    end
    check_model_ref(t.model, sub(at, "model"), doc)
    check_rooms(t.rooms, sub(at, "rooms"), doc, false)
  end
end

local function check_models(doc)
  if doc.models == nil then return end
  need_map(doc.models, "models")
  for _, name in ipairs(sorted_keys(doc.models)) do
    local at = sub("models", name)
    local m = doc.models[name]
    need_map(m, at)
    known_fields(m, MODEL_FIELDS, at)
    for _, k in ipairs({ "provider", "id" }) do
      if m[k] == nil then bad(sub(at, k), "is required") end
      text(m[k], sub(at, k))
    end
    if not M.PROVIDERS[M.canonical_provider(m.provider)] then
      bad(sub(at, "provider"), ("names provider '%s', which MindRoom does not support"):format(shown(m.provider)))
    end
  end
end

local function check_rooms_section(doc)
  if doc.rooms == nil then return end
  need_map(doc.rooms, "rooms")
  for _, key in ipairs(sorted_keys(doc.rooms)) do
    local at = sub("rooms", key)
    local r = doc.rooms[key]
    need_map(r, at)
    known_fields(r, ROOM_FIELDS, at)
    for _, k in ipairs({ "display_name", "description" }) do
      if r[k] ~= nil then text(r[k], sub(at, k)) end
    end
    if r.encrypted ~= nil and type(r.encrypted) ~= "boolean" then bad(sub(at, "encrypted"), "must be true or false") end
  end
end

-- check(doc) → true, or nil, path, message: the first broken rule, in a
-- fixed order (root keys, models, rooms, agents, teams, router, memory,
-- defaults, room_models, timezone). doc: a plain table (lyaml's or cjson's
-- decoding of the YAML/JSON), lists as sequences.
function M.check(doc)
  local ok, err = pcall(function()
    need_map(doc, "config")
    for _, k in ipairs(sorted_keys(doc)) do
      if not M.ROOT_KEYS[k] then bad(k, "is not a key of MindRoom's config (config/main.py:375-463)") end
    end
    check_models(doc)
    check_rooms_section(doc)
    check_agents(doc)
    check_teams(doc)
    if doc.router ~= nil then
      need_map(doc.router, "router")
      known_fields(doc.router, ROUTER_FIELDS, "router")
    end
    -- RouterConfig.model defaults to "default" (config/models.py:602)
    check_model_ref((doc.router or {}).model or "default", "router.model", doc)
    if doc.memory ~= nil and doc.memory ~= "none" then
      need_map(doc.memory, "memory")
      local b = doc.memory.backend
      if b ~= nil and not M.MEMORY_BACKENDS[b] then bad("memory.backend", "must be mem0, file or none") end
    end
    if doc.defaults ~= nil then
      need_map(doc.defaults, "defaults")
      if doc.defaults.tools ~= nil then check_tools(doc.defaults.tools, "defaults.tools") end
    end
    if doc.room_models ~= nil then
      need_map(doc.room_models, "room_models")
      for _, k in ipairs(sorted_keys(doc.room_models)) do
        check_model_ref(doc.room_models[k], sub("room_models", k), doc)
      end
    end
    if doc.timezone ~= nil then
      text(doc.timezone, "timezone", "a time zone name")
      if not doc.timezone:match("^[A-Za-z][A-Za-z0-9_+/-]*$") or #doc.timezone > 64 then
        bad("timezone", "must be a time zone name like UTC or Europe/Berlin")
      end
    end
  end)
  if ok then return true end
  if type(err) == "table" and err.path then return nil, err.path, err.message end
  error(err, 0)
end

-- Hostile-input bounds of a config override (a JSON value from a request).
M.MAX_DEPTH = 12
M.MAX_NODES = 2000
M.MAX_BYTES = 64 * 1024
M.MAX_STRING = 16 * 1024

-- value(v, at) → a copy with lists marked (M.seq), or nil, path, message.
-- Keys: 1-128 characters of A-Z a-z 0-9 _ . : @ # ! + - (agent, model and
-- room keys, Matrix IDs); strings: NUL-free UTF-8 of at most MAX_STRING
-- bytes; numbers finite; no null (to remove a tier's setting is not an
-- override); at most MAX_DEPTH levels, MAX_NODES values, MAX_BYTES of text.
function M.value(v, at)
  local nodes, bytes = 0, 0
  local function walk(x, path, depth, key)
    nodes = nodes + 1
    if nodes > M.MAX_NODES then bad(at, ("has more than %d values"):format(M.MAX_NODES)) end
    if depth > M.MAX_DEPTH then bad(path, ("nests deeper than %d levels"):format(M.MAX_DEPTH)) end
    local ty = type(x)
    if ty == "string" then
      bytes = bytes + #x
      if #x > M.MAX_STRING then bad(path, ("is longer than %d bytes"):format(M.MAX_STRING)) end
      if x:find("\0", 1, true) or not validate.utf8_valid(x) then bad(path, "must be NUL-free UTF-8 text") end
      return x
    elseif ty == "boolean" then
      return x
    elseif ty == "number" then
      if x ~= x or x == math.huge or x == -math.huge then bad(path, "must be a finite number") end
      return math.tointeger(x) or x
    elseif ty == "table" and next(x) == nil then
      if M.LIST_FIELDS[key] then return M.seq({}) end
      return {}
    elseif ty == "table" and is_seq(x) then
      local out = M.seq({})
      for i, e in ipairs(x) do out[i] = walk(e, sub(path, i), depth + 1) end
      return out
    elseif ty == "table" and is_map(x) then
      local out = {}
      for _, k in ipairs(sorted_keys(x)) do
        bytes = bytes + #k
        if #k == 0 or #k > 128 or not k:match("^[A-Za-z0-9_.:@#!+-]+$") then
          bad(path, "has a key that is not 1-128 characters of A-Z a-z 0-9 _ . : @ # ! + -")
        end
        out[k] = walk(x[k], sub(path, k), depth + 1, k)
      end
      return out
    elseif ty == "userdata" or ty == "table" then
      bad(path, "must not be null")
    end
    bad(path, "is not a JSON value")
  end
  local ok, out = pcall(function()
    local r = walk(v, at, 1)
    if bytes > M.MAX_BYTES then bad(at, ("holds more than %d bytes of text"):format(M.MAX_BYTES)) end
    return r
  end)
  if ok then return out end
  if type(out) == "table" and out.path then return nil, out.path, out.message end
  error(out, 0)
end

-- merge(base, over) → a new table: mappings merge key by key (deeply);
-- anything else in over (a list, a scalar) replaces base's value whole.
function M.merge(base, over)
  if not (is_map(over) and is_map(base)) or getmetatable(over) == SEQ_MT then return over end
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  for k, v in pairs(over) do
    if out[k] ~= nil and is_map(out[k]) and is_map(v) and getmetatable(v) ~= SEQ_MT
      and getmetatable(out[k]) ~= SEQ_MT then
      out[k] = M.merge(out[k], v)
    else
      out[k] = v
    end
  end
  return out
end

return M
