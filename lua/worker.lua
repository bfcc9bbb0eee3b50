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
local hooks = require "hooks"
local instances = require "instances"
local jobs = require "mrprov.jobs"
local json = require "json"
local log = require "mrprov.log"
local metrics = require "mrprov.metrics"
local redact_text = require "redact"
local store = require "mrprov.store"
local sys = require "mrprov.sys"

local M = {}

M.COMMAND_TIMEOUT = 900 -- seconds (DOKKU_COMMAND_TIMEOUT); a deploy or certificate can take minutes
M.OUTPUT_LIMIT = 4096
M.MAX_ATTEMPTS = 6 -- plan-and-apply rounds before a transient failure becomes final
M.RETRY_BASE = 0.5 -- seconds, doubled each round, with jitter
M.RETRY_CAP = 30
-- Dokku's answers to creating what already exists (apps:create,
-- postgres/redis:create, *:link, storage:mount).
M.RACED = { "Name is already taken", " already exists", "Already linked as ", "Mount path already exists" }

-- Raised at a checkpoint once SIGTERM asked the workers to stop: the job
-- stays resumable (queued; the next start re-plans from what is on Dokku).
local SHUTDOWN = "stopped at a checkpoint for shutdown; resumes on the next start"
local CANCELLED = "cancelled: shutting down" -- a command given up at the shutdown bound

local function checkpoint()
  if jobs.stopping() then
    error({ message = SHUTDOWN, shutdown = true }, 0)
  end
end

-- A store error from the file system (disk full, I/O error, read-only):
-- nothing can be journaled, so no command may run; it may pass.
local function store_trouble(msg)
  msg = tostring(msg)
  return msg:find("database or disk is full", 1, true) or msg:find("disk I/O error", 1, true)
    or msg:find("readonly database", 1, true) or msg:find("unable to open database file", 1, true)
end
M.store_trouble = store_trouble

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
    if not store_trouble(err) then
      error(err, 0)
    end
    log.error("job state cannot be recorded; retrying", { job_id = job.id, error = tostring(err), retry_in = delay })
    if not jobs.sleep(delay) then
      return false
    end
    delay = math.min(delay * 2, 10)
  end
end

local FINAL = { provision = "running", update = "running", deprovision = "deprovisioned" }
local BUSY = { provision = "provisioning", update = "updating", deprovision = "deprovisioning" }

function M.timeout()
  local cfg = boot.current()
  return cfg and cfg.settings.command_timeout or M.COMMAND_TIMEOUT
end

function M.admin_password(app_name)
  return crypto.derive("admin-password:" .. app_name)
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
  local hook = hooks.find(cfg.hooks, inst)
  if hook then
    state, err = hooks.apply_desired(hook, state, M.hook_ctx(inst, tier), { base_domain = cfg.settings.base_domain })
    if not state then
      return nil, err
    end
  end
  return state, tier, hook
end

-- What a hook is told about its instance (no secret).
function M.hook_ctx(inst, tier)
  return {
    subscription_id = inst.subscription_id, account_id = inst.account_id, app_name = inst.app_name,
    tier = tier.name, operation = inst.operation,
  }
end

-- How the current state of a resource is learnt: from the server (probes,
-- read-only) or, in dry-run, from what earlier jobs recorded.
function M.current_of(applied, list)
  if dokku.mode() == "dry-run" then
    return function(r)
      return applied[r.key]
    end
  end
  local timeout = math.min(60, M.timeout())
  -- Every probe runs one read-only command: run them all at once (one wave
  -- over the pool) instead of one after another. Each probe runs in a
  -- coroutine that yields its argv; the answers are fed back in.
  local cache = {}
  if list then
    local pending = {}
    for _, r in ipairs(list) do
      local mod = engine.modules[r.type]
      if mod and mod.probe then
        local co = coroutine.create(function()
          return mod.probe(function(argv) return coroutine.yield(argv) end, r.spec)
        end)
        local ok, argv = coroutine.resume(co)
        if ok and coroutine.status(co) == "suspended" then
          pending[#pending + 1] = { r = r, co = co, argv = argv }
        end
      end
    end
    for first = 1, #pending, 64 do
      local calls = {}
      for i = first, math.min(#pending, first + 63) do
        calls[#calls + 1] = { argv = command.full_argv({ argv = pending[i].argv }), timeout = timeout }
      end
      for k, res in ipairs(dokku.run_many(calls)) do
        local p = pending[first + k - 1]
        local answer, err = res.ok, res.error
        if not answer then
          err = table.concat(p.argv, " ") .. ": " .. tostring(err)
        end
        local ok, cur, perr = coroutine.resume(p.co, answer, err)
        if ok and coroutine.status(p.co) == "dead" then
          cache[p.r.key] = { cur = cur, err = (cur == nil and perr) or nil }
        end
      end
    end
  end
  local function run(argv)
    local full = command.full_argv({ argv = argv })
    local res, err = dokku.run(full, { timeout = timeout })
    if not res then
      return nil, table.concat(argv, " ") .. ": " .. err
    end
    return res
  end
  -- A probe that cannot see everything is completed from what the journal
  -- recorded for the resource (mod.recall; see resources/image.lua).
  local function recalled(r, cur)
    local mod = engine.modules[r.type]
    if mod.recall then
      return mod.recall(cur, applied[r.key])
    end
    return cur
  end
  return function(r)
    local hit = cache[r.key]
    if hit then
      if hit.err then
        return nil, hit.err
      end
      return recalled(r, hit.cur)
    end
    local mod = engine.modules[r.type]
    local cur, err = mod.probe(run, r.spec)
    if cur == nil and err then
      return nil, err
    end
    return recalled(r, cur)
  end
end

-- The last step number of a job and how many of its steps are done.
local function next_seq(job_id)
  local rows = assert(store.query([[SELECT coalesce(max(seq), 0) AS m, count(CASE WHEN state = 'done' THEN 1 END) AS n
                                     FROM steps WHERE job_id = ?]], job_id))
  return rows[1].m, rows[1].n
end

M.INTERRUPTED = "interrupted: mrprov stopped while this command ran; the resumed job probed what it did"

-- Journals the planned commands as pending steps; returns the first seq.
-- Steps a crash left pending are dropped (the new plan holds what is still
-- missing); one it left running is kept as failed with M.INTERRUPTED (its
-- outcome is unknown: it may have changed the server, see created_by_job);
-- failed ones stay as the job's history.
local function journal(job, steps)
  return store.tx(function()
    assert(store.exec("DELETE FROM steps WHERE job_id = ? AND state = 'pending'", job.id))
    assert(store.exec([[UPDATE steps SET state = 'failed', error = ?, finished_at = ?
                        WHERE job_id = ? AND state = 'running']], M.INTERRUPTED, sys.iso_time(), job.id))
    local seq, done = next_seq(job.id)
    local first = seq + 1
    local total = done
    for _, s in ipairs(steps) do
      for _, c in ipairs(s.commands) do
        seq = seq + 1
        total = total + 1
        c.seq = seq
        assert(store.exec([[INSERT INTO steps (job_id, seq, resource, target, command, mutating, restart, deploys,
                                               state)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')]],
          job.id, seq, c.resource, c.target, c.display, c.mutating and 1 or 0, c.restart and 1 or 0,
          c.deploys and 1 or 0))
      end
    end
    instances.update_job(job.id, { steps_done = done, steps_total = total })
    return first
  end)
end

-- Apps this job changed (in an earlier round, or in a run a crash cut
-- short) and has not started since, from the journal, sorted. A new round
-- finds those changes already in place and plans no restart for them, so
-- the round is told. A change the crash interrupted counts as made; only
-- a start known to be done counts as a start. What a step does to its app
-- is journaled with it (the `restart` and `deploys` its resource module
-- marked the command with); a step journaled before the journal kept that
-- (NULL) counts as a change, never as a start.
function M.owed_restarts(job_id)
  local owed = {}
  for _, row in ipairs(assert(store.query([[SELECT target, restart, deploys, state, error FROM steps
                                             WHERE job_id = ? ORDER BY seq]], job_id))) do
    -- (while a round plans nothing runs: a step still `running` is one a
    -- crash cut short, not yet marked by journal())
    local made = row.state == "done" or row.state == "running"
      or (row.state == "failed" and row.error == M.INTERRUPTED)
    if made and row.restart ~= 0 then
      owed[row.target] = true
    elseif row.state == "done" and row.deploys == 1 then
      owed[row.target] = nil
    end
  end
  local list = {}
  for app in pairs(owed) do
    list[#list + 1] = app
  end
  table.sort(list)
  return list
end

-- Records the outcome r of step seq (inside the caller's transaction).
local function finish_step(job_id, seq, r)
  assert(store.exec([[UPDATE steps SET state = ?, exit_code = ?, duration_ms = ?, output = ?, error = ?,
                      finished_at = ? WHERE job_id = ? AND seq = ?]],
    r.error and "failed" or "done", r.exit, r.duration_ms, r.output, r.error, sys.iso_time(), job_id, seq))
  if not r.error then
    assert(store.exec("UPDATE jobs SET steps_done = steps_done + 1 WHERE id = ?", job_id))
  end
end

-- The outcome of one command: {exit, output, duration_ms, error, transient, bytes}.
local function outcome(c, res, err, transient, redact)
  local r = { transient = transient }
  if res then
    r.exit = res.exit
    r.bytes = res.bytes
    r.duration_ms = math.floor(res.duration * 1000 + 0.5)
    local out = c.stream and "" or (res.stdout or "")
    -- redacted before it is clipped: a cut could leave half a password
    -- or a URL without its `@` that the redactor would no longer know
    r.output = clip(redact(out .. (res.stderr ~= "" and ((out ~= "" and "\n" or "") .. res.stderr) or "")))
    -- (a dry run sends nothing, so nothing answers)
    if res.exit == 0 and c.expect and dokku.mode() ~= "dry-run"
        and not (res.stdout or ""):find(c.expect.text, 1, true) then
      r.error = redact(c.display .. ": " .. c.expect.otherwise)
    elseif res.exit ~= 0 and not (c.ok_exits and c.ok_exits[res.exit]) then
      local msg = clip(redact(res.stderr ~= "" and res.stderr or (c.stream and "" or res.stdout)))
      r.error = string.format("%s exited %d: %s", c.display, res.exit, (msg:gsub("%s+$", "")))
      -- Dokku's per-app deploy lock is held by another build: worth a
      -- retry. So is a create or link that finds its object already there:
      -- the same command sent before a crash may still have been running
      -- on the server when the resumed job probed; the next round probes
      -- again and goes on (a conflict that persists fails after the last).
      r.transient = res.stderr:find("deploy lock in place", 1, true) ~= nil
      for _, text in ipairs(M.RACED) do
        r.transient = r.transient or res.stderr:find(text, 1, true) ~= nil
      end
    end
  else
    r.error = redact(c.display .. ": " .. tostring(err))
    r.cancelled = err == CANCELLED
  end
  return r
end

-- Runs a wave of commands at once (each on its own channel) and returns
-- their outcomes in order.
local function run_wave(cmds, redact)
  local calls = {}
  for i, c in ipairs(cmds) do
    calls[i] = { argv = command.full_argv(c), timeout = M.timeout(), stdout_file = c.stdout_file }
  end
  local results, raw = {}, {}
  if #calls == 1 then
    local res, err, transient = dokku.run(calls[1].argv, calls[1])
    raw[1] = res
    results[1] = outcome(cmds[1], res, err, transient, redact)
  else
    for i, r in ipairs(dokku.run_many(calls)) do
      raw[i] = r.ok
      results[i] = outcome(cmds[i], r.ok, r.error, r.transient, redact)
    end
  end
  for i, c in ipairs(cmds) do
    local fb = c.fallback
    if results[i].error and fb and raw[i] and (raw[i].stderr or ""):find(fb.when, 1, true) then
      local alt = command.new(c.resource, c.target, fb.argv)
      local res, err, transient = dokku.run(command.full_argv(alt), { timeout = M.timeout() })
      local r = outcome(alt, res, err, transient, redact)
      r.output = (results[i].output or "") .. "\n-> " .. alt.display .. "\n" .. (r.output or "")
      results[i] = r
      -- the resource's model tells (see resources/image.lua): what Dokku
      -- reports afterwards does not show what the fallback deployed
      c.fell_back = not r.error
    end
  end
  return results
end

-- Runs the steps: in waves, each wave holding the next command of every
-- step whose locks no earlier unfinished step holds. Journals each command
-- before and after it runs; records a step's model when it completes.
-- Returns the applied model, or raises {message, transient}.
local function apply(job, inst, steps, applied, redact, ctx)
  for _, s in ipairs(steps) do
    s.next = 1
  end
  while true do
    local wave, held = {}, {}
    for _, s in ipairs(steps) do
      if s.next <= #s.commands then
        local free = true
        for _, l in ipairs(s.locks or { s.resource.target }) do
          free = free and not held[l]
          held[l] = true
        end
        if free then
          wave[#wave + 1] = s
        end
      end
    end
    if #wave == 0 then
      return applied
    end
    -- Checkpoint: no new Dokku command once a stop was requested.
    checkpoint()
    local cmds = {}
    for i, s in ipairs(wave) do
      cmds[i] = s.commands[s.next]
      if cmds[i].stream and dokku.mode() ~= "dry-run" then
        cmds[i].stdout_file = ctx.backup_path(cmds[i])
      end
    end
    store.tx(function()
      local now = sys.iso_time()
      for _, c in ipairs(cmds) do
        assert(store.exec("UPDATE steps SET state = 'running', started_at = ? WHERE job_id = ? AND seq = ?",
          now, job.id, c.seq))
        log.debug("dokku command", { job_id = job.id, subscription_id = job.subscription_id, command = c.display })
      end
      instances.update_job(job.id, { step = cmds[#cmds].display, waiting_for = json.null })
    end)
    local results = run_wave(cmds, redact)
    local failure, cancelled
    store.tx(function()
      for i, s in ipairs(wave) do
        local c, r = cmds[i], results[i]
        if r.cancelled then
          -- Given up at the shutdown bound: it may or may not have run. The
          -- step stays 'running', as after a crash; the resumed job re-probes.
          cancelled = true
        else
          finish_step(job.id, c.seq, r)
        end
        if r.cancelled then
          log.warn("dokku command given up for shutdown", { job_id = job.id, command = c.display })
        elseif r.error then
          failure = failure or r
          instances.event(job, "step_failed", r.error, { command = c.display, exit_code = r.exit or json.null,
                                                         transient = r.transient and true or false })
        else
          s.next = s.next + 1
          if c.stream then
            ctx.backups[#ctx.backups + 1] = { service = c.target, path = c.stdout_file or json.null,
                                              size = c.stdout_file and r.bytes or json.null }
          end
          if s.next > #s.commands then
            if not s.teardown and engine.creates(s.resource) then
              ctx.created[#ctx.created + 1] = s.resource
            end
            -- The resource converged: record it with its step, so a resumed
            -- dry-run job does not plan it again.
            local model, known = engine.model_after(s)
            if known then
              applied[s.resource.key] = model
            end
          end
        end
      end
      assert(store.exec("UPDATE instances SET applied = ? WHERE subscription_id = ?", json.encode(applied),
        inst.subscription_id))
    end)
    instances.flush()
    if cancelled then
      error({ message = SHUTDOWN, shutdown = true }, 0)
    end
    if failure then
      error({ message = failure.error, transient = failure.transient }, 0)
    end
  end
end

-- What this job created, in dependency order: in this run (ctx.created)
-- and in the runs of it a crash interrupted, whose creating commands the
-- journal holds as done steps, or as steps the crash interrupted (they may
-- have completed on the server) — a resumed run plans only what is missing,
-- so its own list lacks them. Undoing something that is not there is harmless.
local function created_by_job(job, state, ctx)
  local made = {}
  for _, r in ipairs(ctx.created) do
    made[r.key] = true
  end
  local done = {}
  for _, row in ipairs(assert(store.query([[SELECT command FROM steps WHERE job_id = ?
                                              AND (state = 'done' OR (state = 'failed' AND error = ?))]],
      job.id, M.INTERRUPTED))) do
    done[row.command] = true
  end
  local list = {}
  for _, r in ipairs(engine.resources(state)) do
    if engine.creates(r) and not made[r.key] then
      for _, c in ipairs(engine.modules[r.type].diff(r.spec, nil)) do
        made[r.key] = made[r.key] or done[c.display]
      end
    end
    if made[r.key] then
      list[#list + 1] = r
    end
  end
  return list
end

-- Removes, in reverse order, what this job created (a failed provision
-- must not leave apps or services behind). Best effort: logs and goes on.
local function undo(job, inst, ctx, applied, redact, state)
  local cmds = {}
  local created = created_by_job(job, state, ctx)
  for i = #created, 1, -1 do
    local r = created[i]
    for _, c in ipairs(engine.modules[r.type].undo(r.spec)) do
      cmds[#cmds + 1] = { command = c, key = r.key }
    end
  end
  if #cmds == 0 then
    return
  end
  local seq = store.tx(function()
    local first = next_seq(job.id) + 1
    for i, u in ipairs(cmds) do
      u.command.seq = first + i - 1
      assert(store.exec([[INSERT INTO steps (job_id, seq, resource, target, command, mutating, restart, deploys,
                                             state)
                          VALUES (?, ?, 'undo', ?, ?, 1, 0, 0, 'pending')]],
        job.id, u.command.seq, u.command.target, u.command.display))
    end
    assert(store.exec("UPDATE jobs SET steps_total = steps_total + ? WHERE id = ?", #cmds, job.id))
    return first
  end)
  assert(seq)
  for _, u in ipairs(cmds) do
    local r = run_wave({ u.command }, redact)[1]
    store.tx(function()
      finish_step(job.id, u.command.seq, r)
      if not r.error then
        applied[u.key] = nil
        assert(store.exec("UPDATE instances SET applied = ? WHERE subscription_id = ?", json.encode(applied),
          inst.subscription_id))
      end
    end)
    if r.error then
      log.warn("undo step failed", { job_id = job.id, subscription_id = job.subscription_id, error = r.error })
    end
  end
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

-- Plans against the current state and applies; on a transient failure
-- waits (capped exponential backoff with jitter) and plans again, so what
-- already happened is probed, not repeated.
local function converge(job, inst, state, ctx, redact)
  local applied = inst.applied or {}
  local attempt, store_waits = 0, 0
  while true do
    attempt = attempt + 1
    local ok, err = pcall(function()
      local steps, perr
      local list = job.operation ~= "deprovision" and engine.resources(state) or nil
      local current_of = M.current_of(applied, list)
      if job.operation == "deprovision" then
        steps, perr = engine.teardown(state, current_of, { backup = job.request.backup_data ~= false })
      else
        steps, perr = engine.plan(list, current_of, M.owed_restarts(job.id))
      end
      if not steps then
        error({ message = redact(tostring(perr)), transient = true }, 0)
      end
      journal(job, steps)
      for _, s in ipairs(steps) do
        ctx.commands = ctx.commands + #s.commands
      end
      applied = apply(job, inst, steps, applied, redact, ctx)
    end)
    if ok then
      return applied
    end
    local e = type(err) == "table" and err or { message = tostring(err) }
    if jobs.stopping() and not e.shutdown then
      -- A failure while stopping may be the shutdown's own doing (a probe
      -- given up): the resumed job plans again instead.
      e = { message = SHUTDOWN, shutdown = true, cause = e.message }
    end
    if e.shutdown then
      e.applied = applied
      error(e, 0)
    end
    if store_trouble(e.message) then
      -- No step can be journaled, so no command runs until one can. This
      -- waits (capped backoff) without using up the attempts: the job goes
      -- on by itself once the disk has room again, or resumes after a stop.
      local why = tostring(e.message):gsub("^[^:]*%.lua:%d+: ", "")
      e = { message = "the state store cannot be written: " .. why, transient = true, store = true }
      store_waits = store_waits + 1
      attempt = attempt - 1
    end
    if not e.transient or attempt >= M.MAX_ATTEMPTS then
      e.applied = applied
      error(e, 0)
    end
    local delay = math.min(M.RETRY_CAP, M.RETRY_BASE * 2 ^ (attempt + store_waits - 1)) * (0.5 + math.random() / 2)
    local waiting = e.store and string.format("waiting for the state store (next try in %.1f s): %s", delay, e.message)
      or string.format("retry %d of %d in %.1f s after: %s", attempt, M.MAX_ATTEMPTS - 1, delay,
      e.message)
    pcall(instances.update_job, job.id, { waiting_for = waiting }) -- the store may be what fails
    log.warn("job waiting", { job_id = job.id, subscription_id = job.subscription_id, waiting_for = waiting })
    if not jobs.sleep(delay) then
      error({ message = SHUTDOWN, shutdown = true, applied = applied }, 0)
    end
  end
end

-- Runs the hook's after() through a handle scoped to this instance; each
-- command it sends is journaled as a step of the job.
local function run_after_hook(job, inst, hook, state, tier, redact, ctx)
  -- effects: what the command does to its app (hooks.effects)
  local runner = function(argv, effects)
    local target = argv[2]
    for i = 2, #argv do
      if argv[i]:sub(1, 1) ~= "-" then
        target = argv[i]
        break
      end
    end
    local c = command.new("hook", target, argv, command.shown_env(argv), effects)
    local seq = store.tx(function()
      local s = next_seq(job.id) + 1
      c.seq = s
      assert(store.exec([[INSERT INTO steps (job_id, seq, resource, target, command, mutating, restart, deploys,
                                             state)
                          VALUES (?, ?, 'hook', ?, ?, 1, ?, ?, 'pending')]], job.id, s, c.target, c.display,
        c.restart and 1 or 0, c.deploys and 1 or 0))
      assert(store.exec("UPDATE jobs SET steps_total = steps_total + 1 WHERE id = ?", job.id))
      return s
    end)
    local r = run_wave({ c }, redact)[1]
    store.tx(function()
      finish_step(job.id, seq, r)
    end)
    ctx.commands = ctx.commands + 1
    return { exit = r.exit or -1, output = r.output or "", error = r.error }
  end
  local ok, err = hooks.run_after(hook, state, M.hook_ctx(inst, tier), runner)
  if not ok then
    error({ message = redact(err) }, 0)
  end
end

-- M.SECRET_MIN bytes: a shorter environment value ("1", "true") would mask
-- every such word of every output; the admin password is always masked.
M.SECRET_MIN = 8

-- The values masked in every output, error and log line of a job (besides
-- the credentials redact.credentials finds by form): the admin password,
-- the customer's config_updates and the environment of apps a hook added,
-- each raw and base64-encoded. Dokku echoes values back in some errors
-- (v0.38: an ENV file it cannot read is quoted in every config command's
-- error), and any of those values may be a customer's secret.
function M.job_secrets(inst, state)
  local password = M.admin_password(inst.app_name)
  local list = { password, crypto.base64(password) }
  local function add(v)
    if type(v) == "string" and #v >= M.SECRET_MIN then
      list[#list + 1] = v
      list[#list + 1] = crypto.base64(v)
    end
  end
  for _, v in pairs(inst.spec and inst.spec.config_updates or {}) do
    add(v)
  end
  for _, a in ipairs(state and state.apps or {}) do
    if a.role == "hook" then
      for _, v in pairs(a.env or {}) do
        add(v)
      end
    end
  end
  return list
end

local function execute(job, inst, cfg)
  inst.operation = job.operation
  local state, tier_or_err, hook = M.desired_state(inst, cfg)
  if not state then
    error({ message = redact_text.redactor(M.job_secrets(inst, nil))(tier_or_err) }, 0)
  end
  local redact = redact_text.redactor(M.job_secrets(inst, state))
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
  local ctx = {
    created = {}, backups = json.array(), commands = 0,
    backup_path = function(c)
      local dir = cfg.settings.backup_dir .. "/" .. inst.app_name
      assert(sys.mkdir_p(dir))
      return string.format("%s/%s-%s-%s.dump", dir, stamp, job.id, c.target)
    end,
  }
  local ok, res = pcall(converge, job, inst, state, ctx, redact)
  if not ok then
    -- No rollback when interrupted (resumes) or when the store cannot
    -- journal it (a repeat resumes and converges instead). A rollback undoes
    -- what every run of the job created, from the journal.
    local held = type(res) == "table" and (res.shutdown or res.store)
    if job.operation == "provision" and not held then
      undo(job, inst, ctx, res.applied or inst.applied or {}, redact, state)
    end
    error(res, 0)
  end
  local applied = res
  if hook and hook.after and job.operation ~= "deprovision" then
    run_after_hook(job, inst, hook, state, tier_or_err, redact, ctx)
  end
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
  local started = durably(job, function()
    inst.status = BUSY[job.operation]
    inst.error = nil
    inst.generation = cfg.generation
    instances.save(inst)
    instances.update_job(job.id, { generation = cfg.generation, error = json.null })
    instances.event(job, "job_started", job.operation .. " started")
  end)
  if not started then
    return
  end
  instances.flush()

  local ok, state, applied, result = pcall(execute, job, inst, cfg)
  local elapsed = sys.monotonic() - t0
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
    durably(job, function()
      inst.status = FINAL[job.operation]
      inst.error = nil
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
        { seconds = result.provisioning_time_seconds, commands = result.commands })
    end)
    instances.flush()
    fields.seconds = elapsed
    log.info("job succeeded", fields)
  else
    local e = state
    local message = type(e) == "table" and e.message or tostring(e)
    if store_trouble(message) and not message:find("state store", 1, true) then
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
  if job.operation == "provision" then
    metrics.observe("mrprov_provision_duration_seconds", { tier = inst.tier }, elapsed)
  end
  set_gauges()
end

return M
