-- Runs one job (called by a C worker thread in its own Lua state): builds the
-- desired state (plan.desired_state), claims its domains, converges it
-- (converge: plan against what is on Dokku, or in dry-run against what was
-- recorded, and apply through the journal), runs the hook's after(), and
-- records the outcome. Re-running a half-done job is safe: the plan only
-- holds what is still missing.
local converge = require "converge"
local crypto = require "mrprov.crypto"
local desired = require "desired"
local dokku = require "mrprov.dokku"
local executor = require "executor"
local generation = require "generation"
local health = require "health"
local instances = require "instances"
local jobs = require "mrprov.jobs"
local json = require "json"
local log = require "mrprov.log"
local metrics = require "mrprov.metrics"
local model_key = require "model_key"
local plan = require "plan"
local drift = require "drift"
local reconcile = require "reconcile"
local rollout = require "rollout"
local redact_text = require "redact"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"

local M = {}

local SHUTDOWN = converge.SHUTDOWN

-- Runs fn in a transaction; while the store refuses writes, retries with
-- backoff (the job's outcome must be recorded, not lost). False when a stop
-- was requested meanwhile: the job stays `running` and resumes on next start.
local function durably(job, fn)
  local delay = 0.5
  while true do
    local ok, err = pcall(store.tx, fn)
    if ok then
      return true
    end
    if not store_error.unwritable(err) then
      error(err, 0)
    end
    log.error("job state cannot be recorded; retrying", { job_id = job.id, error = tostring(err), retry_in = delay })
    if not jobs.sleep(delay) then
      return false
    end
    delay = math.min(delay * 2, 10)
  end
end

-- (stop, start, restart, suspend and resume are updates of the desired
-- state, lua/lifecycle.lua: "updating" while their job runs)
local BUSY = { provision = "provisioning", update = "updating", deprovision = "deprovisioning", stop = "updating",
               start = "updating", restart = "updating", suspend = "updating", resume = "updating" }

local function set_gauges()
  health.set_gauges()
  for status, n in pairs(instances.stopped_counts()) do
    metrics.set("mrprov_instances_stopped", { status = status }, n)
  end
  local counts = instances.active_by_tier()
  local cfg = generation.current()
  for name in pairs(cfg.tiers) do
    metrics.set("mrprov_active_instances", { tier = name }, counts[name] or 0)
  end
  for name, n in pairs(counts) do
    if not cfg.tiers[name] then
      metrics.set("mrprov_active_instances", { tier = name }, n)
    end
  end
end

local function execute(job, inst, cfg)
  inst.operation = job.operation
  local state, tier_or_err, hook = plan.desired_state(inst, cfg)
  if not state then
    error({ message = redact_text.redactor(executor.job_secrets(inst, nil))(tier_or_err) }, 0)
  end
  -- The instance's own OpenRouter key (lua/model_key.lua): made (or
  -- revoked) before any Dokku command, so the app's first start has it;
  -- its record is stored at once, its value only ever sits in this state.
  local function save_key(meta)
    store.tx(function()
      inst.applied = inst.applied or {}
      inst.applied[model_key.SLOT] = meta
      instances.save_applied(inst.subscription_id, inst.applied)
    end)
  end
  if job.operation == "restart" then
    -- each running app restarted once for this job (resources/processes.lua)
    state.restart_token = job.id
  end
  local key_plan = {}
  if job.operation == "deprovision" then
    local warning = model_key.revoke(inst, cfg.settings, save_key)
    if warning then
      log.warn(warning, { job_id = job.id, subscription_id = job.subscription_id })
      instances.event(job, "model_key_kept", warning)
    end
  else
    key_plan = model_key.prepare(inst, tier_or_err, cfg.settings, save_key)
    local ok, why = model_key.inject(state, key_plan)
    if not ok then
      error({ message = why }, 0)
    end
  end
  local secrets = executor.job_secrets(inst, state)
  if key_plan.value then
    secrets[#secrets + 1] = key_plan.value
    secrets[#secrets + 1] = crypto.base64(key_plan.value)
  end
  local redact = redact_text.redactor(secrets)
  if job.operation ~= "deprovision" then
    -- The domains are claimed before anything reaches Dokku; two instances
    -- cannot both serve one (instances.claim_domains).
    local list, derr = desired.domains(state)
    local claim = list and store.tx(function()
      local ok, why = instances.claim_domains(inst.subscription_id, list)
      return { ok = ok, why = why }
    end) or { why = derr }
    if not claim.ok then
      error({ message = redact(claim.why) }, 0)
    end
  end
  local stamp = sys.iso_time():gsub("[^%dTZ]", "")
  local ctx = converge.context(instances.host_of(inst), inst, job, cfg, stamp)
  local ok, res = pcall(converge.converge, job, inst, state, ctx, redact)
  if not ok then
    -- No rollback when interrupted (resumes) or when the store cannot
    -- journal it (a repeat resumes and converges instead). A rollback undoes
    -- what every run of the job created, from the journal.
    local held = type(res) == "table" and (res.shutdown or res.store or res.host_down)
    if job.operation == "provision" and not held then
      converge.undo(job, inst, ctx, res.applied or inst.applied or {}, redact, state)
      local gone, why = model_key.abandon(inst, cfg.settings, save_key)
      if not gone then
        log.warn("a failed provision's OpenRouter key was not revoked", { job_id = job.id, error = redact(why) })
      end
    end
    error(res, 0)
  end
  local applied = res
  if hook and hook.after and job.operation ~= "deprovision" then
    converge.after_hook(job, hook, state, plan.hook_ctx(inst, tier_or_err), redact, ctx)
  end
  -- the app holds the new key: it is the instance's, the one it replaces goes
  model_key.finish(inst, cfg.settings, key_plan, save_key)
  applied[model_key.SLOT] = (inst.applied or {})[model_key.SLOT]
  local result = { app_name = inst.app_name, dry_run = dokku.mode() == "dry-run", commands = ctx.commands }
  if job.operation == "deprovision" then
    result.backup = json.null
    if job.request.backup_data ~= false then
      result.backup = { files = ctx.backups }
    end
  else
    result.urls = state.urls
  end
  return state, applied, result
end

-- A `health` job: one readiness check, then re-queued with a delay or
-- finished (lua/health.lua). The instance is re-read inside the
-- transaction: a request may have started an update meanwhile, and the
-- check then changes nothing of it.
local HEALTH_FIELDS = { "status", "error", "health_state", "health_error", "health_checked_at" }
local CHECKED = { starting = true, unhealthy = true }

-- A rollout's driver waiting for a step (its job, its readiness check)
-- looks again now rather than at its next poll.
local function wake_rollouts()
  local ok, err = pcall(store.tx, rollout.wake)
  if ok then
    jobs.notify()
  else
    log.debug("rollout wake-up not recorded (the driver polls)", { error = tostring(err) })
  end
end

local function run_health(job)
  local inst = instances.get(job.subscription_id)
  local fields, changed, event = health.step(job, inst, sys.now())
  local ok = durably(job, function()
    local fresh = changed and instances.get(job.subscription_id)
    if fresh and CHECKED[fresh.status] then
      for _, k in ipairs(HEALTH_FIELDS) do
        fresh[k] = changed[k]
      end
      instances.save(fresh)
      if event then
        instances.event(job, event.kind, event.message)
      end
    elseif changed then
      fields = { state = "succeeded", finished_at = sys.iso_time(), waiting_for = json.null,
                 not_before = json.null, result = { health = "not checked: the instance changed meanwhile" } }
    end
    instances.update_job(job.id, fields)
  end)
  if not ok then
    return
  end
  instances.flush()
  local lf = { job_id = job.id, subscription_id = job.subscription_id, state = fields.state,
               answer = changed and changed.health_error or nil }
  if event then
    log.info(event.kind == "health_ok" and "instance ready" or "instance unhealthy", lf)
  elseif fields.state == "queued" then
    log.debug("health check: not ready yet", lf)
  end
  if fields.state ~= "queued" then
    metrics.inc("mrprov_jobs_total", { operation = job.operation, outcome = fields.state })
  end
  if changed and fields.state ~= "queued" or event then
    -- a rollout waiting for this readiness has something to record
    wake_rollouts()
  end
  set_gauges()
end

function M.run(job_id)
  local job = instances.job(job_id)
  if not job or job.state ~= "running" then
    return
  end
  if job.operation == health.OPERATION then
    return run_health(job)
  end
  if job.operation == reconcile.OPERATION then
    return reconcile.run_job(job)
  end
  if job.operation == rollout.OPERATION then
    return rollout.run_job(job)
  end
  if job.operation == "move" then
    -- a move between Dokku hosts (lua/move.lua): its phases are its own
    return require("move").run_job(job)
  end
  local inst = instances.get(job.subscription_id)
  local cfg = generation.current()
  local t0 = sys.monotonic()
  local fields = { job_id = job.id, subscription_id = job.subscription_id, operation = job.operation }
  if not inst then
    instances.update_job(job.id, { state = "failed", error = "no instance for this subscription",
                                   finished_at = sys.iso_time() })
    return
  end
  log.info("job started", fields)
  local started = durably(job, function()
    inst.status = BUSY[job.operation]
    inst.error = nil
    inst.generation = cfg.generation
    instances.save(inst)
    instances.update_job(job.id, { generation = cfg.generation, error = json.null })
    -- a readiness check still queued is for what this job replaces
    health.retire(job.subscription_id, job.id)
    instances.event(job, "job_started", job.operation .. " started")
  end)
  if not started then
    return
  end
  instances.flush()

  local ok, state, applied, result = pcall(execute, job, inst, cfg)
  local elapsed = sys.monotonic() - t0
  if not ok and type(state) == "table" and state.host_down then
    -- The instance's Dokku host does not answer: back in the queue until
    -- it does (checked again at each try), its steps journaled; the
    -- worker is free for other hosts' jobs meanwhile.
    local delay = instances.retry_delay(job.attempts)
    local waiting = ("Dokku host %s is unreachable (%s); next try in %.1f s"):format(state.host_down,
      tostring(state.host_error or state.message), delay)
    instances.requeue(job.id, waiting, delay)
    fields.waiting_for = waiting
    log.warn("job waiting for its Dokku host", fields)
    return
  end
  if not ok and type(state) == "table" and state.shutdown then
    -- Interrupted, not failed: back in the queue with its steps journaled;
    -- the instance keeps its busy status until the job resumes.
    pcall(store.tx, function()
      instances.update_job(job.id, { state = "queued", waiting_for = SHUTDOWN, step = json.null })
      instances.event(job, "job_interrupted", SHUTDOWN)
    end)
    instances.flush()
    fields.seconds = elapsed
    log.info("job checkpointed for shutdown", fields)
    return
  end
  if ok then
    local readiness
    -- what this job converged: stopped (or suspended) when its state was
    local stopped = job.operation ~= "deprovision" and state.stopped and instances.stopped_status(inst.spec)
    durably(job, function()
      -- A request may have changed the instance's spec or tier while this
      -- job ran (a start after a stop, an update): that is kept for the
      -- job it queued, not overwritten with what this job started from.
      local fresh = instances.get(inst.subscription_id)
      if fresh then
        inst.spec, inst.tier = fresh.spec, fresh.tier
      end
      if job.operation == "deprovision" then
        inst.status = "deprovisioned"
        inst.health_state, inst.health_error = nil, nil
      else
        readiness = health.settle(inst, state, stopped, result, dokku.mode() == "dry-run")
      end
      inst.error = nil
      -- converged: what the last sweep found differing is history
      drift.forget(inst.subscription_id)
      inst.applied = job.operation == "deprovision" and {} or applied
      -- claims on domains the instance no longer serves are given up
      instances.keep_domains(inst.subscription_id,
        job.operation == "deprovision" and {} or (desired.domains(state) or {}))
      inst.dry_run = dokku.mode() == "dry-run"
      if job.operation ~= "deprovision" then
        inst.urls = state.urls
        inst.limits = state.limits
      end
      instances.save(inst)
      result.provisioning_time_seconds = math.floor(elapsed * 1000 + 0.5) / 1000
      instances.update_job(job.id, { state = "succeeded", result = result, step = json.null,
                                     finished_at = sys.iso_time() })
      for _, f in ipairs(result.backup and result.backup ~= json.null and result.backup.files or {}) do
        if f.path ~= json.null then
          instances.backup(inst, job, f)
        end
      end
      instances.event(job, "job_succeeded", job.operation .. " finished",
        { seconds = result.provisioning_time_seconds, commands = result.commands, health = result.health })
    end)
    instances.flush()
    if readiness and readiness.check then
      jobs.notify()
    end
    if job.operation == "deprovision" then
      health.forget_metrics(inst)
    end
    fields.seconds = elapsed
    fields.health = result.health
    fields.status = inst.status
    log.info("job succeeded", fields)
  else
    local e = state
    local message = type(e) == "table" and e.message or tostring(e)
    if store_error.unwritable(e) then
      message = "the state store cannot be written: " .. message
    end
    durably(job, function()
      local fresh = instances.get(job.subscription_id)
      fresh.status = "failed"
      fresh.error = message
      instances.save(fresh)
      instances.update_job(job.id, { state = "failed", error = message, finished_at = sys.iso_time() })
      instances.event(job, "job_failed", message)
    end)
    instances.flush()
    fields.error = message
    log.error("job failed", fields)
    if job.operation == "provision" then
      metrics.inc("mrprov_provision_failures_total", { tier = inst.tier })
    end
  end
  metrics.inc("mrprov_jobs_total", { operation = job.operation, outcome = ok and "succeeded" or "failed" })
  if type(job.request) == "table" and job.request.rollout_id then
    wake_rollouts()
  end
  if job.operation == "provision" then
    metrics.observe("mrprov_provision_duration_seconds", { tier = inst.tier }, elapsed)
  end
  set_gauges()
end

return M
