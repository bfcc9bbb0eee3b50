-- resources/processes.lua: the desired-state flag spec.stopped in a plan
-- (ps:report --running / ps:stop / ps:start / ps:restart), its order (the
-- homeserver starts first and stops last) and what a deploy does to it.
local fakes = require "fakes"
local processes = require "resources.processes"

local function state(stopped, token)
  return {
    stopped = stopped, restart_token = token,
    apps = {
      { name = "mr", role = "main", image = "mindroom:1" },
      { name = "mr-matrix", role = "matrix", image = "synapse:1" },
      { name = "mr-backend", role = "old-backend", absent = true },
      { name = "mr-x", role = "placeholder" }, -- never deployed: nothing runs
    },
  }
end

describe("resource processes", function()
  it("reads ps:report --running; false when the app does not exist", function()
    local run = fakes.runner({ ["ps:report mr --running"] = { stdout = "true\n" } })
    assert.are.same({ running = "true" }, processes.probe(run, { app = "mr" }))
    run = fakes.runner({ ["ps:report mr --running"] = { stdout = "mixed\n" } })
    assert.are.same({ running = "mixed" }, processes.probe(run, { app = "mr" }))
    run = fakes.runner({ ["ps:report mr --running"] = { exit = 20, stderr = "App mr does not exist" } })
    assert.is_false(processes.probe(run, { app = "mr" }))
  end)

  it("stops what runs when the flag is set, starts what does not when it is cleared, else nothing", function()
    local stop = { app = "mr", running = false, apps = { "mr" } }
    local start = { app = "mr", running = true, apps = { "mr" } }
    assert.are.same({ "ps:stop", "mr" }, processes.diff(stop, { running = "true" })[1].argv)
    assert.are.same({ "ps:stop", "mr" }, processes.diff(stop, { running = "mixed" })[1].argv)
    assert.are.same({}, processes.diff(stop, { running = "false" }))
    local c = processes.diff(start, { running = "false" })[1]
    assert.are.same({ "ps:start", "mr" }, c.argv)
    assert.is_true(c.deploys) -- ps:start releases and deploys: pending changes apply
    assert.are.same({ "ps:start", "mr" }, processes.diff(start, { running = "mixed" })[1].argv)
    assert.are.same({}, processes.diff(start, { running = "true" }))
    -- the app does not exist (yet); nothing known (dry-run, older instance)
    assert.are.same({}, processes.diff(start, false))
    assert.are.same({}, processes.diff(stop, false))
    assert.are.same({}, processes.diff(start, nil))
    assert.are.same({ "ps:stop", "mr" }, processes.diff(stop, nil)[1].argv)
    -- the dry-run model
    assert.are.same({ running = "false" }, processes.model(stop, { running = "true" }))
  end)

  it("plans ps:stop again after a deploy of a stopped app, and no ps:start after a deploy", function()
    local deployed = processes.stale({ running = "false" }, { image = true })
    assert.are.equal("true", deployed.running)
    assert.are.same({ "ps:stop", "mr" },
      processes.diff({ app = "mr", running = false, apps = { "mr" } }, deployed)[1].argv)
    assert.are.same({}, processes.diff({ app = "mr", running = true, apps = { "mr" } }, deployed))
    local cur = { running = "false" }
    assert.are.equal(cur, processes.stale(cur, { config = true }))
  end)

  it("restarts once per restart token, remembered through the journal's model", function()
    local spec = { app = "mr", running = true, apps = { "mr" }, restart = "job_1" }
    local c = processes.diff(spec, { running = "true" })[1]
    assert.are.same({ "ps:restart", "mr" }, c.argv)
    assert.is_true(c.deploys)
    assert.are.same({ "ps:restart", "mr" }, processes.diff(spec, { running = "false" })[1].argv)
    local rec = processes.model(spec, { running = "true" })
    assert.are.equal("job_1", rec.restarted)
    -- a resumed job: the probe cannot see the restart, the model can
    assert.are.same({}, processes.diff(spec, processes.recall({ running = "true" }, rec)))
    assert.are.equal(1, #processes.diff({ app = "mr", running = true, apps = { "mr" }, restart = "job_2" },
      processes.recall({ running = "true" }, rec)))
    -- a deploy in the same plan is the restart
    assert.are.same({}, processes.diff(spec, processes.stale({ running = "true" }, { image = true })))
    assert.is_false(processes.recall(false, rec))
  end)

  it("starts the homeserver before the others deploy and stops it last; each step locks every app", function()
    local function entries(st)
      local out = {}
      for _, a in ipairs(st.apps) do
        for _, e in ipairs(processes.specs(a, st)) do out[#out + 1] = e end
      end
      return out
    end
    local contract = require "resources.lib.contract"
    local start = entries(state(nil))
    assert.are.equal(2, #start)
    assert.are.same({ "mr", "mr-matrix" }, processes.locks(start[1].spec))
    assert.are.equal(contract.PHASE.run, start[1].phase) -- MindRoom
    assert.are.equal(contract.PHASE.needed, start[2].phase) -- the homeserver
    assert.is_true(contract.PHASE.needed < contract.PHASE.settings)
    local stop = entries(state(true))
    assert.are.equal(contract.PHASE.run, stop[1].phase)
    assert.are.equal(contract.PHASE.run + 1, stop[2].phase)
    assert.is_false(stop[1].spec.running)
    -- a restart token only while running
    assert.are.equal("job_9", entries(state(nil, "job_9"))[1].spec.restart)
    assert.is_nil(entries(state(true, "job_9"))[1].spec.restart)
  end)
end)
