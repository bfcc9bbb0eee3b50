local fakes = require "fakes"
local le = require "resources.letsencrypt"

describe("resource letsencrypt", function()
  local spec = { app = "web", email = "ops@example.com" }

  it("parses letsencrypt:active, which always exits 0", function()
    assert.is_true(le.probe(fakes.runner({ ["letsencrypt:active web"] = { stdout = "true\n" } }), spec).active)
    assert.is_false(le.probe(fakes.runner({ ["letsencrypt:active web"] = { stdout = "false\n" } }), spec).active)
  end)

  it("sets the e-mail and enables only when not active (each enable re-issues)", function()
    assert.are.same({}, le.diff(spec, { active = true }))
    local cmds = le.diff(spec, { active = false })
    assert.are.same({ "letsencrypt:set", "web", "email", "ops@example.com" }, cmds[1].argv)
    assert.are.same({ "letsencrypt:enable", "web" }, cmds[2].argv)
    assert.are.equal(1, #le.diff({ app = "web" }, nil))
  end)
end)
