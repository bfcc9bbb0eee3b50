local fakes = require "fakes"
local config = require "resources.config"

describe("resource config", function()
  local spec = { app = "web", env = { A = "1", SECRET = "hunter2", B = "x y" }, secret_keys = { SECRET = true } }

  it("probes config:export --format json into digests", function()
    local run = fakes.runner({ ["config:export --format json web"] = { stdout = '{"A":"1","DATABASE_URL":"pg://"}' } })
    local cur = config.probe(run, spec)
    assert.are.equal("digest(1)", cur.env.A)
    assert.are.equal("digest(pg://)", cur.env.DATABASE_URL)
    local bad = fakes.runner({ ["config:export --format json web"] = { stdout = "not json" } })
    assert.is_nil((config.probe(bad, spec)))
  end)

  it("fails the probe, without raising, on values that are not strings (found by fuzz_dokku_output)", function()
    for _, out in ipairs({ '{"A":{}}', '{"A":null}', '{"A":1}', '[1]' }) do
      local run = fakes.runner({ ["config:export --format json web"] = { stdout = out } })
      local cur, err = config.probe(run, spec)
      assert.is_nil(cur)
      assert.matches("expected an object of strings", err)
    end
  end)

  it("sets only changed keys, sorted, base64-encoded, without restarting, no value in the display", function()
    local cur = { env = { A = "digest(1)" } }
    local cmds = config.diff(spec, cur)
    assert.are.equal(1, #cmds)
    local cmd = cmds[1]
    assert.are.same({ "config:set", "--encoded", "--no-restart", "web", "B=" .. fakes.base64("x y"),
                      "SECRET=" .. fakes.base64("hunter2") }, cmd.argv)
    -- issue 12 item 2: every value is shown as [set], not only known secrets
    assert.are.equal("dokku --quiet config:set --encoded --no-restart web B=[set] SECRET=[REDACTED]", cmd.display)
    assert.is_nil(cmd.display:find("hunter2", 1, true))
    assert.is_nil(cmd.display:find(fakes.base64("x y"), 1, true))
    assert.is_true(cmd.restart)
  end)

  it("splits a large change into config:set commands of at most 32 KiB each (issue 12 item 18)", function()
    local env = {}
    for i = 1, 24 do
      env[("K%02d"):format(i)] = string.rep(string.char(64 + i), 16 * 1024) -- 21848 bytes in base64
    end
    local cmds = config.diff({ app = "web", env = env }, nil)
    assert.are.equal(32 * 1024, config.MAX_COMMAND)
    assert.are.equal(24, #cmds, "one value of 21.8 KB in base64 per command of 32 KiB")
    -- smaller values share a command
    local small = {}
    for i = 1, 40 do
      small[("S%02d"):format(i)] = string.rep("s", 1000)
    end
    local n = #config.diff({ app = "web", env = small }, nil)
    assert.is_true(n >= 2 and n <= 3, n .. " commands for 40 values of 1000 bytes")
    local sent = {}
    for _, c in ipairs(cmds) do
      local line = "dokku --quiet " .. table.concat(c.argv, " ")
      assert.is_true(#line <= config.MAX_COMMAND, #line .. " bytes")
      assert.are.same({ "config:set", "--encoded", "--no-restart", "web" }, { table.unpack(c.argv, 1, 4) })
      assert.is_true(c.restart) -- each --no-restart; the engine restarts the app once after the last
      for i = 5, #c.argv do
        local k, v = c.argv[i]:match("^([^=]+)=(.*)$")
        assert.is_nil(sent[k])
        sent[k] = fakes.unbase64(v)
        assert.is_truthy(c.display:find(k .. "=[set]", 1, true))
      end
    end
    assert.are.same(env, sent)
  end)

  it("is in sync with the form Dokku 0.38 stores a number in (godotenv: 007 → 7), not re-setting it", function()
    local s = { app = "web", env = { ACCOUNT = "007", N = "5" } }
    assert.are.same({}, config.diff(s, { env = { ACCOUNT = "digest(7)", N = "digest(5)" } }))
    assert.are.same({}, config.diff(s, { env = { ACCOUNT = "digest(007)", N = "digest(5)" } }))
    assert.are.equal(1, #config.diff(s, { env = { ACCOUNT = "digest(8)", N = "digest(5)" } }))
  end)

  it("is in sync when every digest matches, and the model keeps keys it does not own", function()
    local cur = { env = { A = "digest(1)", B = "digest(x y)", SECRET = "digest(hunter2)", OTHER = "d" } }
    assert.are.same({}, config.diff(spec, cur))
    local m = config.model(spec, { env = { OTHER = "d" } })
    assert.are.equal("d", m.env.OTHER)
    assert.are.equal("digest(hunter2)", m.env.SECRET)
  end)

  it("unsets owned keys the desired state no longer has, leaving the others", function()
    local sp = { app = "mx", env = { SYNAPSE_SERVER_NAME = "m" }, owned_prefixes = { "TUWUNEL_", "SYNAPSE_" } }
    local cur = { env = { TUWUNEL_SERVER_NAME = "digest(m)", TUWUNEL_DATABASE_PATH = "digest(/x)",
                          DATABASE_URL = "digest(pg://)", SYNAPSE_SERVER_NAME = "digest(m)" } }
    local cmds = config.diff(sp, cur)
    assert.are.equal(1, #cmds)
    assert.are.same({ "config:unset", "--no-restart", "mx", "TUWUNEL_DATABASE_PATH", "TUWUNEL_SERVER_NAME" },
      cmds[1].argv)
    assert.is_true(cmds[1].restart)
    local m = config.model(sp, cur)
    assert.is_nil(m.env.TUWUNEL_SERVER_NAME)
    assert.are.equal("digest(pg://)", m.env.DATABASE_URL)
    assert.are.same({}, config.diff(sp, m))
    -- without owned prefixes nothing is ever unset
    assert.are.same({}, config.diff({ app = "mx", env = { SYNAPSE_SERVER_NAME = "m" } }, cur))
  end)

  it("never unsets a kept key it was not given (set once, not stored: the instance's OpenRouter key)", function()
    local sp = { app = "mr", env = { A = "1" }, owned_prefixes = { "OPENROUTER_API_KEY" },
                 kept_keys = { OPENROUTER_API_KEY = true } }
    local cur = { env = { A = "digest(1)", OPENROUTER_API_KEY = "digest(sk-or-v1-x)" } }
    assert.are.same({}, config.diff(sp, cur))
    assert.are.equal("digest(sk-or-v1-x)", config.model(sp, cur).env.OPENROUTER_API_KEY)
    -- given a new value, it is set (and shown redacted when secret)
    sp.env.OPENROUTER_API_KEY, sp.secret_keys = "sk-or-v1-y", { OPENROUTER_API_KEY = true }
    local cmds = config.diff(sp, cur)
    assert.are.equal(1, #cmds)
    assert.is_truthy(cmds[1].display:find("OPENROUTER_API_KEY=[REDACTED]", 1, true))
    -- without kept_keys the owned key would go
    assert.are.equal("config:unset", config.diff({ app = "mr", env = { A = "1" },
      owned_prefixes = { "OPENROUTER_API_KEY" } }, cur)[1].argv[1])
  end)
end)
