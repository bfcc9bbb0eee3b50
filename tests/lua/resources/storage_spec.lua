local fakes = require "fakes"
local storage = require "resources.storage"

describe("resource storage", function()
  local spec = { app = "web", dir = "mr-x", host_path = "/var/lib/dokku/data/storage/mr-x",
                 container_path = "/app/data", chown = "false" }

  it("lists mounts with storage:list", function()
    local run = fakes.runner({
      ["storage:list web"] = { stdout = "/var/lib/dokku/data/storage/mr-x:/app/data\n/a:/b\n" },
    })
    assert.are.same({ "/var/lib/dokku/data/storage/mr-x:/app/data", "/a:/b" }, storage.probe(run, spec).mounts)
  end)

  it("ensures the directory and mounts it once", function()
    local cmds = storage.diff(spec, { mounts = {} })
    assert.are.same({ "storage:ensure-directory", "--chown", "false", "mr-x" }, cmds[1].argv)
    assert.are.same({ "storage:mount", "web", "/var/lib/dokku/data/storage/mr-x:/app/data" }, cmds[2].argv)
    assert.are.same({}, storage.diff(spec, { mounts = { "/var/lib/dokku/data/storage/mr-x:/app/data" } }))
    assert.are.same({}, storage.undo(spec))
  end)
end)
