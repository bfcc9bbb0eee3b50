-- Specs for lua/placement.lua: least-loaded-with-room, labels, drains,
-- unreachable hosts, and a refusal that names what each host lacks.
local placement = require "placement"

-- A hosts.view-like entry: capacity, used, free (from capacity - used).
local function host(name, capacity, used, extra)
  used = used or {}
  local u = { instances = used.instances or 0, memory_mb = used.memory_mb or 0, cpu = used.cpu or 0 }
  local free = {}
  for k, v in pairs(capacity or {}) do free[k] = v - (u[k] or 0) end
  local h = { name = name, capacity = capacity or {}, used = u, free = free, labels = {}, draining = false,
              healthy = true }
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local FREE = { memory_mb = 256, cpu = 0.25, instances = 1 }

describe("placement.choose", function()
  it("picks the host whose fullest declared resource is least full, then the fewest instances, then the name",
    function()
      local cap = { memory_mb = 1024, instances = 10 }
      assert.are.equal("b", placement.choose({ need = FREE, hosts = {
        host("a", cap, { memory_mb = 512, instances = 2 }), host("b", cap, { memory_mb = 256, instances = 1 }) } }))
      -- memory is what is fuller on a, instances on b: b's worst share is lower
      assert.are.equal("b", placement.choose({ need = FREE, hosts = {
        host("a", cap, { memory_mb = 768, instances = 1 }), host("b", cap, { memory_mb = 0, instances = 5 }) } }))
      assert.are.equal("a", placement.choose({ need = FREE, hosts = { host("b", cap), host("a", cap) } }))
      -- hosts without a declared capacity: the one with fewer instances
      assert.are.equal("y", placement.choose({ need = FREE, hosts = {
        host("x", nil, { instances = 3 }), host("y", nil, { instances = 2 }) } }))
    end)

  it("spreads a run of placements evenly over equal hosts", function()
    local hosts = { host("h1", { instances = 4 }), host("h2", { instances = 4 }), host("h3", { instances = 4 }) }
    local count = {}
    for _ = 1, 12 do
      local name = assert(placement.choose({ need = FREE, hosts = hosts }))
      count[name] = (count[name] or 0) + 1
      for _, h in ipairs(hosts) do
        if h.name == name then
          h.used.instances = h.used.instances + 1
          h.free.instances = h.free.instances - 1
        end
      end
    end
    assert.same({ h1 = 4, h2 = 4, h3 = 4 }, count)
    local none, why = placement.choose({ need = FREE, hosts = hosts })
    assert.is_nil(none)
    assert.matches("h1: instances: 1 needed, 0 free of 4", why, 1, true)
  end)

  it("leaves out draining and unreachable hosts and those without the required labels", function()
    local hosts = {
      host("drained", nil, nil, { draining = true }),
      host("down", nil, nil, { healthy = false, health_error = "connection refused" }),
      host("us", nil, nil, { labels = { region = "us" } }),
      host("eu", nil, { instances = 9 }, { labels = { region = "eu", dedicated = true } }),
    }
    assert.are.equal("eu", placement.choose({ need = FREE, hosts = hosts, labels = { region = "eu" } }))
    assert.are.equal("us", placement.choose({ need = FREE, hosts = hosts }))
    local none, why = placement.choose({ need = FREE, hosts = hosts, labels = { region = "ap" } })
    assert.is_nil(none)
    assert.matches("drained: draining", why, 1, true)
    assert.matches("down: unreachable (connection refused)", why, 1, true)
    assert.matches("us: label region=ap wanted, the host has us", why, 1, true)
  end)

  it("refuses when the instance's limits do not fit, naming the resource, what is needed and what is free", function()
    local none, why = placement.choose({ need = { memory_mb = 8192, cpu = 4, instances = 1 },
      hosts = { host("a", { memory_mb = 4096, cpu = 8 }, { memory_mb = 1024 }) } })
    assert.is_nil(none)
    assert.are.equal("no Dokku host has room for this instance: a: memory_mb: 8192 needed, 3072 free of 4096", why)
    -- an unlimited instance fits only where that resource is not bounded
    none, why = placement.choose({ need = { instances = 1 }, hosts = { host("a", { cpu = 8 }) } })
    assert.is_nil(none)
    assert.matches("cpu: the instance's is unlimited", why, 1, true)
    assert.are.equal("b", placement.choose({ need = { instances = 1 }, hosts = { host("a", { cpu = 8 }), host("b") } }))
  end)

  it("takes the tier's labels with the hook's over them", function()
    assert.same({ region = "us", dedicated = true },
      placement.required_labels({ host_labels = { region = "eu", dedicated = true } },
        { host_labels = { region = "us" } }))
    assert.same({}, placement.required_labels({}, nil))
  end)
end)
