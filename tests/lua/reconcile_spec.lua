-- lua/reconcile.lua: the drift of an instance (what its next job's plan
-- would change, split into drift of its own and follow-ups), the naming
-- scheme of orphans, and the sweep's runs over the store (report, record,
-- repair, yield, resume), on the real store binding over an in-memory
-- SQLite. The sweep through the real binary, sshd and the simulator:
-- tests/integration/reconcile_spec.lua.
local memstore = require "memstore"
local store = memstore.install()
local cjson = require "cjson"

local describe_store = memstore.describer(describe, pending)

describe_store("the drift sweep", function()
  local reconcile, drift, bulk, orphans_mod, instances, plan, engine, generation

  setup(function()
    memstore.dokku("dry-run")
    for _, m in ipairs({ "executor", "plan", "reconcile", "drift", "reconcile_bulk", "orphans" }) do
      package.loaded[m] = nil
    end
    reconcile, instances, plan = require "reconcile", require "instances", require "plan"
    drift, bulk, orphans_mod = require "drift", require "reconcile_bulk", require "orphans"
    engine, generation = require "engine", require "generation"
  end)
  before_each(function()
    memstore.reset()
    memstore.boot()
    generation.current().settings.reconcile_mode = "report"
    -- one instance per batch: a run's stop() is asked after each instance
    -- (the batches themselves: "probes a batch of instances in one set of waves")
    reconcile.BATCH = 1
  end)

  -- What a clean provision leaves: the model of every resource.
  local function converged(inst)
    local state = assert(plan.desired_state(inst, generation.current()))
    local applied = {}
    local steps = assert(engine.plan(engine.resources(state), function() return nil end))
    for _, s in ipairs(steps) do
      local model, known = engine.model_after(s)
      if known then
        applied[s.resource.key] = model
      end
    end
    return applied
  end

  local function instance(sub, app, status)
    local inst = { subscription_id = sub, account_id = "acc_1", app_name = app, tier = "free",
                   status = status or "running", spec = { profile = "split", config_updates = {} },
                   urls = {}, limits = {} }
    inst.applied = converged(inst)
    return inst
  end

  local function key_of(applied, prefix)
    for k in pairs(applied) do
      if k:sub(1, #prefix) == prefix then
        return k
      end
    end
    error("no resource " .. prefix)
  end

  -- A fake dokku.run_many's answers when nothing exists: every probe reads
  -- "missing", the orphans' lists are empty.
  local function nothing_exists(calls)
    local out = {}
    for i, c in ipairs(calls) do
      local text = table.concat(c.argv, " ")
      local service = text:find("postgres:exists", 1, true) or text:find("redis:exists", 1, true)
      local list = text:find(":list", 1, true)
      out[i] = { ok = { exit = (list and 0) or (service and 1) or 20, stdout = "",
                        stderr = service and " !     does not exist\n" or "", duration = 0.001, bytes = 0 } }
    end
    return out
  end

  it("finds no drift on a converged instance, and exactly the resources that differ otherwise", function()
    local inst = instance("sub_1", "mr-sub1-aaaaaaaa")
    local function probe_from(models)
      return function()
        return function(r) return models[r.key] end
      end
    end
    local none, more, probed = drift.drift(inst, generation.current(), probe_from(inst.applied))
    assert.are.same({}, none)
    assert.are.same({}, more.follow_ups)
    assert.is_true(probed > 5)

    local server = {}
    for k, v in pairs(inst.applied) do server[k] = v end
    local dkey = key_of(server, "domains:mr-sub1-aaaaaaaa-frontend")
    server[dkey] = { domains = {} }
    local lkey = key_of(server, "link:mr-sub1-aaaaaaaa-redis")
    server[lkey] = { linked = false }
    local list, extra = drift.drift(inst, generation.current(), probe_from(server))
    local got = {}
    for _, e in ipairs(list) do
      got[#got + 1] = e.type .. " " .. e.app
      assert.is_true(#e.commands > 0)
    end
    table.sort(got)
    assert.are.same({ "domains mr-sub1-aaaaaaaa-frontend", "link mr-sub1-aaaaaaaa-backend" }, got)
    -- the certificate is stale only because the domains change: a follow-up
    assert.are.equal(1, #extra.follow_ups)
    assert.are.equal("letsencrypt", extra.follow_ups[1].type)
    assert.are.same({ "mr-sub1-aaaaaaaa-backend" }, extra.restarts)
    assert.matches("^dokku %-%-quiet redis:link ", list[1].type == "link" and list[1].commands[1]
      or list[2].commands[1])
  end)

  it("shows config values as plans do: no secret in a fix command", function()
    local inst = instance("sub_1", "mr-sub1-aaaaaaaa")
    inst.spec.config_updates = { CUSTOMER_TOKEN = "s3cret-value-of-the-customer" }
    local list = drift.drift(inst, generation.current(), function()
      return function(r) return inst.applied[r.key] end
    end)
    local text = cjson.encode(list)
    assert.matches("CUSTOMER_TOKEN=%[set%]", text)
    assert.is_nil(text:find("s3cret", 1, true))
  end)

  it("knows the naming scheme of an instance's objects and picks the orphans", function()
    assert.are.equal("mr-sub1-aaaaaaaa", orphans_mod.owner_of("mr-sub1-aaaaaaaa"))
    for _, s in ipairs({ "-backend", "-frontend", "-matrix", "-db", "-redis" }) do
      assert.are.equal("mr-abcdefgh-0a1b2c3d", orphans_mod.owner_of("mr-abcdefgh-0a1b2c3d" .. s))
    end
    for _, n in ipairs({ "mr-abcdefghi-0a1b2c3d", "mr-sub1-aaaaaaa", "mr-sub1-aaaaaaaa-web", "other",
                         "mr-sub1-aaaaaaaa-db-x", "xmr-sub1-aaaaaaaa", "mr-Sub1-aaaaaaaa" }) do
      assert.is_nil(orphans_mod.owner_of(n), n)
    end
    assert.are.same({ "a", "mr-x-12345678-db", "b" },
      orphans_mod.parse_list("=====> My Apps\na\n  mr-x-12345678-db \n\n b\n !     warning here\n"))
    local orphans = orphans_mod.orphans_of({ "mr-sub1-aaaaaaaa-db", "mr-gone-bbbbbbbb-redis", "mr-gone-bbbbbbbb",
                                           "my-own-app" }, { ["mr-sub1-aaaaaaaa"] = true })
    assert.are.same({ "mr-gone-bbbbbbbb", "mr-gone-bbbbbbbb-redis" }, orphans)
  end)

  local function put(inst)
    store.tx(function() instances.save(inst) end)
  end

  local function sweep(rep, stop_after)
    local runs = 0
    local done
    repeat
      runs = runs + 1
      local n = 0
      done = reconcile.advance(rep, { rate = 1e6, sleep = function() end, stop = function()
        n = n + 1
        return stop_after and n >= stop_after
      end })
    until done or runs > 20
    return runs
  end

  it("sweeps every settled instance without a job of its own, records the drift, resumes at its cursor", function()
    local a = instance("sub_a", "mr-suba-aaaaaaaa")
    a.applied[key_of(a.applied, "limits:mr-suba-aaaaaaaa-backend")] = { memory = "1g" }
    put(a)
    put(instance("sub_b", "mr-subb-bbbbbbbb"))
    put(instance("sub_c", "mr-subc-cccccccc", "provisioning")) -- busy: not swept
    put(instance("sub_d", "mr-subd-dddddddd"))
    store.tx(function() instances.create_job("sub_d", "update", {}) end) -- a job of its own waits
    local rep = reconcile.new_report(os.time(), {})
    -- one instance per run (as when other jobs wait): every run goes on where the last stopped
    local runs = sweep(rep, 1)
    assert.are.equal(3, runs) -- a, b, then d (skipped) and the end of the list

    assert.are.equal("finished", rep.state)
    assert.are.equal(2, rep.instances_checked)
    assert.are.equal(1, rep.instances_skipped)
    assert.are.equal(1, rep.drifted_count)
    assert.are.equal("sub_a", rep.drifted[1].subscription_id)
    assert.are.equal("limits", rep.drifted[1].resources[1].type)
    assert.are.same({}, rep.repaired)
    assert.are.equal(0, rep.orphans_count)
    assert.are.equal("limits", drift.status_drift("sub_a").resources[1].type)
    assert.are.same({}, drift.status_drift("sub_b").resources)
    assert.are.equal(cjson.null, drift.status_drift("sub_c"))
    assert.are.equal(1, drift.drifted_total())
    -- a job that converges the instance makes it history
    store.tx(function() drift.forget("sub_a") end)
    assert.are.equal(0, drift.drifted_total())
    local view = reconcile.view(rep)
    assert.is_nil(view.cursor)
    assert.is_nil(view.started)
  end)

  it("in repair mode queues the ordinary update job for a drifted instance", function()
    generation.current().settings.reconcile_mode = "repair"
    local a = instance("sub_a", "mr-suba-aaaaaaaa")
    a.applied[key_of(a.applied, "domains:mr-suba-aaaaaaaa-frontend")] = { domains = { "x.example.org" } }
    put(a)
    put(instance("sub_b", "mr-subb-bbbbbbbb"))
    local rep = reconcile.new_report(os.time(), {})
    sweep(rep)
    assert.are.same({ "sub_a" }, rep.repaired)
    local job = instances.job(rep.drifted[1].repair_job_id)
    assert.are.equal("update", job.operation)
    assert.are.equal("queued", job.state)
    assert.is_true(job.request.repair)
    assert.are.equal("updating", instances.get("sub_a").status)
    assert.are.equal("running", instances.get("sub_b").status)
  end)

  it("a dry run writes nothing", function()
    local a = instance("sub_a", "mr-suba-aaaaaaaa")
    a.applied[key_of(a.applied, "domains:mr-suba-aaaaaaaa-frontend")] = { domains = {} }
    put(a)
    generation.current().settings.reconcile_mode = "repair"
    local rep = reconcile.dry_run()
    assert.are.equal("dry-run", rep.mode)
    assert.are.equal(1, rep.drifted_count)
    assert.are.same({}, rep.repaired)
    assert.are.equal(cjson.null, drift.status_drift("sub_a"))
    assert.are.equal(0, #store.query("SELECT 1 AS x FROM jobs"))
  end)

  it("probes a batch of instances in one set of waves, with the drift found one by one", function()
    for i, sub in ipairs({ "sub_a", "sub_b", "sub_d", "sub_e" }) do
      put(instance(sub, "mr-" .. sub:gsub("_", "") .. "-" .. ("%08d"):format(i)))
    end
    local dokku = require "mrprov.dokku"
    local mode, run_many, was = dokku.mode, dokku.run_many, bulk.BULK
    local waves, commands = 0, 0
    dokku.mode = function() return "ssh" end
    bulk.BULK = false -- every resource probed per app, as a job does
    dokku.run_many = function(calls)
      if not table.concat(calls[1].argv, " "):find(":list", 1, true) then -- (not the orphans' lists)
        waves = waves + 1
        commands = commands + #calls
      end
      return nothing_exists(calls)
    end
    local function sweep_with(batch)
      reconcile.BATCH = batch
      waves, commands = 0, 0
      local rep = reconcile.new_report(os.time(), {})
      local runs = sweep(rep)
      return rep, runs, waves, commands
    end
    local ok, err = pcall(function()
      local one, runs1, waves1, cmds1 = sweep_with(1)
      local all, runs16, waves16, cmds16 = sweep_with(16)
      assert.are.same({}, one.errors)
      assert.are.equal(1, runs1) -- (no stop asked for: one run either way)
      assert.are.equal(1, runs16)
      assert.are.equal(4, one.instances_checked)
      assert.are.equal(4, all.instances_checked)
      -- the same answers, the same drift, the same commands ...
      assert.are.equal(one.drifted_count, all.drifted_count)
      assert.are.equal(one.probes, all.probes)
      assert.are.equal(cmds1, cmds16)
      -- ... in one wave for the four instances (sent 64 commands at a time),
      -- not one a instance
      assert.are.equal(4, waves1)
      assert.are.equal(math.ceil(cmds16 / 64), waves16)
      assert.is_true(waves16 < waves1)
    end)
    dokku.mode, dokku.run_many, bulk.BULK = mode, run_many, was
    assert(ok, err)
  end)

  it("probes one instance at a time while another job waits or runs (jobs go first)", function()
    for i, sub in ipairs({ "sub_a", "sub_b", "sub_d" }) do
      put(instance(sub, "mr-" .. sub:gsub("_", "") .. "-" .. ("%08d"):format(i)))
    end
    reconcile.BATCH = 16
    local function one_run(busy)
      local rep = reconcile.new_report(os.time(), {})
      reconcile.advance(rep, { rate = 1e6, sleep = function() end, busy = function() return busy end,
                               stop = function() return true end })
      return rep.instances_checked
    end
    assert.are.equal(1, one_run(true))
    assert.are.equal(3, one_run(false))
  end)

  it("without its reports, yields to another job instead of probing per app, a few runs at most", function()
    put(instance("sub_a", "mr-suba-00000001"))
    local dokku = require "mrprov.dokku"
    local mode, run_many, starved = dokku.mode, dokku.run_many, reconcile.STARVED_RUNS
    local sent = 0
    dokku.mode = function() return "ssh" end
    dokku.run_many = function(calls)
      sent = sent + #calls
      return nothing_exists(calls)
    end
    reconcile.STARVED_RUNS = 2
    local ok, err = pcall(function()
      bulk.forget_reports()
      local rep = reconcile.new_report(os.time(), {})
      local function run()
        return reconcile.advance(rep, { rate = 1e6, sleep = function() end, busy = function() return true end,
                                        stop = function() return true end })
      end
      -- busy from the start: the reports are not read, nothing is probed
      assert.is_false(run())
      assert.is_false(run())
      assert.are.equal(0, sent)
      assert.are.equal(0, rep.instances_checked)
      assert.are.equal("", rep.cursor)
      -- the third run in a row probes the instance per app anyway
      run()
      assert.is_true(sent > 5)
      assert.are.equal(1, rep.instances_checked)
    end)
    dokku.mode, dokku.run_many, reconcile.STARVED_RUNS = mode, run_many, starved
    bulk.forget_reports()
    assert(ok, err)
  end)

  it("a job that arrives while the reports are read goes first: the batch is not probed per app", function()
    for i, sub in ipairs({ "sub_a", "sub_b", "sub_d" }) do
      put(instance(sub, "mr-" .. sub:gsub("_", "") .. "-" .. ("%08d"):format(i)))
    end
    reconcile.BATCH = 16
    local dokku = require "mrprov.dokku"
    local mode, run_many, wave = dokku.mode, dokku.run_many, bulk.REPORT_WAVE
    local busy, reports, probes = false, 0, 0
    dokku.mode = function() return "ssh" end
    dokku.run_many = function(calls)
      local out = {}
      for i, c in ipairs(calls) do
        -- an all-apps report names no app; a probe does
        local per_app = false
        for _, w in ipairs(c.argv) do
          if w:find("^mr%-sub") then per_app = true end
        end
        if per_app then probes = probes + 1 else reports = reports + 1 end
        out[i] = { ok = { exit = 0, stdout = "", stderr = "" } }
      end
      -- the provision arrives while this first report is read
      busy = true
      return out
    end
    local ok, err = pcall(function()
      bulk.REPORT_WAVE = 1
      bulk.forget_reports()
      local rep = reconcile.new_report(os.time(), {})
      local done = reconcile.advance(rep, { rate = 1e6, sleep = function() end, busy = function() return busy end,
                                            stop = function() return true end })
      assert.is_false(done)
      assert.are.equal(1, reports) -- the report in flight, then no other
      assert.are.equal(0, probes)
      assert.are.equal(0, rep.instances_checked)
      assert.are.equal("", rep.cursor) -- the batch is swept later, from the same place
    end)
    dokku.mode, dokku.run_many, bulk.REPORT_WAVE = mode, run_many, wave
    bulk.forget_reports()
    assert(ok, err)
  end)

  it("takes the newer reading kept in the sweep's progress when this state's copy went stale", function()
    put(instance("sub_a", "mr-suba-aaaaaaaa"))
    put(instance("sub_b", "mr-subb-bbbbbbbb"))
    put(instance("sub_d", "mr-subd-dddddddd"))
    local dokku, json, sys = require "mrprov.dokku", require "json", require "mrprov.sys"
    local mode, fetch, now = dokku.mode, bulk.fetch_reports, sys.now
    local fetched, T = 0, 1000
    dokku.mode = function() return "ssh" end
    sys.now = function() return T end
    bulk.fetch_reports = function()
      fetched = fetched + 1
      local reps = {}
      for name in pairs(require("resources.lib.reports").REPORTS) do
        reps[name] = {}
      end
      return reps, 3, true
    end
    local function one(rep)
      local n = 0
      reconcile.advance(rep, { rate = 1e6, sleep = function() end, stop = function()
        n = n + 1
        return n >= 1
      end })
      return json.decode_stored(json.encode(rep))
    end
    local ok, err = pcall(function()
      bulk.forget_reports()
      local rep = one(reconcile.new_report(os.time(), {}))
      assert.are.equal(1, fetched) -- this state read them at T = 1000
      -- another state read them again at T = 1035 (kept in the progress);
      -- at T = 1040 this state's own copy is 40 s old, the progress's 5 s
      rep.bulk.at = 1035
      T = 1040
      one(rep)
      assert.are.equal(1, fetched)
    end)
    dokku.mode, bulk.fetch_reports, sys.now = mode, fetch, now
    bulk.forget_reports()
    assert(ok, err)
  end)

  it("reads the all-apps reports a few at a time and stops between two waves when a job waits", function()
    local dokku = require "mrprov.dokku"
    local run_many, wave = dokku.run_many, bulk.REPORT_WAVE
    local sent = {}
    dokku.run_many = function(calls)
      local out = {}
      for i, c in ipairs(calls) do
        sent[#sent + 1] = table.concat(c.argv, " ")
        out[i] = { ok = { exit = 0, stdout = "", stderr = "" } }
      end
      return out
    end
    local ok, err = pcall(function()
      bulk.REPORT_WAVE = 2
      local names = bulk.report_names()
      assert.is_true(#names > 4)
      -- a job arrives after the first wave: two reports read, the rest left
      local tried = {}
      local have, n, complete = bulk.fetch_reports({}, function() return true end, tried)
      assert.are.equal(2, n)
      assert.is_false(complete)
      assert.are.equal(2, #sent)
      -- the next reading goes on where it stopped, nothing read twice
      local _, n2, complete2 = bulk.fetch_reports(have, function() return false end, tried)
      assert.are.equal(#names - 2, n2)
      assert.is_true(complete2)
      local seen = {}
      for _, c in ipairs(sent) do
        assert.is_nil(seen[c], c .. " read twice")
        seen[c] = true
      end
      assert.are.equal(#names, #sent)
    end)
    dokku.run_many, bulk.REPORT_WAVE = run_many, wave
    assert(ok, err)
  end)

  it("reads the all-apps reports once a sweep whichever Lua state runs it: they travel in its progress", function()
    put(instance("sub_a", "mr-suba-aaaaaaaa"))
    put(instance("sub_b", "mr-subb-bbbbbbbb"))
    put(instance("sub_d", "mr-subd-dddddddd"))
    local dokku, json = require "mrprov.dokku", require "json"
    local mode, fetch, age = dokku.mode, bulk.fetch_reports, bulk.BULK_MAX_AGE
    local fetched = 0
    dokku.mode = function() return "ssh" end
    -- (no app exists: every resource is answered by the reports, no probe runs)
    bulk.fetch_reports = function()
      fetched = fetched + 1
      local reps = {}
      for name in pairs(require("resources.lib.reports").REPORTS) do
        reps[name] = {}
      end
      return reps, 3
    end
    local function sweep_across_states()
      local rep = reconcile.new_report(os.time(), {})
      local runs = 0
      repeat
        runs = runs + 1
        -- each run on a Lua state that has not seen this sweep, its
        -- progress read back from the job row
        bulk.forget_reports()
        rep = json.decode_stored(json.encode(rep))
        local n = 0
        local done = reconcile.advance(rep, { rate = 1e6, sleep = function() end, stop = function()
          n = n + 1
          return n >= 1
        end })
      until done or runs > 20
      return rep, runs
    end
    local ok, err = pcall(function()
      local rep, runs = sweep_across_states()
      assert.are.equal(4, runs)
      assert.are.equal(1, fetched)
      assert.are.equal(3, rep.bulk_commands)
      assert.are.equal("finished", rep.state)
      assert.is_nil(rep.bulk) -- not part of the report
      assert.are.equal(3, rep.instances_checked)
      assert.are.equal(0, rep.app_probes)
      -- older than BULK_MAX_AGE: read again
      fetched = 0
      bulk.BULK_MAX_AGE = -1
      sweep_across_states()
      assert.are.equal(3, fetched)
    end)
    dokku.mode, bulk.fetch_reports, bulk.BULK_MAX_AGE = mode, fetch, age
    bulk.forget_reports()
    assert(ok, err)
  end)

  it("POST starts one sweep at a time and brings the scheduled one forward", function()
    local settings = generation.current().settings
    settings.reconcile_interval = 900
    -- (in dry-run there is nothing to sweep: nothing is scheduled)
    assert.is_nil(reconcile.schedule())
    local dokku = require "mrprov.dokku"
    local mode = dokku.mode
    dokku.mode = function() return "ssh" end
    local scheduled = reconcile.schedule()
    assert.is_string(scheduled)
    assert.is_nil(reconcile.schedule()) -- one is queued already
    local what, id = reconcile.start_now()
    assert.are.equal("started", what)
    assert.are.equal(scheduled, id)
    assert.are.equal(nil, instances.job(id).not_before)
    store.tx(function() instances.update_job(id, { state = "running" }) end)
    assert.are.equal("running", (reconcile.start_now()))
    dokku.mode = mode
    settings.reconcile_interval = 0
  end)
end)
