-- Specs for lua/render.lua: the MindRoom config.yaml parses back to the tier's
-- agents, models and tools, is byte-for-byte deterministic, keeps string types
-- and carries no secrets.
local helper = require "helper"
local lyaml = require "lyaml"
local render = require "render"

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local INSTANCE = {
  app_name = "mr-sub123-abc12345",
  subscription_id = "sub_123",
  account_id = "acc_456",
  tier = "professional",
}

-- A small tier built by hand, so the golden output below does not move when
-- the shipped tiers are edited.
local function small_tier()
  return {
    name = "small",
    agents = {
      {
        name = "assistant", display_name = "Assistant", role = "Helps.",
        tools = { "file", "calculator" }, model = "default", rooms = { "lobby" },
      },
    },
    models = { default = { provider = "anthropic", id = "claude-haiku-4-5" } },
    rooms = { lobby = { display_name = "Lobby", description = "Everyone." } },
    router = { model = "default" },
    memory = { backend = "file" },
  }
end

describe("render.config_yaml", function()
  local tiers

  setup(function()
    tiers = helper.shipped_tiers()
  end)

  it("parses back to every shipped tier's agents, models and tools", function()
    for name, tier in pairs(tiers) do
      local y = assert(render.config_yaml(tier, { app_name = "mr-sub123-abc12345", tier = name }))
      local doc = lyaml.load(y)
      assert.same({ "agents", "defaults", "memory", "models", "rooms", "router", "timezone" }, keys(doc))
      assert.equal(#tier.agents, #keys(doc.agents))
      for _, a in ipairs(tier.agents) do
        assert.same({
          display_name = a.display_name, role = a.role, model = a.model, tools = a.tools, rooms = a.rooms,
        }, doc.agents[a.name])
      end
      assert.same(tier.models, doc.models)
      assert.same(tier.rooms, doc.rooms)
      assert.same({ model = "default" }, doc.router)
      assert.same({ backend = "file" }, doc.memory)
      assert.same({ markdown = true }, doc.defaults)
      assert.equal("UTC", doc.timezone)
    end
  end)

  it("matches the expected bytes for a small tier", function()
    local y = render.config_yaml(small_tier(), { app_name = "mr-abc-12345678", tier = "small" })
    assert.equal(table.concat({
      "agents:",
      "  assistant:",
      "    display_name: Assistant",
      "    model: default",
      "    role: Helps.",
      "    rooms:",
      "    - lobby",
      "    tools:",
      "    - file",
      "    - calculator",
      "defaults:",
      "  markdown: true",
      "memory:",
      "  backend: file",
      "models:",
      "  default:",
      "    id: claude-haiku-4-5",
      "    provider: anthropic",
      "rooms:",
      "  lobby:",
      "    description: Everyone.",
      "    display_name: Lobby",
      "router:",
      "  model: default",
      "timezone: UTC",
      "",
    }, "\n"), y)
  end)

  it("is deterministic whatever the tables' insertion order", function()
    local tier = tiers.enterprise
    local first = render.config_yaml(tier, INSTANCE)
    assert.equal(first, render.config_yaml(tier, INSTANCE))

    -- Rebuild the tier with models inserted in reverse and padding keys
    -- added then removed, which changes the hash tables' internal order.
    local names = keys(tier.models)
    local models = {}
    for i = 1, 50 do models["pad" .. i] = true end
    for i = #names, 1, -1 do
      local m = tier.models[names[i]]
      models[names[i]] = { id = m.id, provider = m.provider }
    end
    for i = 1, 50 do models["pad" .. i] = nil end
    local agents = {}
    for i, a in ipairs(tier.agents) do
      agents[i] = { model = a.model, tools = a.tools, role = a.role, display_name = a.display_name, name = a.name,
                    rooms = a.rooms }
    end
    local rooms = {}
    local room_keys = keys(tier.rooms)
    for i = #room_keys, 1, -1 do rooms[room_keys[i]] = tier.rooms[room_keys[i]] end
    local copy = { agents = agents, models = models, name = tier.name, rooms = rooms, router = tier.router,
                   memory = tier.memory }
    local instance = { tier = INSTANCE.tier, account_id = INSTANCE.account_id, app_name = INSTANCE.app_name }
    assert.equal(first, render.config_yaml(copy, instance))
  end)

  it("keeps list order and reflects a change", function()
    local t = small_tier()
    local before = render.config_yaml(t, INSTANCE)
    t.agents[1].tools = { "calculator", "file" }
    local after = render.config_yaml(t, INSTANCE)
    assert.are_not.equal(before, after)
    assert.same({ "calculator", "file" }, lyaml.load(after).agents.assistant.tools)
  end)

  it("keeps strings that look like other YAML types as strings", function()
    local tricky = {
      "yes", "no", "on", "Off", "y", "N", "true", "FALSE", "null", "Null", "~", "",
      "1", "1.0", "-1", "0x1F", "0o17", "017", "1e3", ".inf", "-.inf", ".nan", "1:30",
      "2024-01-01", "-n", "--force", "a: b", "#comment", "@x", "`id`", "$(id)", "'quoted'",
      "\"dq\"", "line1\nline2", " leading", "trailing ", "é ü 日本", "[1, 2]", "{a: 1}", "*alias", "&anchor",
      "!tag", "%percent", "|", ">",
    }
    local t = small_tier()
    t.agents[1].display_name = "yes"
    t.agents[1].role = "1.0"
    t.models.default.id = "null"
    t.rooms.lobby.description = "~"
    local doc = lyaml.load(render.config_yaml(t, INSTANCE))
    assert.equal("yes", doc.agents.assistant.display_name)
    assert.equal("1.0", doc.agents.assistant.role)
    assert.equal("null", doc.models.default.id)
    assert.equal("~", doc.rooms.lobby.description)
    -- every text the emitter may get (config_overrides carry any text)
    doc = lyaml.load(render.emit({ list = tricky, ["yes"] = "no", ["1"] = "0" }))
    assert.same(tricky, doc.list)
    assert.equal("no", doc["yes"])
    assert.equal("0", doc["1"])
  end)

  it("writes no ids, secrets or other instance fields", function()
    local instance = {
      app_name = "mr-sub123-abc12345", tier = "starter",
      subscription_id = "sub_SECRETSUB", account_id = "acc_SECRETACC",
      admin_password = "hunter2-SECRET", database_url = "postgres://u:SECRETPW@db/x",
    }
    local y = render.config_yaml(tiers.starter, instance)
    for _, s in ipairs({ "SECRETSUB", "SECRETACC", "hunter2", "SECRETPW", "password", "database" }) do
      assert.is_nil(y:find(s, 1, true), s)
    end
    assert.is_nil(lyaml.load(y).instance)
    assert.is_nil(y:find("mr-sub123", 1, true))
  end)

  it("refuses text that libyaml cannot carry instead of crashing", function()
    local t = small_tier()
    t.agents[1].role = "bad \xff byte"
    local y, err = render.config_yaml(t, INSTANCE)
    assert.is_nil(y)
    assert.matches("config%.agents%.assistant%.role", err)
    y, err = render.emit({ tools = { "file", "a\0b" } })
    assert.is_nil(y)
    assert.matches("config%.tools%[1%]", err)
  end)
end)
