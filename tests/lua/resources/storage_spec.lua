local fakes = require "fakes"
local storage = require "resources.storage"

describe("resource storage", function()
  local spec = { app = "web", dir = "mr-x", host_path = "/var/lib/dokku/data/storage/mr-x",
                 container_path = "/app/data", chown = "false" }

  it("lists mounts with storage:list", function()
    local run = fakes.runner({
      ["storage:list web"] = { stdout = "/var/lib/dokku/data/storage/mr-x:/app/data\n/a:/b\n" },
      ["apps:report web --app-deploy-source"] = { stdout = "docker-image\n" },
    })
    local cur = storage.probe(run, spec)
    assert.are.same({ "/var/lib/dokku/data/storage/mr-x:/app/data", "/a:/b" }, cur.mounts)
    assert.is_true(storage.exists(cur))
  end)

  it("backs up only a mounted directory of a deployed app: stops it, then tars it from a one-off container", function()
    local none = storage.probe(fakes.runner({ ["storage:list web"] = { stdout = "/a:/b\n" } }), spec)
    assert.is_false(storage.exists(none))
    local undeployed = storage.probe(fakes.runner({
      ["storage:list web"] = { stdout = "/var/lib/dokku/data/storage/mr-x:/app/data\n" },
      ["apps:report web --app-deploy-source"] = { stdout = "\n" },
    }), spec)
    assert.is_false(storage.exists(undeployed)) -- no image to run a backup container from
    assert.is_true(storage.exists(storage.model(spec, {}))) -- the journal's model: mounted by a job
    local cmds = storage.backup(spec)
    assert.are.same({ "ps:stop", "web" }, cmds[1].argv)
    assert.are.same({ "run", "--no-tty", "web", "tar", "-C", "/app/data", "-czf", "-", "." }, cmds[2].argv)
    assert.is_true(cmds[2].stream)
    assert.are.equal("tar.gz", cmds[2].stream_ext)
  end)

  it("ensures the directory and mounts it once", function()
    local cmds = storage.diff(spec, { mounts = {} })
    assert.are.same({ "storage:ensure-directory", "--chown", "false", "mr-x" }, cmds[1].argv)
    -- done only when Dokku says it created the directory that is mounted
    assert.are.equal("Ensuring /var/lib/dokku/data/storage/mr-x exists", cmds[1].expect.text)
    assert.are.same({ "storage:mount", "web", "/var/lib/dokku/data/storage/mr-x:/app/data" }, cmds[2].argv)
    assert.are.same({}, storage.diff(spec, { mounts = { "/var/lib/dokku/data/storage/mr-x:/app/data" } }))
    assert.are.same({}, storage.undo(spec))
  end)

  it("unmounts what an earlier desired state mounted for the same directory or path", function()
    local mx = { app = "mx", dir = "mx", host_path = "/var/lib/dokku/data/storage/mx", container_path = "/data",
                 chown = "false", owned_paths = { "/var/lib/tuwunel", "/data" } }
    local cur = { mounts = { "/var/lib/dokku/data/storage/mx:/var/lib/tuwunel", "/other:/keep" } }
    local cmds = storage.diff(mx, cur)
    assert.are.same({ "storage:unmount", "mx", "/var/lib/dokku/data/storage/mx:/var/lib/tuwunel" }, cmds[1].argv)
    assert.are.same({ "storage:ensure-directory", "--chown", "false", "mx" }, cmds[2].argv)
    assert.are.same({ "storage:mount", "mx", "/var/lib/dokku/data/storage/mx:/data" }, cmds[3].argv)
    local m = storage.model(mx, cur)
    assert.are.same({ "/other:/keep", "/var/lib/dokku/data/storage/mx:/data" }, m.mounts)
    assert.are.same({}, storage.diff(mx, m))
    -- the wanted mount present, a stale one beside it: only the unmount
    cmds = storage.diff(mx, { mounts = { "/old/base/mx:/data", "/var/lib/dokku/data/storage/mx:/data" } })
    assert.are.equal(1, #cmds)
    assert.are.same({ "storage:unmount", "mx", "/old/base/mx:/data" }, cmds[1].argv)
  end)

  -- found by fuzz_dokku_output: a listed mount goes back into an argv only
  -- when it is made of token characters
  it("leaves alone a stale-looking mount that is not a plain token", function()
    local mx = { app = "mx", dir = "mx", host_path = "/var/lib/dokku/data/storage/mx", container_path = "/data",
                 chown = "false", owned_paths = { "/data" } }
    for _, bad in ipairs({ "/old\0base/mx:/data", "/old base/mx:/data", "/old/$(id)/mx:/data", "/o\n:/data" }) do
      local cmds = storage.diff(mx, { mounts = { bad, "/var/lib/dokku/data/storage/mx:/data" } })
      assert.are.same({}, cmds, bad)
      assert.are.same({ bad, "/var/lib/dokku/data/storage/mx:/data" },
        storage.model(mx, { mounts = { bad, "/var/lib/dokku/data/storage/mx:/data" } }).mounts)
    end
  end)
end)

