-- lua/executor.lua: outcomes (redaction before clipping, transient
-- answers, expectations), waves over a fake transport, the job's secrets
-- and the dry-run view of the current state.
require "fakes"
local memstore = require "memstore"
local command = require "command"
local redact = require "redact"

describe("the executor", function()
  local executor, dokku

  before_each(function()
    dokku = memstore.dokku("ssh")
    package.loaded.executor = nil
    executor = require "executor"
    memstore.boot()
  end)

  local function res(exit, stdout, stderr)
    return { exit = exit, stdout = stdout or "", stderr = stderr or "", duration = 0.0123, bytes = 7 }
  end

  local mask = redact.redactor({ "hunter2-secret" })

  it("redacts an output before it clips it, and says how much it cut", function()
    local c = command.new("app", "a", { "ps:report", "a" })
    local long = string.rep("x", executor.OUTPUT_LIMIT - 4) .. "hunter2-secret" .. string.rep("y", 100)
    local r = executor.outcome(c, res(0, long), nil, false, mask)
    assert.is_nil(r.error)
    assert.is_nil(r.output:find("hunter2", 1, true))
    assert.is_nil(r.output:find("hunt", 1, true)) -- no half secret at the cut either
    assert.matches("%[%.%.%. %d+ more bytes%]$", r.output)
    assert.are.equal(12, r.duration_ms)
    assert.are.equal(7, r.bytes)
  end)

  it("fails a non-zero exit with the redacted stderr, and knows the answers worth a retry", function()
    local c = command.new("app", "a", { "apps:create", "a" })
    local r = executor.outcome(c, res(1, "", "boom: hunter2-secret\n"), nil, false, mask)
    assert.are.equal("dokku --quiet apps:create a exited 1: boom: [redacted]", r.error:gsub("%[[^%]]*%]", "[redacted]"))
    assert.is_nil(r.error:find("hunter2", 1, true))
    assert.is_false(r.transient)
    for _, text in ipairs({ " !     Name is already taken", "deploy lock in place for a", "Already linked as FOO" }) do
      assert.is_true(executor.outcome(c, res(1, "", text), nil, false, mask).transient, text)
    end
    -- an exit the command declares fine is success
    local gone = command.new("app", "a", { "apps:destroy", "a" }, nil, { ok_exits = { [20] = true } })
    assert.is_nil(executor.outcome(gone, res(20), nil, false, mask).error)
  end)

  it("holds a command that exits 0 without what it must report as failed (not in dry-run)", function()
    local c = command.new("storage", "a", { "storage:ensure-directory", "a" }, nil,
      { expect = { text = "created", otherwise = "the directory was not created" } })
    assert.are.equal("dokku --quiet storage:ensure-directory a: the directory was not created",
      executor.outcome(c, res(0, "nothing"), nil, false, mask).error)
    assert.is_nil(executor.outcome(c, res(0, "created /x"), nil, false, mask).error)
  end)

  it("reports a transport error redacted, and a command given up for shutdown as cancelled", function()
    local c = command.new("app", "a", { "apps:create", "a" })
    local r = executor.outcome(c, nil, "ssh: hunter2-secret", true, mask)
    assert.is_true(r.transient)
    assert.is_nil(r.error:find("hunter2", 1, true))
    assert.is_true(executor.outcome(c, nil, "cancelled: shutting down", false, mask).cancelled)
  end)

  it("runs a wave at once and returns the outcomes in order; a fallback replaces a failure it matches", function()
    memstore.dokku("ssh", function(text)
      if text == "--quiet git:from-image b img" then
        return { exit = 1, stderr = "No changes detected" }
      end
      return { stdout = "out of " .. text }
    end)
    package.loaded.executor = nil
    executor = require "executor"
    local cmds = { command.new("app", "a", { "apps:create", "a" }),
                   command.new("image", "b", { "git:from-image", "b", "img" }, nil,
                     { fallback = { when = "No changes detected", argv = { "ps:rebuild", "b" } } }) }
    local rs = executor.run_wave(cmds, mask)
    assert.are.equal(2, #rs)
    assert.are.equal("out of --quiet apps:create a", rs[1].output)
    assert.is_nil(rs[2].error)
    assert.matches("%-> dokku %-%-quiet ps:rebuild b", rs[2].output)
    assert.is_true(cmds[2].fell_back)
    assert.are.same({ "--quiet apps:create a", "--quiet git:from-image b img", "--quiet ps:rebuild b" },
      package.loaded["mrprov.dokku"].sent)
  end)

  it("gives each command the DOKKU_COMMAND_TIMEOUT setting, and has no default of its own", function()
    -- The default is C's (config.h) and reaches Lua through sys.config()
    -- and boot's settings; a copy in the executor could drift from it.
    assert.is_nil(executor.COMMAND_TIMEOUT)
    local cfg = memstore.boot()
    local settings = {}
    for k, v in pairs(cfg.settings) do
      settings[k] = v
    end
    settings.command_timeout = 123
    require("boot").set({ settings = settings, tiers = cfg.tiers, hooks = cfg.hooks, generation = 1 })
    local d = memstore.dokku("ssh", function(text)
      if text == "--quiet git:from-image b img" then
        return { exit = 1, stderr = "No changes detected" }
      end
    end)
    local timeouts = {}
    local run_many, run = d.run_many, d.run
    d.run_many = function(calls)
      for _, c in ipairs(calls) do
        timeouts[#timeouts + 1] = c.timeout
      end
      return run_many(calls)
    end
    d.run = function(argv, opts)
      timeouts[#timeouts + 1] = opts and opts.timeout
      return run(argv)
    end
    package.loaded.executor = nil
    executor = require "executor"
    executor.run_wave({ command.new("app", "a", { "apps:create", "a" }),
                        command.new("image", "b", { "git:from-image", "b", "img" }, nil,
                          { fallback = { when = "No changes detected", argv = { "ps:rebuild", "b" } } }) }, mask)
    assert.are.same({ 123, 123, 123 }, timeouts)
  end)

  it("masks the admin password, config_updates and a hook app's env, raw and base64, not short values", function()
    local inst = { app_name = "mr-a", spec = { config_updates = { A = "customer-secret-1", B = "1" } } }
    local state = { apps = { { role = "hook", env = { T = "hook-token-123" } },
                             { role = "backend", env = { X = "plain-value-9" } } } }
    local list = executor.job_secrets(inst, state)
    local set = {}
    for _, v in ipairs(list) do
      set[v] = true
    end
    local pw = executor.admin_password("mr-a")
    assert.is_true(set[pw] and set[require("mrprov.crypto").base64(pw)])
    assert.is_true(set["customer-secret-1"] and set["hook-token-123"])
    assert.is_nil(set["1"])
    assert.is_nil(set["plain-value-9"]) -- the engine's own env is masked by form, not listed
  end)

  it("probes in waves: a probe's second command follows its first answer, nothing is sent twice", function()
    local sim = memstore.dokku("ssh", function(text)
      if text:find("storage:list", 1, true) then
        return { stdout = "/var/lib/dokku/data/storage/d:/data\n" }
      elseif text:find("app-deploy-source", 1, true) then
        return { stdout = "docker-image\n" }
      end
      return { stdout = "" }
    end)
    package.loaded.executor = nil
    local ex = require "executor"
    local r = { key = "storage:a", type = "storage",
                spec = { app = "a", host_path = "/var/lib/dokku/data/storage/d", container_path = "/data" } }
    local current_of = ex.current_of({}, { r })
    assert.are.equal(2, #sim.sent) -- storage:list, then (mounted) the deploy source
    assert.are.same({ mounts = { "/var/lib/dokku/data/storage/d:/data" }, mounted = true, deployed = true },
      current_of(r))
    assert.are.equal(2, #sim.sent) -- answered from the waves, not probed again
    package.loaded.executor = nil
    executor = require "executor"
  end)

  it("one command serves two probes that read the same thing in a wave (config and a context's digest)", function()
    local sim = memstore.dokku("ssh", function(text)
      if text:find("config:export", 1, true) then
        return { stdout = '{"K":"v","MRPROV_CONTEXT_SHA256":"abc"}' }
      elseif text:find("app-deploy-source", 1, true) then
        return { stdout = "tar\n" }
      end
      return { stdout = "" }
    end)
    package.loaded.executor = nil
    local ex = require "executor"
    local cfg = { key = "config:a", type = "config", spec = { app = "a", env = { K = "v" } } }
    local img = { key = "image:a", type = "image", spec = { app = "a", image = "x:1", archive = "t", context = "abc" } }
    local current_of = ex.current_of({}, { cfg, img })
    local config_exports = 0
    for _, t in ipairs(sim.sent) do
      if t:find("config:export", 1, true) then config_exports = config_exports + 1 end
    end
    assert.are.equal(1, config_exports)
    assert.are.equal(2, #sim.sent) -- config:export once, then the deploy source
    assert.are.same({ source = "tar", context = "abc" }, current_of(img))
    assert.is_truthy(current_of(cfg).env.K)
    assert.are.equal(2, #sim.sent)
    package.loaded.executor = nil
    executor = require "executor"
  end)

  it("in dry-run learns the current state from what earlier jobs recorded, sending nothing", function()
    dokku = memstore.dokku("dry-run")
    package.loaded.executor = nil
    executor = require "executor"
    local current_of = executor.current_of({ ["app:a"] = { exists = true } }, {})
    assert.are.same({ exists = true }, current_of({ key = "app:a" }))
    assert.is_nil(current_of({ key = "app:b" }))
    assert.are.same({}, dokku.sent)
  end)
end)
