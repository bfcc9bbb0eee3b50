local fakes = require "fakes"
local service = require "resources.service"

describe("resource service", function()
  it("probes <kind>:exists", function()
    local run = fakes.runner({
      ["postgres:exists db"] = { stdout = "-----> Service db exists" },
      ["redis:exists r"] = { exit = 1, stderr = " !     Redis service r does not exist" },
      ["redis:exists x"] = { exit = 1, stderr = " !     docker: permission denied" },
    })
    assert.is_true(service.probe(run, { kind = "postgres", name = "db" }).exists)
    assert.is_false(service.probe(run, { kind = "redis", name = "r" }).exists)
    assert.is_nil((service.probe(run, { kind = "redis", name = "x" })))
  end)

  it("creates when missing; destroys with -f as the second argument", function()
    assert.are.same({ "redis:create", "r" }, service.diff({ kind = "redis", name = "r" }, nil)[1].argv)
    assert.are.same({}, service.diff({ kind = "redis", name = "r" }, { exists = true }))
    assert.are.same({ "postgres:destroy", "db", "-f" }, service.undo({ kind = "postgres", name = "db" })[1].argv)
  end)
end)
