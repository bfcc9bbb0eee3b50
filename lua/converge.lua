-- Apply, converge and undo: plans an instance against the current state,
-- runs the plan in waves through the executor, journaling every command
-- before and after it runs, and on a transient failure plans again (what
-- already happened is probed, not repeated). A failed provision is undone
-- from the journal; a hook's after() runs its commands as journaled steps.
local command = require "command"
local dokku = require "mrprov.dokku"
local engine = require "engine"
local executor = require "executor"
local hooks = require "hooks"
local instances = require "instances"
local jobs = require "mrprov.jobs"
local journal = require "journal"
local json = require "json"
local log = require "mrprov.log"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"

local M = {}

M.MAX_ATTEMPTS = 6 -- plan-and-apply rounds before a transient failure becomes final
M.RETRY_BASE = 0.5 -- seconds, doubled each round, with jitter
M.RETRY_CAP = 30

-- Raised at a checkpoint once SIGTERM asked the workers to stop: the job
-- stays resumable (queued; the next start re-plans from what is on Dokku).
local SHUTDOWN = "stopped at a checkpoint for shutdown; resumes on the next start"
M.SHUTDOWN = SHUTDOWN

local function checkpoint()
  if jobs.stopping() then
    error({ message = SHUTDOWN, shutdown = true }, 0)
  end
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
  for _, row in ipairs(journal.history(job_id)) do
    -- (while a round plans nothing runs: a step still `running` is one a
    -- crash cut short, not yet marked by journal.plan())
    local made = row.state == "done" or row.state == "running"
      or (row.state == "failed" and row.error == journal.INTERRUPTED)
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
        journal.start(job.id, c.seq, now)
        log.debug("dokku command", { job_id = job.id, subscription_id = job.subscription_id, command = c.display })
      end
      instances.update_job(job.id, { step = cmds[#cmds].display, waiting_for = json.null })
    end)
    local results = executor.run_wave(cmds, redact, ctx.host)
    local failure, cancelled
    store.tx(function()
      for i, s in ipairs(wave) do
        local c, r = cmds[i], results[i]
        if r.cancelled then
          -- Given up at the shutdown bound: it may or may not have run. The
          -- step stays 'running', as after a crash; the resumed job re-probes.
          cancelled = true
        else
          journal.finish(job.id, c.seq, r)
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
      instances.save_applied(inst.subscription_id, applied)
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
  local done = journal.made(job.id)
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
function M.undo(job, inst, ctx, applied, redact, state)
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
  local list = {}
  for i, u in ipairs(cmds) do
    list[i] = u.command
  end
  assert(journal.append(job.id, "undo", list))
  for _, u in ipairs(cmds) do
    local r = executor.run_wave({ u.command }, redact, ctx.host)[1]
    store.tx(function()
      journal.finish(job.id, u.command.seq, r)
      if not r.error then
        applied[u.key] = nil
        instances.save_applied(inst.subscription_id, applied)
      end
    end)
    if r.error then
      log.warn("undo step failed", { job_id = job.id, subscription_id = job.subscription_id, error = r.error })
    end
  end
end

-- The context of a job's convergence on host (the Dokku host every command
-- goes to, lua/placement.lua); stamp names its backups' files.
function M.context(host, inst, job, cfg, stamp)
  return {
    host = host,
    -- With host files a job whose host is down waits for it (re-queued);
    -- the implicit host alone keeps the single-host contract: retries,
    -- then the job fails with the cause (README "Reconciliation").
    host_waits = cfg.hosts ~= nil and not cfg.hosts[1].implicit,
    created = {}, backups = json.array(), commands = 0,
    backup_path = function(c)
      local dir = cfg.settings.backup_dir .. "/" .. inst.app_name
      assert(sys.mkdir_p(dir))
      return string.format("%s/%s-%s-%s.%s", dir, stamp, job.id, c.target, c.stream_ext or "dump")
    end,
  }
end

-- Plans against the current state and applies; on a transient failure
-- waits (capped exponential backoff with jitter) and plans again, so what
-- already happened is probed, not repeated.
function M.converge(job, inst, state, ctx, redact)
  local applied = inst.applied or {}
  local attempt, store_waits = 0, 0
  while true do
    attempt = attempt + 1
    local ok, err = pcall(function()
      local steps, perr
      local list = job.operation ~= "deprovision" and engine.resources(state) or nil
      local owed = M.owed_restarts(job.id)
      if list and job.request and job.request.converge == "changed" then
        -- a rollout's step: only what the change touches (engine.pending)
        list = engine.pending(list, applied, owed)
      end
      local current_of = executor.current_of(applied, list, ctx.host)
      if job.operation == "deprovision" then
        steps, perr = engine.teardown(state, current_of, { backup = job.request.backup_data ~= false })
      else
        steps, perr = engine.plan(list, current_of, owed)
      end
      if not steps then
        error({ message = redact(tostring(perr)), transient = true }, 0)
      end
      journal.plan(job, steps)
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
    if store_error.unwritable(e) then
      -- No step can be journaled, so no command runs until one can. This
      -- waits (capped backoff) without using up the attempts: the job goes
      -- on by itself once the disk has room again, or resumes after a stop.
      local why = tostring(e.message):gsub("^[^:]*%.lua:%d+: ", "")
      e = { message = "the state store cannot be written: " .. why, transient = true, store = true }
      store_waits = store_waits + 1
      attempt = attempt - 1
    end
    if e.transient and not e.store and ctx.host_waits then
      -- The instance's host does not answer: the job waits for it without
      -- using up its attempts or holding a worker (the worker re-queues it,
      -- lua/worker.lua), while other hosts' jobs go on.
      local up, why = dokku.host_health(ctx.host)
      if not up then
        error({ message = e.message, transient = true, host_down = ctx.host, host_error = why, applied = applied }, 0)
      end
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
-- command it sends is journaled as a step of the job. hook_ctx: what the
-- hook is told about its instance.
function M.after_hook(job, hook, state, hook_ctx, redact, ctx)
  local refused -- a store error inside the sandbox, raised again as it was
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
    local ok, err = pcall(journal.append, job.id, "hook", { c })
    if not ok then
      refused = err
      error(err, 0)
    end
    local r = executor.run_wave({ c }, redact, ctx.host)[1]
    ok, err = pcall(store.tx, function()
      journal.finish(job.id, c.seq, r)
    end)
    if not ok then
      refused = err
      error(err, 0)
    end
    ctx.commands = ctx.commands + 1
    return { exit = r.exit or -1, output = r.output or "", error = r.error }
  end
  local ok, err = hooks.run_after(hook, state, hook_ctx, runner)
  if not ok then
    if refused then
      error(refused, 0)
    end
    error({ message = redact(err) }, 0)
  end
end

return M
