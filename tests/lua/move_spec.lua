-- lua/move.lua's pure parts (the target's state before the switch, the
-- build context that carries a storage archive) and what a move holds
-- while it runs (lua/host_usage.lua: the instance counts against its
-- target too; move.moving_out), on the real store binding in memory.
local memstore = require "memstore"
local sdescribe = memstore.describer(describe, pending)
memstore.install()

describe("move.unserved", function()
  it("drops domains and TLS from every app, keeps the rest, leaves the state as it was", function()
    local move = require "move"
    local state = {
      app = "a", services = { { kind = "postgres", name = "a-db" } },
      apps = {
        { name = "a", role = "main" },
        { name = "a-backend", domains = { "api.a.example.com" }, letsencrypt = { email = "ops@example.com" },
          storage = { dir = "a", host_path = "/srv/a", container_path = "/app/data" }, image = "img:1" },
      },
    }
    local u = move.unserved(state)
    assert.is_nil(u.apps[2].domains)
    assert.is_nil(u.apps[2].letsencrypt)
    assert.are.equal("/app/data", u.apps[2].storage.container_path)
    assert.are.equal("img:1", u.apps[2].image)
    assert.are.equal(state.services, u.services)
    assert.same({ "api.a.example.com" }, state.apps[2].domains)
    assert.truthy(state.apps[2].letsencrypt)
  end)
end)

describe("move.restore_context", function()
  it("writes a tar of a Dockerfile from the app's image copying the archive where the restore reads it", function()
    local move = require "move"
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    -- more than the transport's in-memory stdin bound: the context is a file
    local parts = {}
    for i = 1, 1200 * 1024 // 64 do parts[i] = ("%064d"):format(i * 7919) end
    local archive = "\31\139\8\0" .. table.concat(parts) .. "\255"
    local f = assert(io.open(dir .. "/a.tar.gz", "wb"))
    f:write(archive)
    f:close()
    assert(move.restore_context("mindroom/backend:1", dir .. "/a.tar.gz", dir .. "/ctx.tar"))
    f = assert(io.open(dir .. "/ctx.tar", "rb"))
    local t = f:read("a")
    f:close()
    assert.are.equal(0, #t % 512)
    assert.are.equal("Dockerfile", t:sub(1, 10))
    local dockerfile = t:match("(FROM .-\n)\0")
    assert.matches("^FROM mindroom/backend:1\n", dockerfile)
    assert.matches("\nCOPY storage%.tar%.gz /mrprov%-move/storage%.tar%.gz\n", dockerfile)
    assert.truthy(t:find(archive, 1, true))
    -- what tar itself reads out of it
    os.execute("mkdir -p " .. dir .. "/x && tar -xf " .. dir .. "/ctx.tar -C " .. dir .. "/x")
    f = assert(io.open(dir .. "/x/storage.tar.gz", "rb"))
    assert.is_true(f:read("a") == archive)
    f:close()
    os.execute("rm -rf " .. dir)
  end)
end)

sdescribe("a move in progress", function()
  local instances, host_usage, move
  before_each(function()
    memstore.reset()
    instances = require "instances"
    host_usage = require "host_usage"
    move = require "move"
  end)

  local function inst(sub, host, spec)
    local store = require "mrprov.store"
    store.tx(function()
      instances.save({ subscription_id = sub, account_id = "acc", app_name = "app-" .. sub, tier = "free",
                       status = "updating", spec = spec or {}, applied = {}, urls = {},
                       limits = { memory_mb = 256, cpu = 0.25 }, host = host })
    end)
  end

  it("counts against its target as well as its source until it ends", function()
    inst("s1", "h1", { move = { from = "h1", to = "h2", phase = "data", job_id = "job_1" } })
    inst("s2", "h1")
    local used = host_usage.used()
    assert.are.equal(2, used.h1.instances)
    assert.are.equal(512, used.h1.memory_mb)
    assert.are.equal(1, used.h2.instances)
    assert.are.equal(256, used.h2.memory_mb)
    assert.are.equal(1, used.h2.moving_in)
    assert.same({ h1 = 1 }, move.moving_out())
  end)
end)
