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

  it("sets only changed keys, sorted, base64-encoded, without restarting, secrets redacted in display", function()
    local cur = { env = { A = "digest(1)" } }
    local cmd = config.diff(spec, cur)[1]
    assert.are.same({ "config:set", "--encoded", "--no-restart", "web", "B=" .. fakes.base64("x y"),
                      "SECRET=" .. fakes.base64("hunter2") }, cmd.argv)
    assert.are.equal("dokku --quiet config:set --encoded --no-restart web B=" .. fakes.base64("x y")
      .. " SECRET=[REDACTED]", cmd.display)
    assert.is_nil(cmd.display:find("hunter2", 1, true))
    assert.is_true(cmd.restart)
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
end)

