-- Moving an instance to another Dokku host (issue 16): the request of
-- POST /api/v1/instances/{subscription_id}/move, the evacuation of a
-- draining host (POST /api/v1/hosts/{name}/evacuate: a move job per
-- instance) and the `move` job itself.
--
-- A move is an ordinary durable job whose progress is the instance's
-- spec.move = { from, to, phase, job_id, prev_status, source_applied,
-- started }, written in the transaction that finishes each phase, so a
-- job resumed after a kill -9 goes on from the phase it was in; every
-- phase is idempotent (a convergence re-probes; an import replaces what
-- the service held; an extraction overwrites the same files):
--
--   target  the desired state converged on the target host (the engine's
--           ctx.host is `to`), without domains and TLS: the source keeps
--           serving them, untouched;
--   data    each service's export on the source streamed to a file, then
--           imported into the target's service (`<kind>:import` on stdin);
--           each persistent storage read with `dokku run --no-tty APP tar
--           -C PATH -czf - .` on the source (what a deprovision's backup
--           runs) and restored on the target through a helper app (below);
--   ready   the same convergence again: the app the restore stopped is
--           started on its restored data (Dokku's deploy checks), so the
--           target runs before it serves anything;
--   switch  the full desired state converged on the target: its domains
--           and TLS (the instance is then served there);
--   source  the source torn down after a backup of its data (the
--           deprovision-with-backup path, engine.teardown on `from`);
--   then    instances.place records `to`, spec.move is dropped.
--
-- Any failure before the switch rolls the target back (phase `rollback`:
-- the instance's objects on the target and the helper app destroyed) and
-- the instance stays as it was on the source. After the switch the job
-- does not give up: it waits and tries again until the source is gone.
--
-- The helper app: `dokku run` cannot read an archive from stdin (the
-- scheduler adds `--interactive` only with a terminal: core:plugins/
-- scheduler-docker-local/scheduler-run, has_tty in plugins/common/
-- functions, v0.35.20 and v0.38.27; `--no-tty` sets DOKKU_DISABLE_TTY),
-- so the archive reaches the target in a build context instead:
-- `git:from-archive --archive-type tar HELPER --` takes a tar on stdin
-- (core:plugins/git, the way resources/lib/seed.lua deploys), whose
-- Dockerfile copies it into the image; HELPER mounts the instance's
-- storage directory, and `dokku run --no-tty HELPER tar -xzf ARCHIVE -C
-- MOUNT` extracts it there; HELPER is destroyed afterwards. The target's
-- app is stopped while its data is replaced (the switch starts it).
local command = require "command"
local converge = require "converge"
local dokku = require "mrprov.dokku"
local executor = require "executor"
local generation = require "generation"
local health = require "health"
local hooks = require "hooks"
local host_usage = require "host_usage"
local hosts = require "hosts"
local instances = require "instances"
local jobs = require "mrprov.jobs"
local journal = require "journal"
local json = require "json"
local log = require "mrprov.log"
local placement = require "placement"
local plan = require "plan"
local redact_text = require "redact"
local requests = require "requests"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"
local tar = require "tar"
local validate = require "validate"

local M = {}

M.OPERATION = "move"
M.HELPER_SUFFIX = "-mv"
M.RESTORE_PATH = "/mrprov-restore"
M.ARCHIVE_DIR = "/mrprov-move"
M.ARCHIVE_NAME = "storage.tar.gz"
local answer, fail = requests.answer, requests.fail

local check = store_error.checked

-- Whether another job of the instance (not a readiness check) waits or runs.
local function busy(sub)
  return check(store.query("SELECT 1 AS x FROM jobs WHERE subscription_id = ? AND state IN ('queued', 'running') " ..
    "AND operation <> 'health' LIMIT 1", sub))[1] ~= nil
end

-- The decision for one instance, inside the caller's transaction: the
-- target host, or { status, code, message, field }.
local function choose(inst, want, cfg, healths)
  local list = hosts.list(cfg)
  local from = instances.host_of(inst)
  local need = { memory_mb = (inst.limits or {}).memory_mb, cpu = (inst.limits or {}).cpu, instances = 1 }
  local vs = requests.host_views(list, healths)
  if want then
    local v
    for _, x in ipairs(vs) do
      if x.name == want then v = x end
    end
    if not v then
      return nil, { status = 422, code = "invalid_value", field = "host", message = "no such Dokku host: " .. want }
    end
    if want == from then
      return nil, { status = 422, code = "invalid_value", field = "host",
                    message = "the instance is already on " .. want }
    end
    if v.draining then
      return nil, { status = 422, code = "invalid_value", field = "host", message = want .. " is draining" }
    end
    local why = placement.refusal(v, need, {})
    if why then
      return nil, { status = 503, code = "no_capacity", message = want .. ": " .. why }
    end
    return want
  end
  local others = {}
  for _, x in ipairs(vs) do
    if x.name ~= from then others[#others + 1] = x end
  end
  local tier = cfg.tiers[inst.tier]
  local hook = hooks.find(cfg.hooks, inst)
  local to, why = placement.choose({
    hosts = others, tier = tier, need = need, labels = placement.required_labels(tier, hook),
    request = { subscription_id = inst.subscription_id, account_id = inst.account_id, tier = inst.tier },
  })
  if not to then
    return nil, { status = 503, code = "no_capacity",
                  message = #others == 0 and "no other Dokku host to move to" or why }
  end
  return to
end

-- Starts a move of inst (inside the caller's transaction): its job id.
local function start(inst, from, to, reason)
  local job_id = instances.create_job(inst.subscription_id, M.OPERATION, {
    subscription_id = inst.subscription_id, app_name = inst.app_name, from = from, to = to, reason = reason,
  })
  inst.spec.move = { from = from, to = to, phase = "target", job_id = job_id, prev_status = inst.status,
                     source_applied = inst.applied or {} }
  -- the column holds the target's model while the move runs (each
  -- convergence records what it applied there); a rollback restores it
  inst.applied = {}
  inst.status = "updating"
  instances.save(inst)
  instances.save_applied(inst.subscription_id, {})
  instances.event({ id = job_id, subscription_id = inst.subscription_id, operation = M.OPERATION }, "move_queued",
    ("move from %s to %s queued"):format(from, to))
  return job_id
end

-- Why inst cannot be moved now, or nil.
local function refusal(inst)
  if inst.spec.move then
    return "the instance is already being moved"
  end
  if not instances.SETTLED[inst.status] then
    return "the instance is " .. tostring(inst.status) .. ", not settled"
  end
  if busy(inst.subscription_id) then
    return "the instance has a job queued or running"
  end
end

-- POST /api/v1/instances/{subscription_id}/move, body {"host": name} or {}.
function M.request(subscription_id, body)
  local sub = type(subscription_id) == "string" and validate.subscription_id(subscription_id)
  if not sub then
    return fail(404, "not_found", "no instance for this subscription", "subscription_id")
  end
  local t = {}
  if body and body ~= "" then
    local v = json.decode(body)
    if type(v) ~= "table" or (next(v) ~= nil and #v > 0) then
      return fail(400, "invalid_json", "the body must be a JSON object")
    end
    t = v
  end
  for k in pairs(t) do
    if k ~= "host" then
      return fail(422, "invalid_value", "unknown field " .. tostring(k), tostring(k))
    end
  end
  local want = t.host
  if want == json.null then want = nil end
  if want ~= nil and not (type(want) == "string" and hosts.name_ok(want)) then
    return fail(422, "invalid_value", "host must be the name of a Dokku host", "host")
  end
  local cfg = generation.current()
  local healths = requests.host_health(hosts.list(cfg))
  local d = store.tx(function()
    local inst = instances.get(sub)
    if not inst or inst.status == "deprovisioned" then
      return { status = 404, code = "not_found", message = "no instance for this subscription",
               field = "subscription_id" }
    end
    local why = refusal(inst)
    if why then
      return { status = 409, code = "conflict", message = why }
    end
    local to, err = choose(inst, want, cfg, healths)
    if not to then
      return err
    end
    local from = instances.host_of(inst)
    return { job_id = start(inst, from, to, "request"), inst = inst, from = from, to = to }
  end)
  if d.status then
    return fail(d.status, d.code, d.message, d.field)
  end
  jobs.notify()
  instances.flush()
  log.info("move accepted", { job_id = d.job_id, subscription_id = sub, from = d.from, to = d.to })
  return answer(202, { job_id = d.job_id, subscription_id = sub, app_name = d.inst.app_name, status = "updating",
                       from = d.from, to = d.to, message = ("Move from %s to %s started"):format(d.from, d.to) })
end

-- POST /api/v1/hosts/{name}/evacuate: a move job for every instance of a
-- draining host (each to the host placement chooses among the others, the
-- moves already decided counting against their targets); the moves run
-- EVACUATE_PARALLEL at a time (M.run_job takes a slot).
function M.evacuate(name)
  local cfg = generation.current()
  local list = hosts.list(cfg)
  local host = hosts.name_ok(name or "") and hosts.by_name(list)[name]
  if not host then
    return fail(404, "not_found", "no such Dokku host", "name")
  end
  local healths = requests.host_health(list)
  local d = store.tx(function()
    local v = host_usage.view({ host })[1]
    if not v.draining then
      return { status = 409, code = "conflict", message = name .. " is not draining: drain it first" }
    end
    local rows = check(store.query("SELECT subscription_id FROM instances WHERE COALESCE(host, 'default') = ? " ..
      "AND status <> 'deprovisioned' ORDER BY subscription_id", name))
    local out = { job_ids = json.array(), moving = json.array(), skipped = json.array() }
    for _, r in ipairs(rows) do
      local inst = instances.get(r.subscription_id)
      local mv = inst.spec.move
      if mv then
        out.moving[#out.moving + 1] = { subscription_id = inst.subscription_id, job_id = mv.job_id, to = mv.to }
      else
        local why = refusal(inst)
        local to, err
        if not why then
          to, err = choose(inst, nil, cfg, healths)
          why = not to and err.message or nil
        end
        if to then
          local id = start(inst, name, to, "evacuate")
          out.job_ids[#out.job_ids + 1] = id
          out.moving[#out.moving + 1] = { subscription_id = inst.subscription_id, job_id = id, to = to }
        else
          out.skipped[#out.skipped + 1] = { subscription_id = inst.subscription_id, reason = why }
        end
      end
    end
    return out
  end)
  if d.status then
    return fail(d.status, d.code, d.message)
  end
  jobs.notify()
  instances.flush()
  log.info("evacuation started", { host = name, moves = #d.job_ids, skipped = #d.skipped })
  return answer(202, { host = name, job_ids = d.job_ids, moving = d.moving, skipped = d.skipped,
                       parallel = cfg.settings.evacuate_parallel or 2,
                       message = ("%d move(s) started, %d in progress in all, %d skipped"):format(#d.job_ids,
                         #d.moving, #d.skipped) })
end

-- Instances being moved out of each host: { [host] = n }.
function M.moving_out()
  local out = {}
  for _, r in ipairs(check(store.query("SELECT json_extract(spec, '$.move.from') AS h, COUNT(*) AS n FROM instances " ..
    "WHERE json_extract(spec, '$.move.from') IS NOT NULL GROUP BY 1"))) do
    out[r.h] = r.n
  end
  return out
end

------------------------------------------------------------------ the job

-- The state without domains and TLS (the target's copy before the switch).
local function unserved(state)
  local copy = {}
  for k, v in pairs(state) do copy[k] = v end
  copy.apps = {}
  for i, a in ipairs(state.apps or {}) do
    local c = {}
    for k, v in pairs(a) do c[k] = v end
    c.domains, c.letsencrypt = nil, nil
    copy.apps[i] = c
  end
  return copy
end

local function save_move(sub, fn)
  store.tx(function()
    local fresh = instances.get(sub)
    fn(fresh, fresh.spec.move)
    instances.save(fresh)
  end)
end

-- Runs commands one after another on host (journaled as steps of the job,
-- resource kind `move`); raises {message, transient} at the first failure.
local function run_steps(job, host, cmds, redact)
  assert(journal.append(job.id, "move", cmds))
  for _, c in ipairs(cmds) do
    if jobs.stopping() then
      error({ message = converge.SHUTDOWN, shutdown = true }, 0)
    end
    store.tx(function()
      journal.start(job.id, c.seq, sys.iso_time())
      instances.update_job(job.id, { step = c.display, waiting_for = json.null })
    end)
    local r = executor.run_wave({ c }, redact, host)[1]
    store.tx(function() journal.finish(job.id, c.seq, r) end)
    if r.cancelled then
      error({ message = converge.SHUTDOWN, shutdown = true }, 0)
    end
    if r.error then
      error({ message = r.error, transient = r.transient }, 0)
    end
    c.result = r
  end
end

-- The build context that carries a storage archive to the target: a tar
-- of a Dockerfile (from the app's own image, which has tar: the backup
-- runs it) that copies the archive into the image, and the archive,
-- written to path with the archive file copied in chunks (any size: the
-- transport streams the context from the file). True, or nil, why.
local function restore_context(image, archive_path, path)
  local dockerfile = table.concat({
    "FROM " .. image,
    -- tar restores the archive's owners only as root
    "USER root",
    "COPY " .. M.ARCHIVE_NAME .. " " .. M.ARCHIVE_DIR .. "/" .. M.ARCHIVE_NAME,
    "CMD [\"sleep\", \"infinity\"]",
    "",
  }, "\n")
  local src, err = io.open(archive_path, "rb")
  if not src then
    return nil, err
  end
  local size = src:seek("end")
  src:seek("set", 0)
  local out, oerr = io.open(path, "wb")
  if not out then
    src:close()
    return nil, oerr
  end
  local function pad(n)
    return string.rep("\0", (tar.BLOCK - n % tar.BLOCK) % tar.BLOCK)
  end
  out:write(tar.header("Dockerfile", #dockerfile, 420), dockerfile, pad(#dockerfile))
  out:write(tar.header(M.ARCHIVE_NAME, size, 420))
  local copied = 0
  while true do
    local chunk = src:read(65536)
    if not chunk then break end
    copied = copied + #chunk
    out:write(chunk)
  end
  src:close()
  out:write(pad(size), string.rep("\0", 2 * tar.BLOCK))
  local ok, cerr = out:close()
  if not ok then
    return nil, cerr
  end
  if copied ~= size then
    return nil, archive_path .. " changed while it was read"
  end
  return true
end

-- The helper app's commands, each safe to repeat (a crash may cut them).
local function helper_destroy(helper)
  return command.new("move", helper, { "apps:destroy", "--force", helper }, nil, { ok_exits = { [20] = true } })
end

-- The data phase: services and storage from `from` to `to`.
local function copy_data(job, inst, state, mv, redact, cfg)
  if dokku.mode() == "dry-run" then
    return
  end
  local dir = cfg.settings.backup_dir .. "/" .. inst.app_name
  assert(sys.mkdir_p(dir))
  -- (a file an interrupted run left is written again: the transport
  -- creates a stream's file exclusively)
  local function tmp(name, ext)
    local path = ("%s/move-%s-%s.%s"):format(dir, job.id, name, ext)
    os.remove(path)
    return path
  end
  for _, svc in ipairs(state.services or {}) do
    local path = tmp(svc.name, "dump")
    local export = command.new("move", svc.name, { svc.kind .. ":export", svc.name }, nil,
      { mutating = false, stream = true })
    export.stdout_file = path
    run_steps(job, mv.from, { export }, redact)
    -- the export streamed into the target's service, from the file
    local import = command.new("move", svc.name, { svc.kind .. ":import", svc.name },
      { svc.kind .. ":import", svc.name, "<", svc.kind .. ":export", "of", mv.from })
    import.stdin_file = path
    run_steps(job, mv.to, { import }, redact)
    os.remove(path)
  end
  for _, a in ipairs(state.apps or {}) do
    local s = not a.absent and a.storage
    if s then
      local path = tmp(a.name, "tar.gz")
      local export = command.new("move", a.name,
        { "run", "--no-tty", a.name, "tar", "-C", s.container_path, "-czf", "-", "." }, nil,
        { mutating = false, stream = true })
      export.stdout_file = path
      run_steps(job, mv.from, { export }, redact)
      if type(a.image) ~= "string" then
        error({ message = "the storage of " .. a.name .. ": the app has no image to restore it with" }, 0)
      end
      local context = tmp(a.name, "context.tar")
      local made, cerr = restore_context(a.image, path, context)
      if not made then
        error({ message = "the storage of " .. a.name .. ": " .. tostring(cerr) }, 0)
      end
      local helper = a.name .. M.HELPER_SUFFIX
      local deploy = command.new("move", helper, { "git:from-archive", "--archive-type", "tar", helper, "--" },
        { "git:from-archive", "--archive-type", "tar", helper, "--", "<", "context", "with", "the", "storage",
          "of", a.name })
      deploy.stdin_file = context
      run_steps(job, mv.to, {
        -- nothing writes the directory while it is replaced
        command.new("move", a.name, { "ps:stop", a.name }),
        helper_destroy(helper),
        command.new("move", helper, { "apps:create", helper }),
        command.new("move", helper, { "storage:mount", helper, s.host_path .. ":" .. M.RESTORE_PATH }),
        deploy,
        command.new("move", helper, { "run", "--no-tty", helper, "tar", "-xzf",
          M.ARCHIVE_DIR .. "/" .. M.ARCHIVE_NAME, "-C", M.RESTORE_PATH }),
        helper_destroy(helper),
      }, redact)
      os.remove(path)
      os.remove(context)
    end
  end
end

-- Retries fn (the data phase: its commands are not a convergence, which
-- retries by itself) on transient failures with capped backoff.
local function with_retries(job, fn)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local ok, err = pcall(fn)
    if ok then
      return
    end
    local e = type(err) == "table" and err or { message = tostring(err) }
    if e.shutdown or e.host_down or e.store or not e.transient or attempt >= converge.MAX_ATTEMPTS then
      error(e, 0)
    end
    local delay = math.min(converge.RETRY_CAP, converge.RETRY_BASE * 2 ^ (attempt - 1))
    pcall(instances.update_job, job.id, { waiting_for = ("retry %d in %.1f s after: %s"):format(attempt, delay,
      tostring(e.message)) })
    if not jobs.sleep(delay) then
      error({ message = converge.SHUTDOWN, shutdown = true }, 0)
    end
  end
end

local function phase(sub, name)
  save_move(sub, function(_, mv) mv.phase = name end)
end

-- Takes one of the source host's slots (EVACUATE_PARALLEL moves out of a
-- host at a time); false when all are taken.
local function take_slot(job, mv, cfg)
  if mv.started then
    return true
  end
  return store.tx(function()
    local n = check(store.query("SELECT COUNT(*) AS n FROM instances WHERE json_extract(spec, '$.move.from') = ? " ..
      "AND json_extract(spec, '$.move.started') = 1", mv.from))[1].n
    if n >= (cfg.settings.evacuate_parallel or 2) then
      return false
    end
    local fresh = instances.get(job.subscription_id)
    fresh.spec.move.started = true
    instances.save(fresh)
    return true
  end)
end


local function finish_failed(job, message)
  store.tx(function()
    instances.update_job(job.id, { state = "failed", error = message, finished_at = sys.iso_time(), step = json.null })
    instances.event(job, "job_failed", message)
  end)
  instances.flush()
end

-- Rolls the target back: everything of the instance on `to` torn down (no
-- backup: the source holds the data), the helper apps destroyed; then the
-- instance is as it was. Raises on a failure (the job is tried again).
local function rollback(job, inst, state, mv, redact, cfg, stamp)
  local tjob = setmetatable({ operation = "deprovision", request = { backup_data = false } }, { __index = job })
  local tinst = { subscription_id = inst.subscription_id, app_name = inst.app_name, applied = inst.applied or {} }
  converge.converge(tjob, tinst, state, converge.context(mv.to, inst, job, cfg, stamp), redact)
  if dokku.mode() ~= "dry-run" then
    local cmds = {}
    for _, a in ipairs(state.apps or {}) do
      if a.storage and not a.absent then
        cmds[#cmds + 1] = helper_destroy(a.name .. M.HELPER_SUFFIX)
      end
    end
    if #cmds > 0 then
      with_retries(job, function() run_steps(job, mv.to, cmds, redact) end)
    end
  end
end

-- The target's readiness before the switch. With HEALTH_URL_TEMPLATE
-- asking the Dokku host itself ({host} or {host_address}, filled with the
-- target's), the target's copy is asked as the instance's readiness check
-- asks (the profile's path, 200 within HEALTH_TIMEOUT_SECONDS, the same
-- backoff); a copy that does not answer fails the move before the switch,
-- so the target is rolled back and the source, untouched, keeps serving.
-- Otherwise the URL leads to the instance's domain, i.e. to the source
-- until the switch: nothing can ask the target before it, and the result
-- says so (the readiness check after the switch asks the target then).
local function check_target(job, inst, state, mv, cfg, result)
  local settings = cfg.settings
  local url, target, skip
  if state.stopped then
    skip = "the instance is stopped (its start checks it)"
  elseif not health.addresses_host(settings.health_url_template) then
    skip = "HEALTH_URL_TEMPLATE does not ask the Dokku host ({host} or {host_address}); the readiness check "
      .. "after the switch asks the target"
  else
    url, target, skip = health.asks(state, inst.subscription_id, settings, health.host_of(mv.to, cfg),
      dokku.mode() == "dry-run")
    if not target then
      skip = "no app of the layout has a health path"
    end
  end
  if skip then
    result.target_ready = "not checked before the switch: " .. skip
    return
  end
  local t0, attempt = sys.monotonic(), 0
  while true do
    attempt = attempt + 1
    local ok, said = health.probe(url, settings.health_request_timeout or 5)
    if ok then
      result.target_ready = ("%s answered on %s before the switch"):format(url, mv.to)
      return
    end
    local left = settings.health_timeout - (sys.monotonic() - t0)
    if left <= 0 then
      error({ message = ("the target %s did not answer its readiness check %s within %d s: %s"):format(mv.to, url,
        settings.health_timeout, said) }, 0)
    end
    pcall(instances.update_job, job.id, { waiting_for = ("the target's readiness check %s: %s"):format(url, said) })
    if not jobs.sleep(health.backoff(attempt, settings.health_timeout, left)) then
      error({ message = converge.SHUTDOWN, shutdown = true }, 0)
    end
  end
end

function M.run_job(job)
  local inst = instances.get(job.subscription_id)
  local mv = inst and inst.spec.move
  if not mv or mv.job_id ~= job.id then
    return finish_failed(job, "no move of this instance is in progress for this job")
  end
  local cfg = generation.current()
  if not take_slot(job, mv, cfg) then
    return instances.requeue(job.id, ("waiting for a slot: %d move(s) out of %s at a time (EVACUATE_PARALLEL)"):format(
      cfg.settings.evacuate_parallel or 2, mv.from), 1)
  end
  local fields = { job_id = job.id, subscription_id = job.subscription_id, from = mv.from, to = mv.to }
  log.info("move started", fields)
  local state, why = plan.desired_state(inst, cfg)
  if not state then
    why = "the instance's desired state cannot be built: " .. tostring(why)
  end
  local redact = redact_text.redactor(executor.job_secrets(inst, state))
  local stamp = sys.iso_time():gsub("[^%dTZ]", "")
  store.tx(function()
    instances.update_job(job.id, { error = json.null, generation = cfg.generation })
    health.retire(job.subscription_id, job.id)
    instances.event(job, "job_started", ("move from %s to %s (%s)"):format(mv.from, mv.to, mv.phase))
  end)
  instances.flush()
  local t0 = sys.monotonic()
  local result = { from = mv.from, to = mv.to, app_name = inst.app_name }
  local ok, err = pcall(function()
    if not state then
      error({ message = why }, 0)
    end
    if mv.phase == "target" then
      converge.converge(job, inst, unserved(state), converge.context(mv.to, inst, job, cfg, stamp), redact)
      phase(job.subscription_id, "data")
      mv.phase = "data"
    end
    if mv.phase == "data" then
      with_retries(job, function() copy_data(job, inst, state, mv, redact, cfg) end)
      phase(job.subscription_id, "ready")
      mv.phase = "ready"
    end
    if mv.phase == "ready" then
      -- the target's apps run again on their restored data (the app the
      -- restore stopped is started: Dokku's deploy checks pass first)
      -- before anything is served from them, and answer their readiness
      -- check when it can ask the target itself
      converge.converge(job, inst, unserved(state), converge.context(mv.to, inst, job, cfg, stamp), redact)
      check_target(job, inst, state, mv, cfg, result)
      phase(job.subscription_id, "switch")
      mv.phase = "switch"
    end
  end)
  if not ok then
    local e = type(err) == "table" and err or { message = tostring(err) }
    if e.shutdown or e.store then
      return instances.requeue(job.id, converge.SHUTDOWN, 0)
    end
    if e.host_down then
      return instances.requeue(job.id,
        ("Dokku host %s is unreachable (%s)"):format(e.host_down, tostring(e.host_error)),
        instances.retry_delay(job.attempts))
    end
    if mv.phase ~= "rollback" then
      save_move(job.subscription_id, function(_, m) m.phase, m.error = "rollback", redact(tostring(e.message)) end)
      mv.phase, mv.error = "rollback", redact(tostring(e.message))
    end
  end
  if mv.phase == "rollback" then
    local rok, rerr = pcall(rollback, job, inst, state or { apps = {}, services = {} }, mv, redact, cfg, stamp)
    if not rok then
      local e = type(rerr) == "table" and rerr or { message = tostring(rerr) }
      log.warn("move rollback did not finish; tried again", fields)
      return instances.requeue(job.id, "rolling back the target: " .. tostring(e.message),
        instances.retry_delay(job.attempts))
    end
    local message = ("move to %s failed before the switch; the target was rolled back, the instance stays on %s: %s")
      :format(mv.to, mv.from, tostring(mv.error))
    store.tx(function()
      local fresh = instances.get(job.subscription_id)
      fresh.applied = mv.source_applied or {}
      fresh.status = mv.prev_status or "running"
      fresh.spec.move = nil
      instances.save(fresh)
      instances.update_job(job.id, { state = "failed", error = message, finished_at = sys.iso_time(),
                                     step = json.null, result = result })
      instances.event(job, "job_failed", message)
    end)
    instances.flush()
    fields.error = message
    log.error("move failed and was rolled back", fields)
    return
  end
  -- Past the switch: the job goes on until the source is gone.
  local final
  ok, err = pcall(function()
    if mv.phase == "switch" then
      final = converge.converge(job, inst, state, converge.context(mv.to, inst, job, cfg, stamp), redact)
      save_move(job.subscription_id, function(fresh, m)
        m.phase, m.target_applied = "source", final
        fresh.applied = final
      end)
      mv.phase, mv.target_applied = "source", final
    end
    if mv.phase == "source" then
      local sjob = setmetatable({ operation = "deprovision", request = { backup_data = true } }, { __index = job })
      local sinst = { subscription_id = inst.subscription_id, app_name = inst.app_name,
                      applied = mv.source_applied or {} }
      local sctx = converge.context(mv.from, inst, job, cfg, stamp)
      converge.converge(sjob, sinst, state, sctx, redact)
      result.backup = { files = sctx.backups }
      result.commands = sctx.commands
    end
  end)
  if not ok then
    local e = type(err) == "table" and err or { message = tostring(err) }
    local delay = e.shutdown and 0 or instances.retry_delay(job.attempts)
    fields.error = e.message
    log.warn("move past its switch did not finish; tried again", fields)
    return instances.requeue(job.id, e.shutdown and converge.SHUTDOWN or ("finishing the move (" .. mv.phase .. "): "
      .. tostring(e.message)), delay)
  end
  local readiness
  store.tx(function()
    local fresh = instances.get(job.subscription_id)
    instances.place(job.subscription_id, mv.to)
    fresh.host = mv.to
    fresh.applied = mv.target_applied or fresh.applied
    fresh.spec.move = nil
    fresh.error = nil
    local stopped = state.stopped and instances.stopped_status(fresh.spec)
    readiness = health.settle(fresh, state, stopped, result, dokku.mode() == "dry-run")
    instances.save(fresh)
    result.seconds = math.floor((sys.monotonic() - t0) * 1000 + 0.5) / 1000
    instances.update_job(job.id, { state = "succeeded", result = result, step = json.null,
                                   finished_at = sys.iso_time(), waiting_for = json.null })
    for _, f in ipairs(result.backup and result.backup.files or {}) do
      if f.path ~= json.null then
        instances.backup(fresh, job, f)
      end
    end
    instances.event(job, "job_succeeded", ("moved from %s to %s"):format(mv.from, mv.to))
  end)
  instances.flush()
  if readiness and readiness.check then
    jobs.notify()
  end
  log.info("move finished", fields)
end

M.unserved = unserved
M.restore_context = restore_context

return M
