-- lua/journal.lua (the steps table) on the real store binding over an
-- in-memory SQLite (tests/lua/memstore.lua).
local memstore = require "memstore"
local store = memstore.install()

local describe_store = memstore.describer(describe, pending)

describe_store("the step journal", function()
  local instances, journal, job

  setup(function()
    instances = require "instances"
    journal = require "journal"
  end)
  before_each(function()
    memstore.reset()
    job = { id = instances.create_job("sub_1", "provision", {}), subscription_id = "sub_1" }
  end)

  local function cmd(target, display, mutating)
    return { resource = "app", target = target, display = display, mutating = mutating ~= false }
  end

  local function rows()
    return store.query("SELECT seq, resource, target, command, mutating, state, error FROM steps ORDER BY seq")
  end

  it("journals a plan as pending steps numbered in order, and the job's counters", function()
    local steps = { { commands = { cmd("a", "dokku --quiet apps:create a"),
                                   cmd("a", "dokku --quiet ps:report a", false) } },
                    { commands = { cmd("b", "dokku --quiet apps:create b") } } }
    assert.are.equal(1, journal.plan(job, steps))
    assert.are.same({ 1, 2 }, { steps[1].commands[1].seq, steps[1].commands[2].seq })
    assert.are.equal(3, steps[2].commands[1].seq)
    local r = rows()
    assert.are.equal(3, #r)
    assert.are.equal("pending", r[1].state)
    assert.are.equal(1, r[1].mutating)
    assert.are.equal(0, r[2].mutating)
    assert.are.equal("dokku --quiet apps:create b", r[3].command)
    local j = instances.job(job.id)
    assert.are.equal(0, j.steps_done)
    assert.are.equal(3, j.steps_total)
  end)

  it("records outcomes: done counts, failed keeps its error", function()
    local steps = { { commands = { cmd("a", "c1"), cmd("a", "c2") } } }
    journal.plan(job, steps)
    store.tx(function()
      journal.start(job.id, 1, "t0")
      journal.finish(job.id, 1, { exit = 0, duration_ms = 5, output = "ok" })
      journal.start(job.id, 2, "t1")
      journal.finish(job.id, 2, { exit = 1, duration_ms = 6, output = "", error = "c2 exited 1: no" })
    end)
    local r = store.query("SELECT * FROM steps ORDER BY seq")
    assert.are.equal("done", r[1].state)
    assert.are.equal("t0", r[1].started_at)
    assert.are.equal(5, r[1].duration_ms)
    assert.are.equal("failed", r[2].state)
    assert.are.equal("c2 exited 1: no", r[2].error)
    assert.are.equal(1, instances.job(job.id).steps_done)
    assert.are.same({ c1 = true }, journal.made(job.id))
    assert.are.equal(2, #journal.steps(job.id))
  end)

  it("tells whether a done step restarted, redeployed or left a change for the next start", function()
    local function marked(display, opts)
      local c = cmd("a", display)
      c.restart, c.deploys = opts.restart, opts.deploys
      return c
    end
    journal.plan(job, { { commands = { cmd("a", "c1"), marked("c2", { restart = true }),
                                       marked("c3", { deploys = true }) } } })
    local function finish(seq, err)
      store.tx(function()
        journal.start(job.id, seq, "t")
        journal.finish(job.id, seq, { exit = err and 1 or 0, error = err })
      end)
    end
    finish(1)
    assert.is_false(journal.restarted(job.id))
    finish(2, "c2 exited 1") -- failed: it changed nothing
    assert.is_false(journal.restarted(job.id))
    finish(3)
    assert.is_true(journal.restarted(job.id))
    local other = { id = instances.create_job("sub_1", "update", {}), subscription_id = "sub_1" }
    journal.plan(other, { { commands = { marked("c4", { restart = true }) } } })
    store.tx(function()
      journal.start(other.id, 1, "t")
      journal.finish(other.id, 1, { exit = 0 })
    end)
    assert.is_true(journal.restarted(other.id))
  end)

  it("re-planning drops pending steps, marks a running one interrupted and keeps the history", function()
    journal.plan(job, { { commands = { cmd("a", "c1"), cmd("a", "c2"), cmd("a", "c3") } } })
    store.tx(function()
      journal.start(job.id, 1, "t")
      journal.finish(job.id, 1, { exit = 0 })
      journal.start(job.id, 2, "t") -- a crash here: c2 stays running
    end)
    local first = journal.plan(job, { { commands = { cmd("a", "c3") } } })
    assert.are.equal(3, first) -- after the kept steps
    local r = rows()
    assert.are.equal(3, #r)
    assert.are.same({ "done", "failed", "pending" }, { r[1].state, r[2].state, r[3].state })
    assert.are.equal(journal.INTERRUPTED, r[2].error)
    assert.are.equal("c3", r[3].command)
    -- an interrupted step may have completed: it counts as made
    assert.are.same({ c1 = true, c2 = true }, journal.made(job.id))
    local j = instances.job(job.id)
    assert.are.equal(1, j.steps_done)
    assert.are.equal(2, j.steps_total)
    assert.are.same({ "c1", "c2", "c3" }, { journal.history(job.id)[1].command, journal.history(job.id)[2].command,
                                           journal.history(job.id)[3].command })
  end)

  it("appends a rollback's or a hook's commands after the last step, as mutating", function()
    journal.plan(job, { { commands = { cmd("a", "c1") } } })
    local undo = { cmd("a", "dokku --quiet apps:destroy --force a") }
    assert.are.equal(2, journal.append(job.id, "undo", undo))
    assert.are.equal(2, undo[1].seq)
    local r = rows()[2]
    assert.are.equal("undo", r.resource)
    assert.are.equal(1, r.mutating)
    assert.are.equal("pending", r.state)
    assert.are.equal(2, instances.job(job.id).steps_total)
  end)
end)
