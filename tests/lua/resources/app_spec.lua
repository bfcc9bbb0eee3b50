local fakes = require "fakes"
local app = require "resources.app"

describe("resource app", function()
  it("probes with apps:exists: 0 exists, 20 missing, anything else is an error", function()
    local run = fakes.runner({
      ["apps:exists a"] = { exit = 0 },
      ["apps:exists b"] = { exit = 20, stderr = " !     App b does not exist" },
      ["apps:exists c"] = { exit = 1, stderr = " !     boom" },
    })
    assert.are.same({ exists = true }, app.probe(run, { name = "a" }))
    assert.are.same({ exists = false }, app.probe(run, { name = "b" }))
    local cur, err = app.probe(run, { name = "c" })
    assert.is_nil(cur)
    assert.matches("exited 1", err)
    local _, terr = app.probe(fakes.runner({ ["apps:exists d"] = "connection lost" }), { name = "d" })
    assert.are.equal("connection lost", terr)
  end)

  it("creates only when missing and destroys with --force when absent is wanted", function()
    assert.are.equal("dokku --quiet apps:create a", app.diff({ name = "a" }, { exists = false })[1].display)
    assert.are.equal(1, #app.diff({ name = "a" }, nil))
    assert.are.same({}, app.diff({ name = "a" }, { exists = true }))
    local destroy = app.diff({ name = "a", absent = true }, { exists = true })[1]
    assert.are.same({ "apps:destroy", "--force", "a" }, destroy.argv)
    assert.are.same({}, app.diff({ name = "a", absent = true }, { exists = false }))
    assert.is_true(app.undo({ name = "a" })[1].ok_exits[20])
  end)
end)
