local fakes = require "fakes"
local ports = require "resources.ports"

describe("resource ports", function()
  local spec = { app = "mx", container_port = 8008 }

  it("reads the port map with ports:report --ports-map", function()
    local run = fakes.runner({ ["ports:report mx --ports-map"] = { stdout = "http:8008:8008\n" } })
    assert.are.same({ map = { "http:8008:8008" } }, ports.probe(run, spec))
    local empty = fakes.runner({ ["ports:report mx --ports-map"] = { stdout = "\n" } })
    assert.are.same({ map = {} }, ports.probe(empty, spec))
  end)

  it("maps host port 80 to the container port, keeping a certificate's https mapping", function()
    assert.are.same({ "ports:set", "mx", "http:80:8008" }, ports.diff(spec, { map = {} })[1].argv)
    assert.are.same({ "ports:set", "mx", "http:80:8008" }, ports.diff(spec, nil)[1].argv)
    assert.are.same({ "ports:set", "mx", "http:80:8008" },
      ports.diff(spec, { map = { "http:8008:8008" } })[1].argv)
    assert.are.same({ "ports:set", "mx", "http:80:8008", "https:443:8008" },
      ports.diff(spec, { map = { "http:80:5000", "https:443:5000" } })[1].argv)
    assert.are.same({}, ports.diff(spec, { map = { "http:80:8008" } }))
    assert.are.same({}, ports.diff(spec, { map = { "https:443:8008", "http:80:8008" } }))
    assert.are.same({ map = { "http:80:8008" } }, ports.model(spec, { map = {} }))
  end)
end)
