-- lua/resources/lib/converge_config.py, run for real with the system python3
-- (+ PyYAML, scripts/install-deps.sh): what mrprov owns in config.yaml and
-- what the customer keeps (issue 14 item 2).
local lyaml = require "lyaml"

local SCRIPT = "lua/resources/lib/converge_config.py"

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local read = require("helper").read_file

local function run(dir, extra)
  local p = assert(io.popen(("python3 %s --template %s --config %s %s 2>&1"):format(SCRIPT, q(dir .. "/tpl.yaml"),
    q(dir .. "/data/config/config.yaml"), extra or ""), "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

local function config(dir)
  return lyaml.load(assert(read(dir .. "/data/config/config.yaml")))
end

local TIER_A = [[
agents:
  general: {display_name: General, model: default}
  research: {display_name: Research, model: default}
models:
  default: {provider: openrouter, id: a/small}
router: {model: default}
defaults: {tools: [scheduler]}
]]

local TIER_B = [[
agents:
  general: {display_name: General, model: default, tools: [calculator]}
models:
  default: {provider: openrouter, id: a/large}
router: {model: default}
memory: {backend: file}
]]

describe("converge_config.py", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir)))
  end)
  after_each(function()
    os.execute("rm -rf " .. q(dir))
  end)

  it("seeds a missing config from the template, mode 0600, byte for byte", function()
    write(dir .. "/tpl.yaml", TIER_A)
    local code, out = run(dir)
    assert.are.equal(0, code, out)
    assert.are.equal(TIER_A, read(dir .. "/data/config/config.yaml"))
    local p = io.popen("stat -c %a " .. q(dir .. "/data/config/config.yaml"))
    assert.are.equal("600", p:read("l"))
    p:close()
    assert.is_truthy(read(dir .. "/data/config/.mrprov-owned.json"))
  end)

  it("on a tier change sets mrprov's parts, removes what it no longer writes, keeps the customer's", function()
    write(dir .. "/tpl.yaml", TIER_A)
    assert.are.equal(0, (run(dir)))
    -- dashboard edits: a customer agent, a section mrprov never writes, a
    -- change inside a whole section mrprov owns (defaults)
    local c = config(dir)
    c.agents.mine = { display_name = "Mine", model = "default" }
    c.timezone = "Europe/Berlin"
    c.authorization = { global_users = { "@me:example.com" } }
    write(dir .. "/data/config/config.yaml", lyaml.dump({ c }))
    write(dir .. "/tpl.yaml", TIER_B)
    local code, out = run(dir)
    assert.are.equal(0, code, out)
    c = config(dir)
    assert.are.same({ "calculator" }, c.agents.general.tools) -- owned entry updated
    assert.is_nil(c.agents.research) -- owned entry no longer written: gone
    assert.are.same({ display_name = "Mine", model = "default" }, c.agents.mine) -- customer's agent kept
    assert.are.equal("a/large", c.models.default.id)
    assert.are.same({ backend = "file" }, c.memory) -- new whole section
    assert.is_nil(c.defaults) -- whole section no longer written: gone
    assert.are.equal("Europe/Berlin", c.timezone) -- never mrprov's: kept
    assert.are.same({ global_users = { "@me:example.com" } }, c.authorization)
    local p = io.popen("stat -c %a " .. q(dir .. "/data/config/config.yaml"))
    assert.are.equal("600", p:read("l"))
    p:close()
  end)

  it("leaves an unchanged config file untouched (no rewrite on every start)", function()
    write(dir .. "/tpl.yaml", TIER_A)
    assert.are.equal(0, (run(dir)))
    local c = config(dir)
    c.timezone = "UTC"
    local text = "# the customer's comment\n" .. lyaml.dump({ c })
    write(dir .. "/data/config/config.yaml", text)
    assert.are.equal(0, (run(dir)))
    assert.are.equal(text, read(dir .. "/data/config/config.yaml"))
  end)

  it("leaves a config that is not YAML alone, and still starts the command", function()
    write(dir .. "/tpl.yaml", TIER_A)
    assert(os.execute("mkdir -p " .. q(dir .. "/data/config")))
    write(dir .. "/data/config/config.yaml", "agents: [unclosed\n")
    local code, out = run(dir, "-- /bin/echo started")
    assert.are.equal(0, code, out)
    assert.matches("not valid YAML", out)
    assert.matches("started", out)
    assert.are.equal("agents: [unclosed\n", read(dir .. "/data/config/config.yaml"))
  end)

  it("execs the command after converging", function()
    write(dir .. "/tpl.yaml", TIER_A)
    local code, out = run(dir, "-- /bin/sh -c " .. q("test -f " .. dir .. "/data/config/config.yaml && echo ran"))
    assert.are.equal(0, code, out)
    assert.matches("ran\n", out)
  end)
end)
