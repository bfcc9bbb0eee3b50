-- Specs for lua/tiers.lua and the shipped tiers/: the product table of SPEC §6,
-- extends semantics, and `file:line` on every kind of broken tier file.
local cjson = require "cjson"
local helper = require "helper"
local json = require "json"
local tiers = require "tiers"

local ALL_TOOLS = {
  "calculator", "file", "duckduckgo", "wikipedia", "shell", "github",
  "email", "google_calendar", "browser", "python", "csv",
}

local function names_of(list)
  local out = {}
  for i, a in ipairs(list) do out[i] = a.name end
  return out
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- A valid tier source whose line numbers the error specs rely on.
local VALID = {
  'return {',                                                                               -- 1
  '  name = "x",',                                                                          -- 2
  '  display_name = "X",',                                                                  -- 3
  '  limits = { memory_mb = 256, cpu = 0.5, storage_gb = 1, agents = 2, messages_per_day = 10 },', -- 4
  '  tools = { "calculator", "file" }, rooms = { lobby = { display_name = "L", description = "Lobby." } },', -- 5
  '  models = { default = { provider = "anthropic", id = "claude-haiku-4-5" } },',          -- 6
  '  flags = { custom_domains = false, matrix = true },',                                   -- 7
  '  agents = {',                                                                           -- 8
  '    { name = "assistant", display_name = "A", role = "Helps.", tools = { "calculator" }, model = "default",'
    .. ' rooms = { "lobby" } },',                                                           -- 9
  '    { name = "helper", display_name = "H", role = "Helps too.", tools = { "file" }, model = "default",'
    .. ' rooms = { "lobby" } },',                                                           -- 10
  '  },',                                                                                   -- 11
  '}',                                                                                      -- 12
}

-- The VALID source with some lines replaced: edits = { [line] = text }; a
-- text of false deletes the line's content (keeps numbering).
local function source(edits)
  local lines = {}
  for i, l in ipairs(VALID) do
    local e = edits and edits[i]
    if e == false then e = "" end
    lines[i] = e or l
  end
  return table.concat(lines, "\n") .. "\n"
end

local function load_files(files)
  return tiers.load_dir("tiers", helper.memfs(files))
end

local function load_one(src, name)
  return load_files({ ["tiers/" .. (name or "x") .. ".lua"] = src })
end

describe("shipped tiers", function()
  local t

  setup(function()
    t = helper.shipped_tiers()
  end)

  it("carry MindRoom's included OpenRouter budgets (hobby $15, pro $150; free and custom none)", function()
    assert.same({ free = 0, starter = 15, professional = 150, enterprise = 0 }, {
      free = t.free.model_budget_usd, starter = t.starter.model_budget_usd,
      professional = t.professional.model_budget_usd, enterprise = t.enterprise.model_budget_usd,
    })
  end)

  it("are exactly free, starter, professional and enterprise", function()
    assert.same({ "enterprise", "free", "professional", "starter" }, tiers.names(t))
    for name, tier in pairs(t) do
      assert.equal(name, tier.name)
      assert.equal("tiers/" .. name .. ".lua", tier.file)
      assert.is_string(tier.display_name)
    end
  end)

  it("free: one assistant, calculator and file, one default model, 256 MB / 0.25 CPU, 100/day", function()
    local f = t.free
    assert.same({ "assistant" }, names_of(f.agents))
    assert.same({ "calculator", "file" }, f.tools)
    assert.equal(1, count(f.models))
    assert.is_table(f.models.default)
    assert.same({ memory_mb = 256, cpu = 0.25, storage_gb = 1, agents = 1, messages_per_day = 100 }, f.limits)
    assert.is_nil(f.extends)
  end)

  it("starter: assistant, researcher, coder; free's tools plus web search, shell, GitHub", function()
    local s = t.starter
    assert.same({ "assistant", "researcher", "coder" }, names_of(s.agents))
    assert.same({ "calculator", "file", "duckduckgo", "wikipedia", "shell", "github" }, s.tools)
    assert.same(t.free.models, s.models)
    assert.same({ memory_mb = 512, cpu = 0.5, storage_gb = 5, agents = 3, messages_per_day = 500 }, s.limits)
  end)

  it("professional: six agents, every tool, Claude Sonnet, 2 GB / 1.0 CPU, 2000/day", function()
    local p = t.professional
    assert.equal(6, #p.agents)
    local agents = set_of(names_of(p.agents))
    for _, n in ipairs({ "assistant", "researcher", "coder" }) do assert.is_true(agents[n]) end
    assert.same(ALL_TOOLS, p.tools)
    assert.equal(1, count(p.models))
    assert.same({ provider = "openrouter", id = "anthropic/claude-sonnet-4.5" }, p.models.default)
    assert.same({ memory_mb = 2048, cpu = 1.0, storage_gb = 10, agents = 6, messages_per_day = 2000 }, p.limits)
    assert.is_true(math.type(p.limits.memory_mb) == "integer")
  end)

  it("enterprise: every agent plus an orchestrator, every tool, Opus and GPT-4, unlimited messages", function()
    local e = t.enterprise
    local agents = set_of(names_of(e.agents))
    for _, a in ipairs(t.professional.agents) do assert.is_true(agents[a.name]) end
    assert.is_true(agents.orchestrator)
    assert.equal(#t.professional.agents + 1, #e.agents)
    assert.same(ALL_TOOLS, e.tools)
    local ids = {}
    for _, m in pairs(e.models) do ids[m.provider .. "/" .. m.id] = true end
    assert.is_true(ids["openrouter/anthropic/claude-opus-4.1"])
    assert.is_true(ids["openrouter/openai/gpt-4.1"])
    assert.equal(2, count(e.models))
    assert.equal(8192, e.limits.memory_mb)
    assert.equal(4.0, e.limits.cpu)
    assert.equal(100, e.limits.storage_gb)
    assert.is_nil(e.limits.messages_per_day)
    assert.is_nil(e.limits.agents)
  end)

  it("allow Matrix everywhere and custom domains only on enterprise", function()
    for name, tier in pairs(t) do
      assert.is_true(tier.flags.matrix, name)
      assert.equal(name == "enterprise", tier.flags.custom_domains, name)
      assert.equal(name == "enterprise", tier.flags.custom_limits, name)
    end
  end)

  it("give every agent only granted tools and a declared model", function()
    for _, tier in pairs(t) do
      local granted = set_of(tier.tools)
      for _, a in ipairs(tier.agents) do
        assert.is_table(tier.models[a.model])
        assert.is_string(a.role)
        for _, tool in ipairs(a.tools) do assert.is_true(granted[tool], tier.name .. "/" .. a.name .. "/" .. tool) end
      end
    end
  end)

  it("never take anything away from a higher tier", function()
    local order = { "free", "starter", "professional", "enterprise" }
    for i = 2, #order do
      local lower, higher = t[order[i - 1]], t[order[i]]
      local tools, agents = set_of(higher.tools), set_of(names_of(higher.agents))
      for _, tool in ipairs(lower.tools) do assert.is_true(tools[tool]) end
      for _, a in ipairs(lower.agents) do assert.is_true(agents[a.name]) end
      assert.is_true(higher.limits.memory_mb > lower.limits.memory_mb)
    end
  end)
end)

describe("tiers.load_dir", function()
  it("loads a valid file into the normalized shape", function()
    local t, err = load_one(source())
    assert.is_nil(err)
    assert.same({
      name = "x", display_name = "X", file = "tiers/x.lua",
      limits = { memory_mb = 256, cpu = 0.5, storage_gb = 1, agents = 2, messages_per_day = 10 },
      tools = { "calculator", "file" },
      models = { default = { provider = "anthropic", id = "claude-haiku-4-5" } },
      flags = { custom_domains = false, matrix = true, custom_limits = false },
      rooms = { lobby = { display_name = "L", description = "Lobby." } },
      router = { model = "default" },
      memory = { backend = "file" },
      model_budget_usd = 0,
      agents = {
        { name = "assistant", display_name = "A", role = "Helps.", tools = { "calculator" }, model = "default",
          rooms = { "lobby" } },
        { name = "helper", display_name = "H", role = "Helps too.", tools = { "file" }, model = "default",
          rooms = { "lobby" } },
      },
    }, t.x)
  end)

  it("treats missing limits and flags as unlimited and off", function()
    local t = assert(load_one(source({ [4] = false, [7] = false })))
    assert.same({}, t.x.limits)
    assert.same({ custom_domains = false, matrix = false, custom_limits = false }, t.x.flags)
  end)

  it("ignores files that are not *.lua", function()
    local t = assert(load_files({ ["tiers/x.lua"] = source(), ["tiers/README.md"] = "not lua {" }))
    assert.same({ "x" }, tiers.names(t))
  end)

  it("reports a directory it cannot list", function()
    local t, err = tiers.load_dir("nowhere", helper.memfs({}))
    assert.is_nil(t)
    assert.matches("^nowhere: ", err)
  end)

  it("refuses a directory without tier files", function()
    local t, err = load_files({ ["tiers/notes.txt"] = "" })
    assert.is_nil(t)
    assert.matches("no tier files", err)
  end)

  it("gives each file its own environment without I/O or shared tables", function()
    local src = source({ [1] = 'math.floor = nil; local r = math.random; return {' })
    local t, err = load_one(src)
    assert.is_nil(err)
    assert.is_table(t.x)
    assert.is_function(math.floor)
    local _, ioerr = load_one(source({ [1] = 'local f = io.open("/etc/passwd") return {' }))
    assert.matches("^tiers/x%.lua:1: .*global 'io'", ioerr)
    local _, oserr = load_one(source({ [3] = '  display_name = os.getenv("HOME"),' }))
    assert.matches("^tiers/x%.lua:3: .*global 'os'", oserr)
    local _, rerr = load_one(source({ [3] = '  display_name = require("cjson") and "X",' }))
    assert.matches("^tiers/x%.lua:3: .*global 'require'", rerr)
  end)
end)

describe("tier errors carry file:line", function()
  local cases = {
    { "a syntax error", { [5] = '  tools = { "calculator" "file" },' }, "^tiers/x%.lua:5: .*expected" },
    { "a runtime error", { [3] = '  display_name = nil .. "X",' }, "^tiers/x%.lua:3: attempt to concatenate" },
    { "an endless loop", { [1] = 'while true do end return {' }, "^tiers/x%.lua:1: .*instruction budget" },
    { "an unknown top-level field", { [7] = '  colour = "red",' }, "^tiers/x%.lua:7: unknown field 'colour'" },
    { "a limit below its range", { [4] = '  limits = {', [5] = '    memory_mb = 32,',
        [6] = '  }, tools = { "calculator", "file" }, models = { default = { provider = "a", id = "b" } },' },
      "^tiers/x%.lua:5: limits%.memory_mb must be an integer from 64 to 262144" },
    { "a fractional integer limit", { [4] = '  limits = { storage_gb = 1.5 },' },
      "^tiers/x%.lua:4: limits%.storage_gb must be an integer" },
    { "a zero cpu", { [4] = '  limits = { cpu = 0 },' }, "^tiers/x%.lua:4: limits%.cpu must be a number above 0" },
    { "a cpu Dokku would get as 0", { [4] = '  limits = { cpu = 1e-300 },' },
      "^tiers/x%.lua:4: limits%.cpu must be at least 0%.001" },
    { "a negative message quota", { [4] = '  limits = { messages_per_day = -1 },' },
      "^tiers/x%.lua:4: limits%.messages_per_day" },
    { "a string limit", { [4] = '  limits = { agents = "2" },' },
      "^tiers/x%.lua:4: limits%.agents must be an integer" },
    { "an unknown limit", { [4] = '  limits = { gpus = 1 },' }, "^tiers/x%.lua:4: limits: unknown limit 'gpus'" },
    { "a negative model budget", { [7] = '  model_budget_usd = -1,' },
      "^tiers/x%.lua:7: model_budget_usd must be a number of USD from 0 to 1000000" },
    { "a model budget as text", { [7] = '  model_budget_usd = "15",' },
      "^tiers/x%.lua:7: model_budget_usd must be a number" },
    { "an agent tool the tier does not grant",
      { [10] = '    { name = "helper", display_name = "H", role = "R", tools = { "shell" }, model = "default" },' },
      "^tiers/x%.lua:10: agent 'helper': tool 'shell' is not granted" },
    { "an agent model the tier does not declare",
      { [9] = '    { name = "assistant", display_name = "A", role = "R", tools = {}, model = "gpt" },' },
      "^tiers/x%.lua:9: agent 'assistant': model 'gpt' is not one of the tier's models" },
    { "an unknown agent field",
      { [10] = '    { name = "helper", display_name = "H", role = "R", tools = {}, model = "default", x = 1 },' },
      "^tiers/x%.lua:10: agent 'helper': unknown field 'x'" },
    { "an agent without a role",
      { [10] = '    { name = "helper", display_name = "H", tools = {}, model = "default" },' },
      "^tiers/x%.lua:10: agent 'helper': role must be" },
    { "an invalid agent name",
      { [10] = '    { name = "Helper!", display_name = "H", role = "R", tools = {}, model = "default" },' },
      "^tiers/x%.lua:8: agents%[2%]%.name must be" },
    { "a duplicate agent",
      { [10] = '    { name = "assistant", display_name = "H", role = "R", tools = {}, model = "default",'
          .. ' rooms = { "lobby" } },' },
      "^tiers/x%.lua:9: duplicate agent 'assistant'" },
    { "no agents", { [8] = '  agents = {', [9] = false, [10] = false },
      "^tiers/x%.lua:8: agents must list at least one" },
    { "more agents than limits.agents", { [4] = '  limits = { agents = 1 },' },
      "^tiers/x%.lua:4: tier has 2 agents but limits%.agents is 1" },
    { "a model without an id", { [6] = '  models = { default = { provider = "anthropic" } },' },
      "^tiers/x%.lua:6: models%.default%.id must be" },
    { "an unknown model field", { [6] = '  models = { default = { provider = "a", id = "b", key = "sk-1" } },' },
      "^tiers/x%.lua:6: models%.default: unknown field 'key'" },
    { "a non-boolean flag", { [7] = '  flags = { matrix = "yes" },' },
      "^tiers/x%.lua:7: flags%.matrix must be true or false" },
    { "an unknown flag", { [7] = '  flags = { billing = true },' }, "^tiers/x%.lua:7: flags: unknown flag 'billing'" },
    { "a duplicate tool", { [5] = '  tools = { "file", "file" },' }, "^tiers/x%.lua:5: tools: duplicate tool 'file'" },
    { "an invalid tool name", { [5] = '  tools = { "rm -rf" },' }, "^tiers/x%.lua:5: tools: invalid tool name" },
    { "a missing display name", { [3] = false }, "^tiers/x%.lua:1: display_name is required" },
    { "a non-string display name", { [3] = '  display_name = 42,' }, "^tiers/x%.lua:3: display_name must be" },
    { "a NUL in a role",
      { [10] = '    { name = "helper", display_name = "H", role = "a\\0b", tools = {}, model = "default" },' },
      "^tiers/x%.lua:10: agent 'helper': role must be" },
    { "a file that returns no table", { [1] = 'do return 42 end return {' },
      "^tiers/x%.lua:1: a tier file must return a table" },
    { "a missing name", { [2] = false }, "^tiers/x%.lua:1: name is required" },
    -- MindRoom's config model (issue 14 item 3)
    { "a tool MindRoom's registry does not have", { [5] = '  tools = { "calculator", "file", "web_search" },' },
      "^tiers/x%.lua:5: tools: unknown tool 'web_search' %(not in MindRoom's tool registry" },
    { "a provider MindRoom does not support", { [6] = '  models = { default = { provider = "acme", id = "m1" } },' },
      "^tiers/x%.lua:6: models%.default%.provider 'acme' is not a provider MindRoom supports" },
    { "an agent in no room",
      { [10] = '    { name = "helper", display_name = "H", role = "R", tools = {}, model = "default", rooms = {} },' },
      "^tiers/x%.lua:10: agent 'helper': rooms must list at least one room it joins" },
    { "an agent without rooms",
      { [10] = '    { name = "helper", display_name = "H", role = "R", tools = {}, model = "default" },' },
      "^tiers/x%.lua:10: agent 'helper': rooms must list at least one room it joins" },
    { "an agent room the tier does not define",
      { [10] = '    { name = "helper", display_name = "H", role = "R", tools = {}, model = "default",'
          .. ' rooms = { "dev" } },' },
      "^tiers/x%.lua:10: agent 'helper': room 'dev' is not one of the tier's rooms" },
    { "a router model the tier does not declare", { [7] = '  router = { model = "big" },' },
      "^tiers/x%.lua:7: router%.model 'big' is not one of the tier's models" },
    { "no default model and no router", { [6] = '  models = { fast = { provider = "anthropic", id = "m1" } },' },
      "^tiers/x%.lua:%d+: router%.model 'default' is not one of the tier's models" },
    { "memory that needs keys the instance lacks", { [7] = '  memory = { backend = "mem0" },' },
      "^tiers/x%.lua:7: memory%.backend 'mem0' must be file or none" },
    { "an invalid room key",
      { [5] = '  tools = { "file" }, rooms = { ["Lob by"] = { display_name = "L", description = "D" } },' },
      "^tiers/x%.lua:5: rooms: invalid room key 'Lob by'" },
    { "a room without a description", { [5] = '  tools = { "file" }, rooms = { lobby = { display_name = "L" } },' },
      "^tiers/x%.lua:5: rooms%.lobby%.description must be" },
    { "an invalid name", { [2] = '  name = "X Tier",' }, "^tiers/x%.lua:2: name must be" },
  }

  for _, c in ipairs(cases) do
    it(c[1], function()
      local t, err = load_one(source(c[2]))
      assert.is_nil(t)
      assert.matches(c[3], err)
    end)
  end

  it("a name that does not match the file name", function()
    local t, err = load_one(source(), "y")
    assert.is_nil(t)
    assert.equal("tiers/y.lua:2: name 'x' does not match the file name 'y.lua'", err)
  end)

  it("reports the first broken file in sorted order", function()
    local files = {
      ["tiers/b.lua"] = source({ [2] = '  name = "b",', [3] = '  display_name = 1,' }),
      ["tiers/a.lua"] = source({ [2] = '  name = "a",', [5] = '  tools = {' }),
      ["tiers/c.lua"] = source({ [2] = '  name = "c",', [1] = 'error("boom") return {' }),
    }
    for _ = 1, 5 do
      local _, err = load_files(files)
      assert.matches("^tiers/a%.lua:%d+: ", err)
    end
    files["tiers/a.lua"] = source({ [2] = '  name = "a",' })
    local _, err = load_files(files)
    assert.matches("^tiers/b%.lua:3: display_name must be", err)
  end)

  it("a file that cannot be read", function()
    local fs = helper.memfs({ ["tiers/x.lua"] = source() })
    fs.read = function(path) return nil, path .. ": Permission denied" end
    local t, err = tiers.load_dir("tiers/", fs)
    assert.is_nil(t)
    assert.equal("tiers/x.lua:1: cannot read: tiers/x.lua: Permission denied", err)
  end)
end)

describe("tier extends", function()
  local parent = source({ [2] = '  name = "base",', [7] = '  flags = { matrix = true },' })

  local function child(lines)
    return table.concat(lines, "\n") .. "\n"
  end

  it("inherits what the child leaves out and appends add_agents and add_tools", function()
    local t = assert(load_files({
      ["tiers/base.lua"] = parent,
      ["tiers/x.lua"] = child({
        'return {',
        '  name = "x", display_name = "Child", extends = "base",',
        '  add_tools = { "shell" },',
        '  add_agents = {',
        '    { name = "coder", display_name = "C", role = "Codes.", tools = { "shell" }, model = "default",',
        '      rooms = { "lobby" } },',
        '  },',
        '  limits = { memory_mb = 512, agents = 3 },',
        '}',
      }),
    }))
    local x = t.x
    assert.equal("base", x.extends)
    assert.equal("Child", x.display_name)
    assert.same({ "calculator", "file", "shell" }, x.tools)
    assert.same({ "assistant", "helper", "coder" }, names_of(x.agents))
    assert.same(t.base.models, x.models)
    assert.same(t.base.flags, x.flags)
    -- limits come whole from the child: what it leaves out is unlimited, not inherited.
    assert.same({ memory_mb = 512, agents = 3 }, x.limits)
    -- the parent is untouched
    assert.same({ "calculator", "file" }, t.base.tools)
    assert.equal(2, #t.base.agents)
    assert.are_not.equal(t.base.agents[1], x.agents[1])
  end)

  it("replaces a whole field the child sets", function()
    local t = assert(load_files({
      ["tiers/base.lua"] = parent,
      ["tiers/x.lua"] = child({
        'return {',
        '  name = "x", display_name = "Child", extends = "base",',
        '  tools = { "python" },',
        '  agents = { { name = "solo", display_name = "S", role = "R", tools = { "python" }, model = "big",',
        '    rooms = { "lobby" } } },',
        '  models = { big = { provider = "openai", id = "gpt-4.1" } }, router = { model = "big" },',
        '}',
      }),
    }))
    assert.same({ "python" }, t.x.tools)
    assert.same({ "solo" }, names_of(t.x.agents))
    assert.same({ big = { provider = "openai", id = "gpt-4.1" } }, t.x.models)
    assert.same(t.base.limits, t.x.limits)
  end)

  it("follows chains in any file order", function()
    local t = assert(load_files({
      ["tiers/a.lua"] = child({ 'return { name = "a", display_name = "A", extends = "b",',
        'add_tools = { "github" } }' }),
      ["tiers/b.lua"] = child({ 'return { name = "b", display_name = "B", extends = "base" }' }),
      ["tiers/base.lua"] = parent,
    }))
    assert.same({ "calculator", "file", "github" }, t.a.tools)
    assert.equal("b", t.a.extends)
  end)

  it("refuses an unknown parent at the extends line", function()
    local _, err = load_files({
      ["tiers/x.lua"] = child({ 'return {', '  name = "x", display_name = "X",', '  extends = "nope",', '}' }),
    })
    assert.equal("tiers/x.lua:3: extends unknown tier 'nope'", err)
  end)

  it("refuses a cycle", function()
    local _, err = load_files({
      ["tiers/a.lua"] = child({ 'return {', '  name = "a", display_name = "A",', '  extends = "b",', '}' }),
      ["tiers/b.lua"] = child({ 'return {', '  name = "b", display_name = "B",', '', '  extends = "a",', '}' }),
    })
    assert.equal("tiers/b.lua:4: extends cycle: a -> b -> a", err)
  end)

  it("refuses a tier that extends itself", function()
    local _, err = load_files({
      ["tiers/a.lua"] = child({ 'return {', '  name = "a", display_name = "A", extends = "a",', '}' }),
    })
    assert.equal("tiers/a.lua:2: extends cycle: a -> a", err)
  end)

  it("reports a broken parent before its child", function()
    local _, err = load_files({
      ["tiers/a.lua"] = child({ 'return { name = "a", display_name = "A", extends = "z" }' }),
      ["tiers/z.lua"] = source({ [2] = '  name = "z",', [4] = '  limits = { cpu = 100 },' }),
    })
    assert.matches("^tiers/z%.lua:4: limits%.cpu", err)
  end)

  it("checks added agents against the merged tools", function()
    local _, err = load_files({
      ["tiers/base.lua"] = parent,
      ["tiers/x.lua"] = child({
        'return {',
        '  name = "x", display_name = "X", extends = "base",',
        '  add_agents = {',
        '    { name = "coder", display_name = "C", role = "R", tools = { "shell" }, model = "default" },',
        '  },',
        '}',
      }),
    })
    assert.equal("tiers/x.lua:4: agent 'coder': tool 'shell' is not granted by the tier's tools", err)
  end)

  it("refuses add_tools that repeat an inherited tool", function()
    local _, err = load_files({
      ["tiers/base.lua"] = parent,
      ["tiers/x.lua"] = child({ 'return {', '  name = "x", display_name = "X", extends = "base",',
        '  add_tools = { "file" },', '}' }),
    })
    assert.equal("tiers/x.lua:3: add_tools: duplicate tool 'file'", err)
  end)
end)

describe("tiers.describe", function()
  local t

  setup(function()
    t = helper.shipped_tiers()
  end)

  it("shows unlimited limits as JSON null", function()
    local d = tiers.describe(t.enterprise)
    assert.equal(cjson.null, d.limits.messages_per_day)
    assert.equal(cjson.null, d.limits.agents)
    assert.equal(8192, d.limits.memory_mb)
    local back = cjson.decode(json.encode(d))
    assert.equal(cjson.null, back.limits.messages_per_day)
    assert.matches('"messages_per_day":null', json.encode(d))
    assert.matches('"messages_per_day":null', cjson.encode(d))
  end)

  it("lists name, display name, agents, tools, models and flags", function()
    local d = tiers.describe(t.starter)
    assert.equal("starter", d.name)
    assert.equal("Starter", d.display_name)
    assert.equal("free", d.extends)
    assert.equal(cjson.null, tiers.describe(t.free).extends)
    assert.same(t.starter.tools, d.tools)
    assert.same(t.starter.models, d.models)
    assert.same({ custom_domains = false, matrix = true, custom_limits = false }, d.flags)
    assert.same({ memory_mb = 512, cpu = 0.5, storage_gb = 5, agents = 3, messages_per_day = 500 }, d.limits)
    assert.equal(3, #d.agents)
    local a = d.agents[1]
    assert.same({ "display_name", "model", "name", "role", "tools" }, tiers.names(a))
  end)

  it("keeps an agent without tools a JSON list", function()
    local loaded = assert(load_one(source({
      [10] = '    { name = "helper", display_name = "H", role = "R", tools = {}, model = "default",'
        .. ' rooms = { "lobby" } },',
    })))
    local out = json.encode(tiers.describe(loaded.x))
    assert.matches('"name":"helper","role":"R","tools":%[%]', out)
  end)

  it("hands out copies, so a caller cannot change a loaded tier", function()
    local d = tiers.describe(t.professional)
    d.tools[1] = "hacked"
    d.agents[1].tools[1] = "hacked"
    d.models.default.id = "hacked"
    assert.equal("calculator", t.professional.tools[1])
    assert.are_not.equal("hacked", t.professional.agents[1].tools[1])
    assert.equal("anthropic/claude-sonnet-4.5", t.professional.models.default.id)
  end)
end)

describe("tiers.effective_limits", function()
  local t

  setup(function()
    t = helper.shipped_tiers()
  end)

  it("keeps the tier's limits outside tiers with custom limits", function()
    local l = tiers.effective_limits(t.starter, { memory_mb = 8192, messages_per_day = cjson.null })
    assert.same(t.starter.limits, l)
    assert.are_not.equal(t.starter.limits, l)
  end)

  it("lets an enterprise request override, with null meaning unlimited", function()
    local l = tiers.effective_limits(t.enterprise, { memory_mb = 16384, messages_per_day = 5 })
    assert.same({ memory_mb = 16384, cpu = 4.0, storage_gb = 100, messages_per_day = 5 }, l)
    l = tiers.effective_limits(t.enterprise, { storage_gb = cjson.null })
    assert.is_nil(l.storage_gb)
    assert.same(t.enterprise.limits, tiers.effective_limits(t.enterprise, nil))
  end)
end)
