local fakes = require "fakes"
local limits = require "resources.limits"

describe("resource limits", function()
  local spec = { app = "web", memory_mb = 512, cpu = 0.5 }

  it("reads the default process type's limits from the JSON report", function()
    local run = fakes.runner({ ["resource:report web --format json"] = {
      stdout = '{"resource-_default_.limit.memory":"512m","resource-_default_.limit.cpu":"0.5",'
        .. '"resource-web.limit.memory":"1g"}' } })
    assert.are.same({ memory = "512m", cpu = "0.5" }, limits.probe(run, spec))
  end)

  it("sets memory and cpu when either differs", function()
    assert.are.same({}, limits.diff(spec, { memory = "512m", cpu = "0.5" }))
    local cmd = limits.diff(spec, { memory = "256m", cpu = "0.5" })[1]
    assert.are.same({ "resource:limit", "--memory", "512m", "--cpu", "0.5", "web" }, cmd.argv)
    assert.are.same({ "resource:limit", "--memory", "8192m", "--cpu", "4", "web" },
      limits.diff({ app = "web", memory_mb = 8192, cpu = 4.0 }, nil)[1].argv)
    assert.are.same({ "resource:limit", "--memory", "256m", "--cpu", "0.25", "web" },
      limits.diff({ app = "web", memory_mb = 256, cpu = 0.25 }, nil)[1].argv)
  end)

  it("clears a limit the desired state no longer has (Dokku's value `clear`)", function()
    local cmd = limits.diff({ app = "web" }, { memory = "512m", cpu = "0.5" })[1]
    assert.are.same({ "resource:limit", "--memory", "clear", "--cpu", "clear", "web" }, cmd.argv)
    assert.is_true(cmd.restart)
    assert.are.same({ "resource:limit", "--memory", "512m", "--cpu", "clear", "web" },
      limits.diff({ app = "web", memory_mb = 512 }, { memory = "512m", cpu = "0.5" })[1].argv)
    assert.are.same({}, limits.diff({ app = "web" }, {}))
    assert.are.same({}, limits.model({ app = "web" }))
  end)

  it("never sends a cpu limit that formats to 0 (Docker: no limit)", function()
    assert.has_error(function() limits.diff({ app = "web", memory_mb = 512, cpu = 1e-300 }, {}) end)
  end)
end)
