-- Runs one job (called by a C worker thread in its own Lua state): builds the
-- desired state, plans against what is on Dokku (or, in dry-run, against
-- what was recorded), journals every command before and after it runs, and
-- records the outcome. Re-running a half-done job is safe: the plan only
-- holds what is still missing.
local boot = require "boot"
local command = require "command"
local crypto = require "mrprov.crypto"
local desired = require "desired"
local dokku = require "mrprov.dokku"
local engine = require "engine"
local instances = require "instances"
local json = require "json"
local log = require "mrprov.log"
local metrics = require "mrprov.metrics"
local store = require "mrprov.store"
local sys = require "mrprov.sys"

local M = {}

M.COMMAND_TIMEOUT = 900 -- seconds; a deploy or certificate can take minutes
M.OUTPUT_LIMIT = 4096

local FINAL = { provision = "running", update = "running", deprovision = "deprovisioned" }
local BUSY = { provision = "provisioning", update = "updating", deprovision = "deprovisioning" }

function M.admin_password(app_name)
  return crypto.derive("admin-password:" .. app_name)
end

-- Masks every registered secret value in text.
local function redactor(secrets)
  return function(text)
    if not text then
      return text
    end
    for _, s in ipairs(secrets) do
      local i = 1
      while true do
        local a, b = text:find(s, i, true)
        if not a then
          break
        end
        text = text:sub(1, a - 1) .. "[REDACTED]" .. text:sub(b + 1)
        i = a + 10
      end
    end
    return text
  end
end

local function clip(s)
  if #s > M.OUTPUT_LIMIT then
    return s:sub(1, M.OUTPUT_LIMIT) .. "\n[... " .. (#s - M.OUTPUT_LIMIT) .. " more bytes]"
  end
  return s
end

-- The desired state of an instance under the current configuration.
function M.desired_state(inst, cfg)
  local tier = cfg.tiers[inst.tier]
  if not tier then
    return nil, "tier " .. inst.tier .. " is not loaded"
  end
  local spec = inst.spec or {}
  local state, err = desired.build({
    instance = {
      app_name = inst.app_name, subscription_id = inst.subscription_id, account_id = inst.account_id,
      tier = inst.tier, enable_matrix = spec.enable_matrix, matrix_type = spec.matrix_type,
      custom_domain = spec.custom_domain, limits = spec.limits, config_updates = spec.config_updates,
    },
    tier = tier,
    settings = cfg.settings,
    admin_password = M.admin_password(inst.app_name),
  })
  if not state then
    return nil, err
  end
  return state, tier
end

-- How the current state of a resource is learnt: from the server (probes,
-- read-only) or, in dry-run, from what earlier jobs recorded.
function M.current_of(applied)
  if dokku.mode() == "dry-run" then
    return function(r)
      return applied[r.key]
    end
  end
  local function run(argv)
    local full = command.full_argv({ argv = argv })
    local res, err = dokku.run(full, { timeout = 60 })
    if not res then
      return nil, table.concat(argv, " ") .. ": " .. err
    end
    return res
  end
  return function(r)
    local mod = engine.modules[r.type]
    local cur, err = mod.probe(run, r.spec)
    if cur == nil and err then
      return nil, err
    end
    return cur
  end
end

local function next_seq(job_id)
  local rows = assert(store.query("SELECT coalesce(max(seq), 0) AS m, count(*) AS n FROM steps WHERE job_id = ?",
    job_id))
  return rows[1].m, rows[1].n
end

-- Journals the planned commands as pending steps; returns the first seq.
local function journal(job, steps)
  return store.tx(function()
    assert(store.exec("DELETE FROM steps WHERE job_id = ? AND state <> 'done'", job.id))
    local seq, done = next_seq(job.id)
    local first = seq + 1
    local total = done
    for _, s in ipairs(steps) do
      for _, c in ipairs(s.commands) do
        seq = seq + 1
        total = total + 1
        c.seq = seq
        assert(store.exec([[INSERT INTO steps (job_id, seq, resource, target, command, mutating, state)
                            VALUES (?, ?, ?, ?, ?, ?, 'pending')]],
          job.id, seq, c.resource, c.target, c.display, c.mutating and 1 or 0))
      end
    end
    instances.update_job(job.id, { steps_done = done, steps_total = total })
    return first
  end)
end

local function run_command(job, c, redact)
  local now = sys.iso_time()
  store.tx(function()
    assert(store.exec("UPDATE steps SET state = 'running', started_at = ? WHERE job_id = ? AND seq = ?",
      now, job.id, c.seq))
    instances.update_job(job.id, { step = c.display })
  end)
  log.debug("dokku command", { job_id = job.id, subscription_id = job.subscription_id, command = c.display })
  local res, err, transient = dokku.run(command.full_argv(c), { timeout = M.COMMAND_TIMEOUT })
  local exit, out, ms
  if res then
    exit = res.exit
    ms = math.floor(res.duration * 1000 + 0.5)
    out = redact(clip((res.stdout or "") .. (res.stderr ~= "" and ("\n" .. res.stderr) or "")))
    if exit ~= 0 and not (c.ok_exits and c.ok_exits[exit]) then
      local msg = redact(clip(res.stderr ~= "" and res.stderr or res.stdout))
      err = string.format("%s exited %d: %s", c.display, exit, (msg:gsub("%s+$", "")))
    end
  else
    err = redact(c.display .. ": " .. tostring(err))
  end
  return { exit = exit, output = out, duration_ms = ms, error = err, transient = transient }
end

-- Runs the steps in order; returns the updated applied model, or raises.
local function apply(job, inst, steps, applied, redact)
  for _, s in ipairs(steps) do
    for _, c in ipairs(s.commands) do
      local r = run_command(job, c, redact)
      store.tx(function()
        assert(store.exec([[UPDATE steps SET state = ?, exit_code = ?, duration_ms = ?, output = ?, error = ?,
                            finished_at = ? WHERE job_id = ? AND seq = ?]],
          r.error and "failed" or "done", r.exit, r.duration_ms, r.output, r.error, sys.iso_time(), job.id, c.seq))
        if not r.error then
          assert(store.exec("UPDATE jobs SET steps_done = steps_done + 1 WHERE id = ?", job.id))
        end
      end)
      if r.error then
        error({ message = r.error, transient = r.transient }, 0)
      end
    end
    -- The resource converged: record it with its step, so a resumed dry-run
    -- job does not plan it again.
    local model, known = engine.model_after(s)
    if known then
      applied[s.resource.key] = model
      store.tx(function()
        assert(store.exec("UPDATE instances SET applied = ? WHERE subscription_id = ?", json.encode(applied),
          inst.subscription_id))
      end)
    end
  end
  return applied
end

local function set_gauges()
  local counts = instances.active_by_tier()
  local cfg = boot.current()
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
  local state, tier_or_err = M.desired_state(inst, cfg)
  if not state then
    error({ message = tier_or_err }, 0)
  end
  local password = M.admin_password(inst.app_name)
  local redact = redactor({ password, crypto.base64(password) })
  local current_of = M.current_of(inst.applied or {})

  local steps, err
  if job.operation == "deprovision" then
    steps, err = engine.teardown(state, current_of, { backup = job.request.backup_data ~= false })
    for _, s in ipairs(steps or {}) do
      s.teardown = true
    end
  else
    steps, err = engine.plan(engine.resources(state), current_of)
  end
  if not steps then
    error({ message = redact(err), transient = true }, 0)
  end
  journal(job, steps)
  local applied = apply(job, inst, steps, inst.applied or {}, redact)
  local result = { app_name = inst.app_name, dry_run = dokku.mode() == "dry-run", commands = 0 }
  for _, s in ipairs(steps) do
    result.commands = result.commands + #s.commands
  end
  if job.operation == "deprovision" then
    result.backup = json.null
    if job.request.backup_data ~= false then
      local files = json.array()
      for _, s in ipairs(steps) do
        if s.resource.type == "backup" then
          files[#files + 1] = { service = s.resource.target, path = json.null, size = json.null,
                                planned = cfg.settings.backup_dir .. "/" .. s.resource.target .. ".dump" }
        end
      end
      result.backup = { dry_run = result.dry_run, files = files }
    end
  else
    result.urls = state.urls
  end
  return state, applied, result
end

function M.run(job_id)
  local job = instances.job(job_id)
  if not job or job.state ~= "running" then
    return
  end
  local inst = instances.get(job.subscription_id)
  local cfg = boot.current()
  local t0 = sys.monotonic()
  local fields = { job_id = job.id, subscription_id = job.subscription_id, operation = job.operation }
  if not inst then
    instances.update_job(job.id, { state = "failed", error = "no instance for this subscription",
                                   finished_at = sys.iso_time() })
    return
  end
  log.info("job started", fields)
  store.tx(function()
    inst.status = BUSY[job.operation]
    inst.error = nil
    inst.generation = cfg.generation
    instances.save(inst)
    instances.update_job(job.id, { generation = cfg.generation, error = json.null })
  end)

  local ok, state, applied, result = pcall(execute, job, inst, cfg)
  local elapsed = sys.monotonic() - t0
  if ok then
    store.tx(function()
      inst.status = FINAL[job.operation]
      inst.error = nil
      inst.applied = job.operation == "deprovision" and {} or applied
      inst.dry_run = dokku.mode() == "dry-run"
      if job.operation ~= "deprovision" then
        inst.urls = state.urls
        inst.limits = state.limits
      end
      instances.save(inst)
      result.provisioning_time_seconds = math.floor(elapsed * 1000 + 0.5) / 1000
      instances.update_job(job.id, { state = "succeeded", result = result, step = json.null,
                                     finished_at = sys.iso_time() })
    end)
    fields.seconds = elapsed
    log.info("job succeeded", fields)
  else
    local e = state
    local message = type(e) == "table" and e.message or tostring(e)
    store.tx(function()
      local fresh = instances.get(job.subscription_id)
      fresh.status = "failed"
      fresh.error = message
      instances.save(fresh)
      instances.update_job(job.id, { state = "failed", error = message, finished_at = sys.iso_time() })
    end)
    fields.error = message
    log.error("job failed", fields)
    if job.operation == "provision" then
      metrics.inc("mrprov_provision_failures_total", { tier = inst.tier })
    end
  end
  metrics.inc("mrprov_jobs_total", { operation = job.operation, outcome = ok and "succeeded" or "failed" })
  if job.operation == "provision" then
    metrics.observe("mrprov_provision_duration_seconds", { tier = inst.tier }, elapsed)
  end
  set_gauges()
end

return M
