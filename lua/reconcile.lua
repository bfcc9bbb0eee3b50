-- The drift sweep: every RECONCILE_INTERVAL seconds, each settled instance
-- (no job of its own queued or running) is probed with the engine's own
-- probes (executor.current_of, each resource module's probe) and planned
-- against its desired state (plan.desired_state, engine.plan), exactly as
-- its next job would plan: what the plan holds is the instance's drift, one
-- entry per resource with the commands that would fix it (shown as plans
-- show them: secrets `[set]`/`[REDACTED]`). RECONCILE_MODE=report records
-- it (the status view's `drift`, the mrprov_drift_instances gauge, a warn
-- line per drifted instance); `repair` also queues the ordinary convergent
-- job (an `update` without changes), whose plan then holds only the fixes.
-- Dokku apps and services named like an instance's that belong to no
-- instance in the store are orphans: reported and counted, never touched.
--
-- Where it runs: in a job of its own (operation `reconcile`, subscription
-- id M.SUBSCRIPTION, which no real subscription can have: ids start with a
-- letter or digit), processed by the ordinary workers, like the readiness
-- check (lua/health.lua). Jobs go first: a run probes instances for about
-- M.RUN_SECONDS at most RECONCILE_PROBES_PER_SECOND probes a second, stops
-- after the current instance as soon as another job is queued or running,
-- and re-queues itself (jobs.not_before) with its progress in its result; so
-- a sweep holds one worker for one instance's probes at most once a job
-- waits, and a restart (or kill -9) resumes it where it was. The finished
-- sweep's report is that job's result (GET /api/v1/reconcile), and the job
-- queues the next sweep RECONCILE_INTERVAL seconds later.
--
-- In bulk: see lua/reconcile_bulk.lua (the all-apps reports); orphans:
-- lua/orphans.lua.
local dokku = require "mrprov.dokku"
local drift = require "drift"
local executor = require "executor"
local generation = require "generation"
local hosts = require "hosts"
local instances = require "instances"
local jobs = require "mrprov.jobs"
local json = require "json"
local log = require "mrprov.log"
local metrics = require "mrprov.metrics"
local redact_text = require "redact"
local orphans_mod = require "orphans"
local bulk_mod = require "reconcile_bulk"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"

local M = {}

M.OPERATION = "reconcile"
M.SUBSCRIPTION = "_sweep"
M.RUN_SECONDS = 1      -- a run's probing before it re-queues itself
M.YIELD_SECONDS = 0.5  -- the pause before the next run while other jobs wait or run
-- The statuses an instance is probed in: deployed and not busy (and the
-- lifecycle's stopped/suspended, whose desired state says so).
M.PROBED = { running = true, starting = true, unhealthy = true, stopped = true, suspended = true }
-- The statuses a repair job may start from (as an update, lua/requests.lua).
M.REPAIRABLE = { running = true, starting = true, unhealthy = true }
M.ERRORS_KEPT = 100 -- errors listed in a report (the count is exact)
-- Drifted instances listed with their fix commands in a report; later ones
-- with their resources' names only (the status view has each in full).
M.DETAIL_KEPT = 100

local check = store_error.checked

---------------------------------------------------------------------------
-- The report
---------------------------------------------------------------------------

function M.new_report(now, opts)
  opts = opts or {}
  local settings = generation.current().settings
  return {
    state = "running", started_at = sys.iso_time(now), started = now, finished_at = json.null,
    duration_seconds = json.null, mode = opts.dry_run and "dry-run" or settings.reconcile_mode or "report",
    trigger = opts.trigger or "schedule", instances_checked = 0, instances_skipped = 0, probes = 0,
    drifted_count = 0, drifted = json.array(), repaired = json.array(), orphans_count = 0, orphans = json.null,
    errors_count = 0, errors = json.array(), cursor = "",
  }
end

local function add_error(rep, e)
  rep.errors_count = rep.errors_count + 1
  if #rep.errors < M.ERRORS_KEPT then
    rep.errors[#rep.errors + 1] = e
  end
end

-- What a report shows (the internal cursor and epoch left out).
function M.view(rep)
  local v = {}
  for k, x in pairs(rep) do
    if k ~= "cursor" and k ~= "started" and k ~= "bulk" and k ~= "bulk_hosts" then
      v[k] = x
    end
  end
  return v
end

---------------------------------------------------------------------------
-- The sweep's steps
---------------------------------------------------------------------------

-- Jobs other than sweeps and readiness checks that wait or run: the sweep
-- yields to them.
local OTHERS_SQL = "SELECT 1 AS x FROM jobs WHERE state IN ('queued', 'running') AND operation NOT IN (?, ?) " ..
  "AND (not_before IS NULL OR not_before <= ?) LIMIT 1"

function M.others_waiting(now)
  return check(store.query(OTHERS_SQL, M.OPERATION, "health", sys.iso_time(now or sys.now())))[1] ~= nil
end

-- The next instance after cursor in subscription id order, of a probed
-- status; with whether a job of its own waits or runs.
local NEXT_SQL = "SELECT i.subscription_id AS sub, EXISTS (SELECT 1 FROM jobs j WHERE j.subscription_id = " ..
  "i.subscription_id AND j.state IN ('queued', 'running') AND j.operation <> 'health') AS busy, " ..
  "(SELECT max(j.finished_at) FROM jobs j WHERE j.subscription_id = i.subscription_id AND j.operation <> 'health') " ..
  "AS last_done, COALESCE(i.host, 'default') AS host FROM instances i " ..
  "WHERE i.subscription_id > ? AND i.status IN ('running', 'starting', 'unhealthy', 'stopped', 'suspended') " ..
  "ORDER BY i.subscription_id LIMIT 1"

local function next_instance(cursor)
  return check(store.query(NEXT_SQL, cursor))[1]
end

-- Queues the repair of a drifted instance: the ordinary update job with no
-- change (its plan holds only what differs), inside the caller's transaction.
local function queue_repair(inst, entries)
  local fresh = instances.get(inst.subscription_id)
  if not fresh or not M.REPAIRABLE[fresh.status] then
    return nil
  end
  fresh.status = "updating"
  instances.save(fresh)
  local resources = {}
  for _, e in ipairs(entries) do
    resources[#resources + 1] = e.resource
  end
  local id = instances.create_job(fresh.subscription_id, "update",
    { subscription_id = fresh.subscription_id, repair = true, drift = resources })
  instances.event({ id = id, subscription_id = fresh.subscription_id, operation = "update" }, "repair_queued",
    "drift found by the sweep: " .. table.concat(resources, ", "))
  return id
end

-- Probes one instance and records the outcome in rep (and, unless dry,
-- in the store). Returns the number of resources probed.
-- current_of: drift.drift's (nil: each resource probed per app).
local function sweep_one(rep, sub, dry, now, current_of, inst, prepared)
  local cfg = generation.current()
  inst = inst or instances.get(sub)
  if not inst then
    return 0
  end
  local entries, more, probed = drift.drift(inst, cfg, current_of, prepared)
  if not entries then
    add_error(rep, { subscription_id = sub, app_name = inst.app_name, error = more })
    log.warn("drift sweep: instance not probed", { subscription_id = sub, app_name = inst.app_name,
                                                   error = more })
    return 0
  end
  rep.instances_checked = rep.instances_checked + 1
  rep.probes = rep.probes + probed
  local repair_id
  if not dry then
    store.tx(function()
      drift.record(sub, entries, sys.iso_time(now))
      if #entries > 0 and rep.mode == "repair" then
        repair_id = queue_repair(inst, entries)
      end
    end)
    instances.flush()
  end
  if #entries > 0 then
    rep.drifted_count = rep.drifted_count + 1
    local shown = { subscription_id = sub, app_name = inst.app_name, resources = entries,
                    follow_ups = more.follow_ups, restarts = more.restarts, repair_job_id = repair_id or json.null }
    if #rep.drifted >= M.DETAIL_KEPT then
      local short = json.array()
      for _, e in ipairs(entries) do
        short[#short + 1] = { resource = e.resource, type = e.type, app = e.app }
      end
      shown.resources, shown.follow_ups, shown.restarts = short, nil, nil
    end
    rep.drifted[#rep.drifted + 1] = shown
    local names = {}
    for _, e in ipairs(entries) do
      names[#names + 1] = e.resource
    end
    log.warn("drift found", { subscription_id = sub, app_name = inst.app_name, resources = names,
                              repair_job_id = repair_id })
    if repair_id then
      rep.repaired[#rep.repaired + 1] = sub
      metrics.inc("mrprov_reconcile_repairs_total", {}, 1)
      jobs.notify()
    end
  end
  return probed
end

-- The missed-webhooks pass (lua/subscriptions_sync.lua, another module):
-- once per sweep when Supabase is configured; its answer goes under
-- `subscriptions`. A missing module is skipped without a word.
local function subscriptions(rep, dry)
  local settings = generation.current().settings
  if not settings.supabase or dry then
    return
  end
  local found, mod = pcall(require, "subscriptions_sync")
  if not found or type(mod) ~= "table" or type(mod.run) ~= "function" then
    return
  end
  local ok, res = pcall(mod.run, rep)
  if ok then
    rep.subscriptions = res == nil and json.null or res
  else
    local why = redact_text.credentials(tostring(type(res) == "table" and res.message or res))
    rep.subscriptions = { error = why }
    add_error(rep, { error = "subscriptions: " .. why })
  end
end

-- The app names that own Dokku objects, per Dokku host: every instance
-- not deprovisioned, on its own host ({ [host] = { [app_name] = true } }).
local function owned_names()
  local owned = {}
  for _, r in ipairs(check(store.query("SELECT app_name, COALESCE(host, 'default') AS host FROM instances " ..
      "WHERE status <> 'deprovisioned'"))) do
    owned[r.host] = owned[r.host] or {}
    owned[r.host][r.app_name] = true
  end
  return owned
end

-- Finishes a report: orphans (per Dokku host: an object on a host that no
-- instance of that host owns), the subscriptions pass, times and figures.
-- rep.orphans lists every host's together; rep.orphans_by_host each one's.
local function finish(rep, dry, now)
  local owned = store.read(owned_names)
  local orphans = { app = json.array(), postgres = json.array(), redis = json.array() }
  rep.orphans_by_host = {}
  for _, h in ipairs(hosts.list(generation.current())) do
    local found, errs = orphans_mod.find(owned[h.name] or {}, h.name)
    rep.orphans_by_host[h.name] = found
    for kind, list in pairs(found) do
      for _, name in ipairs(list) do
        orphans[kind][#orphans[kind] + 1] = name
        log.warn("orphan: named like an instance's, belongs to none (left alone)",
          { kind = kind, name = name, host = h.name })
      end
    end
    for _, e in ipairs(errs) do
      if h.name ~= "default" then e.host = h.name end
      add_error(rep, e)
    end
  end
  for _, list in pairs(orphans) do table.sort(list) end
  rep.orphans = orphans
  rep.orphans_count = #orphans.app + #orphans.postgres + #orphans.redis
  subscriptions(rep, dry)
  local t = sys.now()
  rep.state = "finished"
  rep.bulk, rep.bulk_hosts = nil, nil -- (the reports: not part of the report)
  rep.finished_at = sys.iso_time(t)
  rep.duration_seconds = math.floor((t - (rep.started or now)) * 1000 + 0.5) / 1000
  if not dry then
    metrics.set("mrprov_drift_instances", {}, drift.drifted_total())
    for kind, list in pairs(orphans) do
      metrics.set("mrprov_orphans", { kind = kind }, #list)
    end
    metrics.set("mrprov_reconcile_duration_seconds", {}, rep.duration_seconds)
    metrics.set("mrprov_reconcile_instances_checked", {}, rep.instances_checked)
    metrics.set("mrprov_reconcile_last_timestamp_seconds", {}, t)
    metrics.inc("mrprov_reconcile_sweeps_total", { outcome = rep.errors_count > 0 and "errors" or "ok" }, 1)
  end
  log.info("drift sweep finished", { checked = rep.instances_checked, drifted = rep.drifted_count,
                                     repaired = #rep.repaired, orphans = rep.orphans_count,
                                     errors = rep.errors_count, seconds = rep.duration_seconds })
end

-- Instances probed together: their probes go out in one set of waves
-- (executor.current_of), so a sweep waits for one round trip per batch, not
-- per instance. Small enough that a job arriving meanwhile waits for one
-- batch's commands at most (about two per instance with the reports).
M.BATCH = 16

-- Runs in a row a sweep without its all-apps reports yields to other jobs
-- before it probes an instance per app anyway (with YIELD_SECONDS between
-- runs: about ten seconds).
M.STARVED_RUNS = 20

-- Sweeps the instances of `subs` (subscription ids, all on Dokku host
-- `host`) with their probes sent together: each is prepared (desired state, resources), then one prober
-- made by factory(applied, list) over all of their resources answers each
-- instance's drift. Resource keys name the app or service, so they are
-- unique across instances; an instance whose keys would collide with an
-- earlier one's is swept on its own. Returns the resources probed.
local function sweep_batch(rep, subs, opts, factory, host)
  local cfg = generation.current()
  local now = opts.now or sys.now()
  local items, seen, applied, list = {}, {}, {}, {}
  local probed = 0
  for _, sub in ipairs(subs) do
    local inst = instances.get(sub)
    if inst then
      local p = drift.prepare(inst, cfg)
      local clash = false
      for _, r in ipairs(p and p.list or {}) do
        clash = clash or seen[r.key]
      end
      if p and not clash then
        local own = inst.applied or {}
        for _, r in ipairs(p.list) do
          seen[r.key] = true
          list[#list + 1] = r
          applied[r.key] = own[r.key]
        end
        items[#items + 1] = { sub = sub, inst = inst, prepared = p }
      else
        -- (nil p: the instance's error is recorded by sweep_one)
        probed = probed + sweep_one(rep, sub, opts.dry, now, factory, inst, p)
      end
    end
  end
  if #items > 0 then
    local probe = factory(applied, list, host)
    local shared = function() return probe end
    for _, it in ipairs(items) do
      probed = probed + sweep_one(rep, it.sub, opts.dry, now, shared, it.inst, it.prepared)
    end
  end
  return probed
end

-- One run of the sweep: probes instances from rep.cursor on, M.BATCH at a
-- time, at most `rate` probes a second, until `stop()` says to yield or the
-- list ends. Returns true when the sweep is done (rep finished).
function M.advance(rep, opts)
  local rate = math.max(1, opts.rate or 1000)
  local t0 = sys.monotonic()
  local probes = 0
  while true do
    -- while another job waits or runs, one instance at a time: the sweep
    -- resumes every YIELD_SECONDS and must not send a whole batch's probes
    -- ahead of that job's commands each time (jobs go first)
    local busy = opts.busy and opts.busy()
    local size = busy and 1 or M.BATCH
    local cursor0, skipped0 = rep.cursor, rep.instances_skipped
    local batch, last = {}, false
    while #batch < size do
      local nxt = store.read(next_instance, rep.cursor)
      if not nxt then
        last = true
        break
      end
      rep.cursor = nxt.sub
      if nxt.busy == 1 then
        rep.instances_skipped = rep.instances_skipped + 1
      else
        batch[#batch + 1] = nxt
      end
    end
    -- the batch's instances by Dokku host (each host has its reports)
    local names, by_host = {}, {}
    for _, nxt in ipairs(batch) do
      if not by_host[nxt.host] then
        by_host[nxt.host] = {}
        names[#names + 1] = nxt.host
      end
      table.insert(by_host[nxt.host], nxt)
    end
    for _, host in ipairs(names) do
      -- a job that arrived while the reports were read stopped the
      -- reading: it goes first, not this batch probed per app (the busy of
      -- the batch's start is older than that)
      local bulk, job_waits = bulk_mod.for_sweep(rep, opts, host)
      busy = busy or job_waits
      -- Without the reports an instance costs a probe a resource (about
      -- twenty commands) instead of about two: while another job waits or
      -- runs, the sweep yields instead, and probes that way only after
      -- M.STARVED_RUNS runs in a row found it busy (so it still moves on
      -- under a job that never ends, one instance each time).
      if not bulk and busy and bulk_mod.wanted() and (rep.starved or 0) < M.STARVED_RUNS then
        rep.starved = (rep.starved or 0) + 1
        rep.cursor, rep.instances_skipped = cursor0, skipped0
        return false
      end
      rep.starved = 0
      -- from the reports, unless a job of its own finished after they were
      -- read (that job changed it): then each resource is probed per app
      local by_reports, per_app = {}, {}
      for _, nxt in ipairs(by_host[host]) do
        if bulk and not (type(nxt.last_done) == "string" and nxt.last_done >= bulk.iso) then
          by_reports[#by_reports + 1] = nxt.sub
        else
          per_app[#per_app + 1] = nxt.sub
        end
      end
      local sent = 0
      if #by_reports > 0 then
        local counter = { n = 0 }
        sweep_batch(rep, by_reports, opts, bulk_mod.current_of(bulk.reports, counter), host)
        -- the rate bounds the commands sent: a resource the reports answered sent none
        sent = sent + counter.n
      end
      if #per_app > 0 then
        sent = sent + sweep_batch(rep, per_app, opts, executor.current_of, host)
      end
      rep.app_probes = (rep.app_probes or 0) + sent
      probes = probes + sent
      -- the rate: the next probe not before probes/rate seconds from t0
      local ahead = probes / rate - (sys.monotonic() - t0)
      if ahead > 0 then
        opts.sleep(ahead)
      end
    end
    if last then
      finish(rep, opts.dry, opts.now)
      return true
    end
    if opts.stop(sys.monotonic() - t0) then
      return false
    end
  end
end

---------------------------------------------------------------------------
-- The sweep job
---------------------------------------------------------------------------

local function sweep_jobs(states)
  return check(store.query("SELECT id, state, not_before FROM jobs WHERE subscription_id = ? AND operation = ? " ..
    "AND state IN (" .. states .. ") ORDER BY rowid", M.SUBSCRIPTION, M.OPERATION))
end

-- Queues the next sweep when RECONCILE_INTERVAL is set and none is queued
-- or running (main.c calls it at start and after a reload).
function M.schedule()
  local settings = generation.current().settings
  local every = settings.reconcile_interval or 0
  -- (in dry-run there is no server to drift from: nothing to sweep)
  if every <= 0 or dokku.mode() == "dry-run" then
    return nil
  end
  return store.tx(function()
    if sweep_jobs("'queued', 'running'")[1] then
      return nil
    end
    local id = instances.create_job(M.SUBSCRIPTION, M.OPERATION, { trigger = "schedule" })
    instances.update_job(id, { not_before = sys.iso_time(sys.now() + every) })
    return id
  end)
end

-- POST /api/v1/reconcile: starts a sweep now. Returns "started", id; or
-- "running", id when one is under way (a queued one that is paused
-- between runs counts as running once it has started).
function M.start_now()
  local outcome = store.tx(function()
    local list = sweep_jobs("'queued', 'running'")
    for _, j in ipairs(list) do
      local started = j.state == "running" or instances.job(j.id).result ~= nil
      if started then
        return { "running", j.id }
      end
    end
    if list[1] then
      -- the scheduled one, brought forward
      instances.update_job(list[1].id, { not_before = json.null, request = { trigger = "api" } })
      return { "started", list[1].id }
    end
    return { "started", instances.create_job(M.SUBSCRIPTION, M.OPERATION, { trigger = "api" }) }
  end)
  jobs.notify()
  return outcome[1], outcome[2]
end

-- The last finished sweep's report and the one under way, if any.
function M.last()
  return store.read(function()
    local done = check(store.query("SELECT id, result FROM jobs WHERE subscription_id = ? AND operation = ? " ..
      "AND state IN ('succeeded', 'failed') AND result IS NOT NULL ORDER BY rowid DESC LIMIT 1",
      M.SUBSCRIPTION, M.OPERATION))[1]
    local running
    for _, j in ipairs(sweep_jobs("'queued', 'running'")) do
      local full = instances.job(j.id)
      if full.result then
        running = { job_id = j.id, instances_checked = full.result.instances_checked,
                    started_at = full.result.started_at }
      end
    end
    local rep = done and json.decode_stored(done.result)
    if rep then
      rep = M.view(rep)
      rep.job_id = done.id
    end
    return rep, running
  end)
end

-- A claimed `reconcile` job (worker.lua): one run, then re-queued with its
-- progress, or finished with its report (and the next sweep queued).
function M.run_job(job)
  local settings = generation.current().settings
  local now = sys.now()
  local rep = job.result
  if type(rep) ~= "table" or rep.state ~= "running" then
    rep = M.new_report(now, { trigger = job.request and job.request.trigger })
  end
  local yielded = false
  local ok, done = pcall(M.advance, rep, {
    rate = settings.reconcile_probes_per_second, now = now,
    busy = function()
      return M.others_waiting()
    end,
    sleep = function(s)
      return jobs.sleep(s)
    end,
    stop = function(elapsed)
      if jobs.stopping() then
        return true
      end
      if M.others_waiting() then
        yielded = true
        return true
      end
      return elapsed >= M.RUN_SECONDS
    end,
  })
  if not ok then
    add_error(rep, { error = "sweep: " .. redact_text.credentials(tostring(type(done) == "table"
      and done.message or done)) })
    log.error("drift sweep run failed; it goes on from the next instance", { job_id = job.id,
                                                                           error = rep.errors[#rep.errors] })
  end
  store.tx(function()
    if ok and done then
      instances.update_job(job.id, { state = "succeeded", finished_at = rep.finished_at, result = rep,
                                     waiting_for = json.null })
      local every = settings.reconcile_interval or 0
      if every > 0 and not sweep_jobs("'queued'")[1] then
        local id = instances.create_job(M.SUBSCRIPTION, M.OPERATION, { trigger = "schedule" })
        instances.update_job(id, { not_before = sys.iso_time(sys.now() + every) })
      end
    else
      local pause = (yielded or not ok) and M.YIELD_SECONDS or 0
      instances.update_job(job.id, { state = "queued", result = rep,
                                     not_before = pause > 0 and sys.iso_time(sys.now() + pause) or json.null,
                                     waiting_for = yielded and "yielding to other jobs" or json.null })
    end
  end)
  if ok and done then
    metrics.inc("mrprov_jobs_total", { operation = M.OPERATION, outcome = "succeeded" })
  end
  jobs.notify()
end

-- `mrprov reconcile --dry-run`: one whole sweep in this process, nothing
-- written (the store is read-only, no job is queued): the report.
function M.dry_run()
  local settings = generation.current().settings
  local now = sys.now()
  local rep = M.new_report(now, { dry_run = true, trigger = "cli" })
  M.advance(rep, { rate = settings.reconcile_probes_per_second, now = now, dry = true,
                   sleep = function(s) if sys.sleep then sys.sleep(s) end end,
                   stop = function() return false end })
  return M.view(rep)
end

return M
