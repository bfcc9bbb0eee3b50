-- lua/converge.lua: a job's plan applied through the journal on the real
-- store binding over an in-memory SQLite, with a fake transport: steps
-- journaled and done, the applied model recorded, restarts a job still
-- owes, a failed provision undone from the journal, retries, and a store
-- that refuses writes holding the job instead of failing it.
local memstore = require "memstore"
local store = memstore.install()

local describe_store = memstore.describer(describe, pending)

describe_store("converging a job", function()
  local converge, instances, journal, plan, redact, cfg, dokku
  local inst, job, state

  local function load(answer)
    dokku = memstore.dokku("dry-run", answer)
    for _, m in ipairs({ "executor", "converge", "plan" }) do
      package.loaded[m] = nil
    end
    converge, plan = require "converge", require "plan"
    instances, journal = require "instances", require "journal"
    redact = require("redact").redactor({})
  end

  local function ctx()
    return { created = {}, backups = require("json").array(), commands = 0, backup_path = function() end }
  end

  before_each(function()
    memstore.reset()
    load()
    cfg = memstore.boot()
    inst = { subscription_id = "sub_1", account_id = "acc_1", app_name = "mr-sub1-abcd1234", tier = "free",
             status = "provisioning", spec = plan.spec_of({}), applied = {}, urls = {}, limits = {} }
    instances.save(inst)
    job = instances.job(instances.create_job("sub_1", "provision", {}))
    state = assert(plan.desired_state(inst, cfg))
  end)

  local function step_states()
    local out = {}
    for _, r in ipairs(store.query("SELECT state FROM steps WHERE job_id = ? ORDER BY seq", job.id)) do
      out[r.state] = (out[r.state] or 0) + 1
    end
    return out
  end

  it("journals every command, runs it, records it done and the applied model", function()
    local c = ctx()
    local applied = converge.converge(job, inst, state, c, redact)
    local n = #dokku.sent
    assert.is_true(n > 5)
    assert.are.same({ done = n }, step_states())
    assert.are.equal(n, c.commands)
    local j = instances.job(job.id)
    assert.are.equal(n, j.steps_done)
    assert.are.equal(n, j.steps_total)
    assert.are.same(applied, instances.get("sub_1").applied)
    assert.is_truthy(applied["app:mr-sub1-abcd1234-backend"] or next(applied))
    -- the apps it created are known for a rollback
    assert.is_true(#c.created > 0)
    -- converged: a second round plans nothing
    dokku.sent = {}
    inst.applied = applied
    converge.converge(job, inst, state, ctx(), redact)
    assert.are.same({}, dokku.sent)
  end)

  it("owes a restart for a change made and not followed by a start, an interrupted change included", function()
    local cmds = {
      -- what each command does to its app is journaled with it (restart/deploys)
      { resource = "config", target = "a1", display = "dokku --quiet config:set --no-restart a1 K=[set]",
        restart = true },
      { resource = "config", target = "a2", display = "dokku --quiet config:set --no-restart a2 K=[set]",
        restart = true },
      { resource = "image", target = "a2", display = "dokku --quiet ps:restart a2", deploys = true },
      { resource = "limits", target = "a3", display = "dokku --quiet resource:limit --memory 1g a3", restart = true },
      { resource = "storage", target = "a4", display = "dokku --quiet storage:mount a4 /x:/y", restart = true },
    }
    journal.plan(job, { { commands = cmds } })
    store.tx(function()
      for seq = 1, 3 do
        journal.start(job.id, seq, "t")
        journal.finish(job.id, seq, { exit = 0 })
      end
      journal.start(job.id, 4, "t") -- a crash while it ran: it may be in place
    end)
    journal.plan(job, {}) -- the resumed round marks it interrupted, drops a4's pending step
    assert.are.same({ "a1", "a3" }, converge.owed_restarts(job.id))
  end)

  it("undoes what a failed provision created, from the journal, in reverse order", function()
    load(function(text)
      if text:find("git:from-image", 1, true) then
        return { exit = 1, stderr = "image not found" }
      end
    end)
    local c = ctx()
    local ok, err = pcall(converge.converge, job, inst, state, c, redact)
    assert.is_false(ok)
    assert.matches("image not found", err.message)
    assert.is_falsy(err.transient)
    dokku.sent = {}
    converge.undo(job, inst, c, err.applied, redact, state)
    assert.is_true(#dokku.sent > 0)
    for _, text in ipairs(dokku.sent) do
      assert.matches("^%-%-quiet %S+:%S*[du][en][sl][ti][rn]", text) -- destroy or unlink
    end
    -- links first, the apps and services they join after
    assert.matches(":unlink ", dokku.sent[1])
    assert.matches(":destroy ", dokku.sent[#dokku.sent])
    local undo = store.query("SELECT command, state FROM steps WHERE job_id = ? AND resource = 'undo' ORDER BY seq",
      job.id)
    assert.are.equal(#dokku.sent, #undo)
    assert.are.equal("done", undo[1].state)
    -- what was undone is no longer recorded as applied
    local applied = instances.get("sub_1").applied
    for _, r in ipairs(c.created) do
      assert.is_nil(applied[r.key], r.key)
    end
  end)

  it("retries a transient failure by planning again: what is done is not sent twice", function()
    local locked
    load(function(text)
      if text:find("git:from-image", 1, true) and not locked then
        locked = text
        return { exit = 1, stderr = "deploy lock in place" }
      end
    end)
    local applied = converge.converge(job, inst, state, ctx(), redact)
    assert.is_truthy(next(applied))
    local seen = {}
    for _, text in ipairs(dokku.sent) do
      if text ~= locked then
        assert.is_nil(seen[text], "sent twice: " .. text)
      end
      seen[text] = true
    end
    local deploys = {}
    for _, text in ipairs(dokku.sent) do
      deploys[text] = (deploys[text] or 0) + 1
    end
    for text, n in pairs(deploys) do
      assert.are.equal(text == locked and 2 or 1, n, text)
    end
    assert.are.equal(1, step_states().failed) -- the locked try stays in the history
  end)

  it("holds the job while the store refuses writes (by its code), and goes on once it takes them", function()
    local pages = store.query("PRAGMA page_count")[1].page_count
    store.exec("PRAGMA max_page_count = " .. pages)
    local waits = 0
    memstore.jobs.sleep = function()
      waits = waits + 1
      store.exec("PRAGMA max_page_count = 100000") -- space again
      return true
    end
    local big = {}
    for i = 1, 400 do
      big["blob:" .. i] = { text = string.rep("z", 500) }
    end
    inst.applied = big -- the first applied row no longer fits
    local ok, err = pcall(converge.converge, job, inst, state, ctx(), redact)
    memstore.jobs.sleep = function() return true end
    assert.is_true(ok, tostring(err))
    assert.is_true(waits >= 1)
  end)
end)
