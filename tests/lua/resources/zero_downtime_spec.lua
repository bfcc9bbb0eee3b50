local fakes = require "fakes"
local checks = require "resources.zero_downtime"

describe("resource zero_downtime (issue 14: one container at a time on exclusive storage)", function()
  it("is planned only for apps with seed_config or exclusive_storage", function()
    assert.are.same({}, checks.specs({ name = "web", image = "x:1" }))
    assert.are.same({}, checks.specs({ name = "web", absent = true, exclusive_storage = true }))
    assert.are.equal(1, #checks.specs({ name = "web", exclusive_storage = true }))
    local s = checks.specs({ name = "web", seed_config = { content = "a: 1\n" } })[1]
    assert.are.same({ app = "web", disabled = "_all_" }, s.spec)
  end)

  it("disables zero downtime once; nothing when already disabled", function()
    local spec = { app = "web", disabled = "_all_" }
    local run = fakes.runner({ ["checks:report web --checks-disabled-list"] = { stdout = "none\n" } })
    local cur = checks.probe(run, spec)
    assert.are.same({ disabled = "none" }, cur)
    local cmds = checks.diff(spec, cur)
    assert.are.same({ "checks:disable", "web" }, cmds[1].argv)
    assert.is_falsy(cmds[1].restart)
    assert.are.same({}, checks.diff(spec, checks.model(spec)))
    local gone = fakes.runner({ ["checks:report web --checks-disabled-list"] = { exit = 20, stderr = "no app" } })
    assert.is_falsy(checks.probe(gone, spec))
  end)
end)
