-- Specs for MindRoom's config.yaml rules (lua/mindroom_schema.lua), the tool
-- registry (lua/mindroom_tools.lua), every shipped tier's rendered config
-- parsed back with lua-yaml and checked against the rules of
-- docs/reference/mindroom.md §3, and config_overrides: bounds,
-- merge, and the 422 naming the offending key.
local cjson = require "cjson"
local helper = require "helper"
local lyaml = require "lyaml"
local registry = require "mindroom_tools"
local render = require "render"
local schema = require "mindroom_schema"
local validate_request = require "validate_request"

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- MindRoom's root keys, written out again here (config/main.py:375-463), so
-- a slip in the module's list does not pass unnoticed.
local ROOT = set({
  "agents", "teams", "cultures", "rooms", "room_models", "room_thread_summary_models", "plugins", "debug",
  "prompts", "defaults", "memory", "knowledge_bases", "mcp_servers", "external_trigger_policy", "models",
  "tool_approval", "router", "voice", "calls", "event_journal", "matrix_sync", "timezone", "mindroom_user",
  "matrix_room_access", "matrix_space", "authorization", "bot_accounts",
})

describe("MindRoom's tool registry (lua/mindroom_tools.lua)", function()
  it("has the 138 names of tools_metadata.json, sorted and unique", function()
    assert.equal(138, #registry.names)
    for i = 2, #registry.names do assert.is_true(registry.names[i - 1] < registry.names[i]) end
  end)

  it("knows the tools the reference checked and not web_search or calendar", function()
    local names = set(registry.names)
    for _, t in ipairs({ "calculator", "file", "shell", "github", "email", "browser", "python", "csv", "duckduckgo",
                         "googlesearch", "tavily", "wikipedia", "arxiv", "google_calendar", "cal_com" }) do
      assert.is_true(names[t], t)
    end
    assert.is_nil(names.web_search)
    assert.is_nil(names.calendar)
  end)

  it("matches MindRoom's export when MINDROOM_TOOLS_METADATA points at one", function()
    local path = os.getenv("MINDROOM_TOOLS_METADATA")
    if not path then return end
    local f = assert(io.open(path, "rb"))
    local doc = cjson.decode(f:read("a"))
    f:close()
    local names = {}
    for _, t in ipairs(doc.tools) do names[#names + 1] = t.name end
    table.sort(names)
    assert.same(names, registry.names)
  end)
end)

describe("every shipped tier's config.yaml", function()
  local tiers, profiles
  setup(function()
    tiers = helper.shipped_tiers()
    profiles = helper.shipped_profiles()
  end)

  -- The config.yaml an instance gets, through the desired state (the split
  -- profile carries it as MINDROOM_CONFIG_YAML) for each Matrix variant.
  local function delivered(tier, matrix)
    local desired = require "desired"
    local state = assert(desired.build({
      instance = { app_name = "mr-sub1-abcd1234", subscription_id = "sub_1", tier = tier.name,
                   enable_matrix = matrix ~= nil, matrix_type = matrix },
      tier = tier, settings = helper.settings, admin_password = "pw", profile = profiles.split,
    }))
    for _, a in ipairs(state.apps) do
      if a.env and a.env.MINDROOM_CONFIG_YAML then return a.env.MINDROOM_CONFIG_YAML end
    end
    error("no config.yaml in the state")
  end

  it("is the same for every Matrix variant", function()
    for name, tier in pairs(tiers) do
      local y = delivered(tier, nil)
      assert.equal(y, delivered(tier, "synapse"), name)
      assert.equal(y, delivered(tier, "tuwunel"), name)
      assert.equal(assert(render.config_yaml(tier, {})), y, name)
    end
  end)

  it("passes MindRoom's schema rules", function()
    for name, tier in pairs(tiers) do
      local doc = lyaml.load(delivered(tier, "synapse"))
      for k in pairs(doc) do assert.is_true(ROOT[k], name .. ": root key " .. k) end
      assert.is_nil(doc.instance)
      -- models: provider and id, a provider MindRoom supports
      for m, model in pairs(doc.models) do
        assert.is_string(model.provider, name .. "/" .. m)
        assert.is_string(model.id, name .. "/" .. m)
        assert.is_true(schema.PROVIDERS[model.provider], name .. "/" .. m)
      end
      -- agents: display_name, tools from the registry, a room, a model that exists
      local registered = set(registry.names)
      for a, agent in pairs(doc.agents) do
        local at = name .. "/" .. a
        assert.matches("^[A-Za-z0-9_]+$", a)
        assert.is_string(agent.display_name, at)
        for _, t in ipairs(agent.tools or {}) do assert.is_true(registered[t], at .. " tool " .. t) end
        assert.is_true(#agent.rooms >= 1, at)
        for _, r in ipairs(agent.rooms) do assert.is_table(doc.rooms[r], at .. " room " .. r) end
        assert.is_table(doc.models[agent.model or "default"], at)
      end
      for t, team in pairs(doc.teams or {}) do
        assert.is_string(team.display_name, t)
        assert.is_string(team.role, t)
        assert.is_true(#team.agents >= 1, t)
      end
      assert.is_table(doc.models[doc.router.model], name)
      -- memory needs no key the instance lacks
      assert.is_true(doc.memory.backend == "file" or doc.memory.backend == "none", name)
      assert.is_string(doc.timezone)
      assert.is_true(schema.check(doc))
    end
  end)

  it("keeps the tier promises: Sonnet on professional, Opus and GPT-4 on enterprise", function()
    local pro = lyaml.load(render.config_yaml(tiers.professional, {}))
    assert.equal("anthropic/claude-sonnet-4.5", pro.models[pro.router.model].id)
    for _, a in pairs(pro.agents) do assert.matches("sonnet", pro.models[a.model].id) end
    local ent = lyaml.load(render.config_yaml(tiers.enterprise, {}))
    local ids = {}
    for _, m in pairs(ent.models) do ids[m.provider .. "/" .. m.id] = true end
    assert.is_true(ids["openrouter/anthropic/claude-opus-4.1"])
    assert.is_true(ids["openrouter/openai/gpt-4.1"])
  end)
end)

describe("mindroom_schema.check", function()
  local function base()
    return {
      models = { default = { provider = "anthropic", id = "m" } },
      rooms = { lobby = { display_name = "Lobby" } },
      agents = { a = { display_name = "A", tools = { "file" }, rooms = { "lobby" } } },
      router = { model = "default" },
    }
  end
  local cases = {
    { "an unknown root key", function(d) d.instance = {} end, "instance", "is not a key of MindRoom's config" },
    { "an agent without display_name", function(d) d.agents.a.display_name = nil end,
      "agents.a.display_name", "is required" },
    { "an unknown tool", function(d) d.agents.a.tools = { "file", "web_search" } end,
      "agents.a.tools[1]", "unknown tool 'web_search'" },
    { "an agent in no room", function(d) d.agents.a.rooms = {} end, "agents.a.rooms", "at least one room" },
    { "an agent without rooms", function(d) d.agents.a.rooms = nil end, "agents.a.rooms", "is required" },
    { "a room that is not configured", function(d) d.agents.a.rooms = { "nope" } end,
      "agents.a.rooms[0]", "not a key of rooms" },
    { "an agent model that does not exist", function(d) d.agents.a.model = "big" end,
      "agents.a.model", "model 'big'" },
    { "a router model that does not exist", function(d) d.router.model = "big" end, "router.model", "model 'big'" },
    { "no default model and no router model", function(d) d.router = nil; d.models = { x = d.models.default } end,
      "agents.a.model", "model 'default'" },
    { "a model without id", function(d) d.models.default.id = nil end, "models.default.id", "is required" },
    { "a model without provider", function(d) d.models.default.provider = nil end,
      "models.default.provider", "is required" },
    { "an unsupported provider", function(d) d.models.default.provider = "acme" end,
      "models.default.provider", "provider 'acme'" },
    { "a team without agents", function(d) d.teams = { t = { display_name = "T", role = "R", agents = {} } } end,
      "teams.t.agents", "at least one agent" },
    { "a team of an unknown agent",
      function(d) d.teams = { t = { display_name = "T", role = "R", agents = { "z" } } } end,
      "teams.t.agents[0]", "not one of the agents" },
    { "a reserved agent name", function(d) d.agents.router = d.agents.a end, "agents.router", "not router or user" },
    { "an unknown memory backend", function(d) d.memory = { backend = "redis" } end, "memory.backend", "mem0, file" },
    { "an unknown agent field", function(d) d.agents.a.colour = "red" end, "agents.a.colour", "not a field" },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1], function()
      local d = base()
      c[2](d)
      local ok, path, message = schema.check(d)
      assert.is_nil(ok)
      assert.equal(c[3], path)
      assert.matches(c[4], message, 1, true)
    end)
  end

  it("accepts the base document, room IDs and aliases", function()
    local d = base()
    d.agents.a.rooms = { "lobby", "!abc:example.org", "#x:example.org" }
    assert.is_true(schema.check(d))
  end)
end)

describe("config_overrides", function()
  local tiers
  setup(function() tiers = helper.shipped_tiers() end)

  local function provision(overrides, tier)
    return validate_request.provision_request({
      subscription_id = "sub_1", account_id = "acc_1", tier = tier or "starter", config_overrides = overrides,
    }, tiers)
  end

  -- A body as the API decodes it (cjson: arrays and objects as plain tables).
  local function decoded(t) return cjson.decode(cjson.encode(t)) end

  it("merges mappings deeply and replaces lists and scalars", function()
    local r = assert(provision(decoded({
      timezone = "Europe/Berlin",
      agents = {
        coder = { tools = { "shell" }, instructions = { "Be brief." } },
        helper = { display_name = "Helper", rooms = { "lobby", "!room:example.org" }, tools = {} },
      },
      rooms = { lobby = { description = "Say hi." } },
      models = { fast = { provider = "openrouter", id = "google/gemini-3.6-flash" } },
      memory = { backend = "mem0", embedder = { provider = "openai", config = { model = "text-embedding-3-small" } } },
    })))
    local y = assert(render.config_yaml(tiers.starter, { config_overrides = r.config_overrides }))
    local doc = lyaml.load(y)
    assert.equal("Europe/Berlin", doc.timezone)
    -- a list replaces the tier's list whole; the agent's other fields stay
    assert.same({ "shell" }, doc.agents.coder.tools)
    assert.same({ "lobby", "dev" }, doc.agents.coder.rooms)
    assert.equal("Coder", doc.agents.coder.display_name)
    assert.same({ "Be brief." }, doc.agents.coder.instructions)
    -- a new agent; its empty tools list stays a list
    assert.same({ display_name = "Helper", rooms = { "lobby", "!room:example.org" }, tools = {} }, doc.agents.helper)
    assert.truthy(y:find("tools: []", 1, true))
    -- a room's field merges into the tier's room
    assert.same({ display_name = "Lobby", description = "Say hi." }, doc.rooms.lobby)
    assert.same({ provider = "openrouter", id = "anthropic/claude-haiku-4.5" }, doc.models.default)
    assert.equal("google/gemini-3.6-flash", doc.models.fast.id)
    assert.equal("mem0", doc.memory.backend)
    assert.equal("text-embedding-3-small", doc.memory.embedder.config.model)
    -- the tier's other agents are untouched
    assert.same({ "duckduckgo", "wikipedia", "file" }, doc.agents.researcher.tools)
    -- deterministic: the same request renders the same bytes
    assert.equal(y, render.config_yaml(tiers.starter, { config_overrides = decoded(r.config_overrides) }))
  end)

  it("renders the same after a round trip through the store's JSON", function()
    local json = require "json"
    local r = assert(provision(decoded({ agents = { h = { display_name = "H", rooms = { "lobby" }, tools = {} } } })))
    local stored = json.decode_stored(json.encode(r.config_overrides))
    assert.equal(render.config_yaml(tiers.starter, { config_overrides = r.config_overrides }),
      render.config_yaml(tiers.starter, { config_overrides = stored }))
  end)

  local refusals = {
    { "an unknown tool", { agents = { foo = { display_name = "F", rooms = { "lobby" }, tools = { "file", "x_y" } } } },
      "config_overrides.agents.foo.tools[1]", "unknown tool 'x_y'" },
    { "an unknown root key", { instance = { app_name = "x" } }, "config_overrides.instance", "is not a key" },
    { "an agent in no room", { agents = { foo = { display_name = "F", rooms = {} } } },
      "config_overrides.agents.foo.rooms", "at least one room" },
    { "an agent without display_name", { agents = { foo = { rooms = { "lobby" } } } },
      "config_overrides.agents.foo.display_name", "is required" },
    { "a room the tier does not have", { agents = { coder = { rooms = { "planning" } } } },
      "config_overrides.agents.coder.rooms[0]", "room 'planning'" },
    { "a model key that does not exist", { agents = { coder = { model = "gpt4" } } },
      "config_overrides.agents.coder.model", "model 'gpt4'" },
    { "a router model that does not exist", { router = { model = "big" } }, "config_overrides.router.model",
      "model 'big'" },
    { "a model without id", { models = { big = { provider = "openai" } } }, "config_overrides.models.big.id",
      "is required" },
    { "an unsupported provider", { models = { default = { provider = "acme" } } },
      "config_overrides.models.default.provider", "provider 'acme'" },
    { "a non-object", "timezone: UTC", "config_overrides", "must be an object" },
    { "a list", { "agents" }, "config_overrides", "must be an object" },
    { "a null", { timezone = cjson.null }, "config_overrides.timezone", "must not be null" },
    { "a NUL in a string", { timezone = "UTC\0x" }, "config_overrides.timezone", "NUL-free UTF-8" },
    { "invalid UTF-8", { agents = { coder = { role = "\xff\xfe" } } }, "config_overrides.agents.coder.role",
      "NUL-free UTF-8" },
    { "a key with odd characters", { agents = { ["co der"] = {} } }, "config_overrides.agents", "has a key" },
    { "a key with a newline", { ["timezone\n"] = "UTC" }, "config_overrides", "has a key" },
    { "a long string", { timezone = string.rep("a", 16 * 1024 + 1) }, "config_overrides.timezone", "longer than" },
    { "a bad timezone", { timezone = "UTC; rm -rf /" }, "config_overrides.timezone", "time zone" },
  }
  for _, c in ipairs(refusals) do
    it("refuses " .. c[1] .. " with 422 naming the key", function()
      local r, err = provision(c[2])
      assert.is_nil(r)
      assert.equal("invalid_value", err.code)
      assert.equal(c[3], err.field)
      assert.truthy(err.message:find(c[4], 1, true), err.message)
      assert.equal(c[3] .. " ", err.message:sub(1, #c[3] + 1))
    end)
  end

  it("refuses hostile nesting, breadth and size", function()
    local deep = {}
    local cur = deep
    for _ = 1, 40 do cur.a = {}; cur = cur.a end
    local _, err = provision({ debug = deep })
    assert.equal("invalid_value", err.code)
    assert.matches("^config_overrides%.debug%.a", err.field)
    assert.matches("nests deeper than 12 levels", err.message)
    local wide = {}
    for i = 1, 3000 do wide[#wide + 1] = "x" .. i end
    _, err = provision({ bot_accounts = wide })
    assert.equal("config_overrides", err.field)
    assert.matches("more than 2000 values", err.message)
    local big = {}
    for i = 1, 10 do big["k" .. i] = string.rep("y", 8000) end
    _, err = provision({ prompts = big })
    assert.equal("config_overrides", err.field)
    assert.matches("more than 65536 bytes", err.message)
  end)

  it("is checked against the tier the update ends on", function()
    local r = assert(validate_request.update_request({
      subscription_id = "sub_1", app_name = "mr-sub1-abcd1234",
      config_overrides = { agents = { coder = { rooms = { "dev" } } } },
    }, tiers, "starter"))
    assert.is_table(r.config_overrides)
    local _, err = validate_request.update_request({
      subscription_id = "sub_1", app_name = "mr-sub1-abcd1234", tier = "free",
      config_overrides = { agents = { coder = { rooms = { "dev" } } } },
    }, tiers, "starter")
    assert.equal("config_overrides.agents.coder.display_name", err.field)
  end)
end)
