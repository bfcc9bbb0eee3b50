local fakes = require "fakes"
local domains = require "resources.domains"

describe("resource domains", function()
  local spec = { app = "web", domains = { "a.example.com", "b.example.com" } }

  it("reads the app's vhosts", function()
    local run = fakes.runner({
      ["domains:report web --domains-app-vhosts"] = { stdout = "b.example.com a.example.com  \n" },
    })
    assert.are.same({ "b.example.com", "a.example.com" }, domains.probe(run, spec).domains)
  end)

  it("sets the list when it differs, in any order counts as the same", function()
    assert.are.same({}, domains.diff(spec, { domains = { "b.example.com", "a.example.com" } }))
    assert.are.same({ "domains:set", "web", "a.example.com", "b.example.com" },
      domains.diff(spec, { domains = { "a.example.com" } })[1].argv)
  end)
end)
