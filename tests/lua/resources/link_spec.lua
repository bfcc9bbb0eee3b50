local fakes = require "fakes"
local link = require "resources.link"

describe("resource link", function()
  local spec = { kind = "postgres", service = "db", app = "web" }

  it("probes <kind>:linked", function()
    local run = fakes.runner({ ["postgres:linked db web"] = { stdout = "-----> Service db is linked to web" } })
    assert.is_true(link.probe(run, spec).linked)
    local run2 = fakes.runner({ ["postgres:linked db web"] = { exit = 1, stderr = " !     Service db is not linked" } })
    assert.is_false(link.probe(run2, spec).linked)
  end)

  it("links with --no-restart (never -n) only when not linked", function()
    local cmds = link.diff(spec, { linked = false })
    assert.are.same({ "postgres:link", "db", "web", "--no-restart" }, cmds[1].argv)
    assert.is_true(cmds[1].restart)
    assert.are.same({}, link.diff(spec, { linked = true }))
    assert.are.same({ "postgres:unlink", "db", "web", "--no-restart" }, link.undo(spec)[1].argv)
  end)
end)
