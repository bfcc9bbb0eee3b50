-- Instances, jobs, domain claims and seen webhook ids in the local store:
-- the product's view of those SQLite tables (the schema itself belongs to
-- src/store; the steps table's view is lua/journal.lua). JSON columns
-- are decoded here; every write that changes an instance also queues an
-- outbox row for Supabase in the same transaction when Supabase is set.
local json = require "json"
local outbox_mod = require "mrprov.outbox"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"

local M = {}

M.ACTIVE = { pending = true, provisioning = true, running = true, updating = true, starting = true,
             unhealthy = true, stopped = true, suspended = true }
-- Every status an instance can have (SPEC §5.5; openapi.json, the Supabase
-- table's CHECK constraint). starting: deployed, its health check has not
-- answered 200 yet; unhealthy: it did not within HEALTH_TIMEOUT_SECONDS
-- (lua/health.lua); stopped: its apps' processes are stopped on request,
-- every object and all data kept; suspended: stopped because its
-- subscription is past due, unpaid or paused (lua/lifecycle.lua).
M.STATUSES = { "pending", "provisioning", "starting", "running", "unhealthy", "stopped", "suspended", "updating",
               "deprovisioning", "deprovisioned", "failed" }
-- Deployed and not busy: what an update or deprovision may start from.
M.SETTLED = { running = true, starting = true, unhealthy = true, stopped = true, suspended = true }
-- Stopped on purpose (spec.stopped): the status a job that converged such an
-- instance leaves.
function M.stopped_status(spec)
  if not (spec and spec.stopped) then
    return nil
  end
  return spec.suspended and "suspended" or "stopped"
end

local check = store_error.checked

local function decode(s, default)
  if s == nil or s == "" then
    return default
  end
  local v = json.decode_stored(s)
  if v == nil then
    return default
  end
  return v
end

local function row_to_instance(r)
  if not r then
    return nil
  end
  r.spec = decode(r.spec, {})
  r.applied = decode(r.applied, {})
  r.urls = decode(r.urls, {})
  r.limits = decode(r.limits, {})
  r.dry_run = r.dry_run == 1
  return r
end

function M.get(subscription_id)
  local rows = check(store.query("SELECT * FROM instances WHERE subscription_id = ?", subscription_id))
  return row_to_instance(rows[1])
end

-- The columns status_view reads: an instance without its spec and applied
-- documents (kilobytes of JSON a status read would decode for nothing).
-- (The SQL text is built once: the statement cache looks it up by its bytes.)
local SUMMARY_SQL = "SELECT subscription_id, account_id, app_name, tier, status, urls, limits, error, dry_run, " ..
  "created_at, updated_at, health_state, health_checked_at, health_error, json_extract(spec, '$.image') AS image, " ..
  "json_extract(spec, '$.pinned') AS pinned, (SELECT group_concat(key, ',') FROM json_each(spec, '$.env')) " ..
  "AS env_keys, host FROM instances WHERE subscription_id = ?"

function M.get_summary(subscription_id)
  return row_to_instance(check(store.query(SUMMARY_SQL, subscription_id))[1])
end

function M.app_taken(app_name)
  local rows = check(store.query("SELECT 1 AS x FROM instances WHERE app_name = ?", app_name))
  return rows[1] ~= nil
end

-- The Supabase `instances` row for an instance: no secret, no internal state.
function M.supabase_row(inst)
  return {
    subscription_id = inst.subscription_id,
    account_id = inst.account_id,
    app_name = inst.app_name,
    tier = inst.tier,
    status = inst.status,
    frontend_url = inst.urls.frontend,
    backend_url = inst.urls.backend,
    matrix_url = inst.urls.matrix or json.null,
    limits = inst.limits,
    error = inst.error or json.null,
    dry_run = inst.dry_run and true or false,
    health_state = inst.health_state or json.null,
    health_checked_at = inst.health_checked_at or json.null,
    health_error = inst.health_error or json.null,
    created_at = inst.created_at,
    updated_at = inst.updated_at,
  }
end

-- Queues a row for Supabase table `tbl` (delivered in order per
-- subscription by the C sender); call inside the transaction of the change.
local function outbox(tbl, subscription_id, payload, upsert_on)
  if not outbox_mod.enabled() then
    return
  end
  check(store.exec("INSERT INTO outbox (subscription_id, kind, payload, upsert_on, created_at) VALUES (?, ?, ?, ?, ?)",
    subscription_id, tbl, json.encode(payload), upsert_on, sys.iso_time()))
end

-- The id an appended row (events, backups) carries in Supabase: the outbox
-- may send a row twice (a lost answer, a kill -9 between the write and its
-- bookkeeping) and upserts on it, so each row is stored once.
local function delivery_id()
  return require("mrprov.crypto").random_token(24, "0123456789abcdefghijklmnopqrstuvwxyz")
end

-- An `events` row: what happened to a job (messages are already redacted).
function M.event(job, kind, message, data)
  outbox("events", job.subscription_id, {
    subscription_id = job.subscription_id, job_id = job.id, operation = job.operation, kind = kind,
    message = message or json.null, data = data or {}, created_at = sys.iso_time(), delivery_id = delivery_id(),
  }, "delivery_id")
end

-- A `backups` row for a file written by a deprovision.
function M.backup(inst, job, file)
  outbox("backups", inst.subscription_id, {
    subscription_id = inst.subscription_id, app_name = inst.app_name, job_id = job.id,
    service = file.service, path = file.path, size_bytes = file.size, created_at = sys.iso_time(),
    delivery_id = delivery_id(),
  }, "delivery_id")
end

-- Wakes the Supabase sender; call after the transaction committed.
function M.flush()
  if outbox_mod.enabled() then
    outbox_mod.notify()
  end
end

-- Inserts or replaces the instance row (and queues its outbox row). The
-- host is written by the insert only: placement's decision is never
-- overwritten by a later save; M.place sets it (placement, a move).
function M.save(inst)
  local now = sys.iso_time()
  inst.created_at = inst.created_at or now
  inst.updated_at = now
  check(store.exec([[
    INSERT INTO instances (subscription_id, account_id, app_name, tier, status, spec, applied, urls, limits,
                           error, dry_run, generation, created_at, updated_at, health_state, health_checked_at,
                           health_error, host)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (subscription_id) DO UPDATE SET
      account_id = excluded.account_id, app_name = excluded.app_name, tier = excluded.tier,
      status = excluded.status, spec = excluded.spec, applied = excluded.applied, urls = excluded.urls,
      limits = excluded.limits, error = excluded.error, dry_run = excluded.dry_run,
      generation = excluded.generation, updated_at = excluded.updated_at, health_state = excluded.health_state,
      health_checked_at = excluded.health_checked_at, health_error = excluded.health_error]],
    inst.subscription_id, inst.account_id, inst.app_name, inst.tier, inst.status, json.encode(inst.spec),
    json.encode(inst.applied or {}), json.encode(inst.urls or {}), json.encode(inst.limits or {}), inst.error,
    inst.dry_run and 1 or 0, inst.generation, inst.created_at, inst.updated_at, inst.health_state,
    inst.health_checked_at, inst.health_error, inst.host))
  outbox("instances", inst.subscription_id, M.supabase_row(inst), "subscription_id")
end

-- The Dokku host an instance lives on (lua/placement.lua): set when a
-- provision is accepted, before any command is sent; changed by a move.
function M.place(subscription_id, host)
  check(store.exec("UPDATE instances SET host = ? WHERE subscription_id = ?", host, subscription_id))
end

-- The host of an instance row (rows from before hosts: the implicit one).
function M.host_of(inst)
  return inst and inst.host or "default"
end

-- Records what a job's converged resources are (the instance's applied
-- model), inside the caller's transaction.
function M.save_applied(subscription_id, applied)
  check(store.exec("UPDATE instances SET applied = ? WHERE subscription_id = ?", json.encode(applied),
    subscription_id))
end

-- Domains: each is served by one instance. A domain is taken when another
-- instance holds the same name, a parent of it or a subdomain of it. Call
-- these inside store.tx: the check and the claim are one transaction, so
-- two jobs (or a job and a request) cannot both take a domain.
local DOMAIN_TAKEN_SQL = "SELECT domain FROM domains WHERE subscription_id <> ? AND (domain = ? OR " ..
  "substr(domain, -?) = ? OR substr(?, -(length(domain) + 1)) = '.' || domain) LIMIT 1"

-- Claims every domain of list for the subscription (keeping its other
-- claims); nil, why when one is taken (nothing claimed then: the caller's
-- transaction rolls back on error, and the check runs before any insert).
function M.claim_domains(subscription_id, list)
  for _, d in ipairs(list) do
    local rows = check(store.query(DOMAIN_TAKEN_SQL, subscription_id, d, #d + 1, "." .. d, d))
    if rows[1] then
      local held = rows[1].domain
      return nil, "domain " .. d .. (held == d and " is already served by another instance"
        or (" overlaps " .. held .. ", served by another instance"))
    end
  end
  for _, d in ipairs(list) do
    check(store.exec("INSERT OR IGNORE INTO domains (domain, subscription_id) VALUES (?, ?)", d, subscription_id))
  end
  return true
end

-- Drops the subscription's claims on domains not in list.
function M.keep_domains(subscription_id, list)
  local keep = {}
  for _, d in ipairs(list) do
    keep[d] = true
  end
  for _, r in ipairs(check(store.query("SELECT domain FROM domains WHERE subscription_id = ?", subscription_id))) do
    if not keep[r.domain] then
      check(store.exec("DELETE FROM domains WHERE domain = ? AND subscription_id = ?", r.domain, subscription_id))
    end
  end
end

function M.new_job_id()
  return "job_" .. require("mrprov.crypto").random_token(20, "0123456789abcdef")
end

function M.create_job(subscription_id, operation, request)
  local id = M.new_job_id()
  check(store.exec([[INSERT INTO jobs (id, subscription_id, operation, state, request, generation, created_at)
                     VALUES (?, ?, ?, 'queued', ?, ?, ?)]],
    id, subscription_id, operation, json.encode(request or {}), sys.current_generation(), sys.iso_time()))
  return id
end

local function row_to_job(r)
  if not r then
    return nil
  end
  r.request = decode(r.request, {})
  r.result = decode(r.result, nil)
  return r
end

function M.job(id)
  local rows = check(store.query("SELECT * FROM jobs WHERE id = ?", id))
  return row_to_job(rows[1])
end

function M.latest_job(subscription_id)
  local rows = check(store.query("SELECT * FROM jobs WHERE subscription_id = ? ORDER BY rowid DESC LIMIT 1",
    subscription_id))
  return row_to_job(rows[1])
end

-- The columns of the latest job status_view shows: no request or result
-- document to decode on every status read.
local LATEST_JOB_SUMMARY_SQL = "SELECT id, operation, state, step, steps_done, steps_total, waiting_for " ..
  "FROM jobs WHERE subscription_id = ? ORDER BY rowid DESC LIMIT 1"

function M.latest_job_summary(subscription_id)
  return check(store.query(LATEST_JOB_SUMMARY_SQL, subscription_id))[1]
end

function M.update_job(id, fields)
  local keys = {}
  for k in pairs(fields) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local sets, args = {}, {}
  for i, k in ipairs(keys) do
    assert(k:match("^[a-z_]+$"), "bad column")
    local v = fields[k]
    if type(v) == "table" and v ~= json.null then
      v = json.encode(v)
    elseif v == json.null then
      v = nil -- NULL; args may hold holes, hence the explicit count below
    end
    sets[i] = k .. " = ?"
    args[i] = v
  end
  args[#keys + 1] = id
  check(store.exec("UPDATE jobs SET " .. table.concat(sets, ", ") .. " WHERE id = ?", table.unpack(args, 1, #keys + 1)))
end

-- Seconds before a job whose Dokku host is down (lua/worker.lua), or a
-- move that must try again (lua/move.lua), is claimed again: doubling from
-- 0.5 s with each claim of the job, at most M.RETRY_CAP.
M.RETRY_CAP = 5
function M.retry_delay(attempts)
  return math.min(M.RETRY_CAP, 0.5 * 2 ^ math.max(0, math.min((attempts or 1) - 1, 10)))
end

-- Puts a running job back in the queue, to be claimed again in delay
-- seconds, saying what it waits for.
function M.requeue(job_id, waiting, delay)
  pcall(store.tx, function()
    M.update_job(job_id, { state = "queued", waiting_for = waiting, step = json.null,
                           not_before = sys.iso_time(sys.now() + delay) })
  end)
  M.flush()
end

-- Status view of SPEC §5.5, with the fields of the original service's
-- InstanceInfo beside mrprov's own (its clients read them): the URLs at the
-- top level, `subdomain` (the instance's domain, the host of its frontend
-- URL), `last_health_check` and `limits.cpu_limit` (its name for `cpu`).
function M.status_view(inst, job)
  local limits = {}
  for k, v in pairs(inst.limits or {}) do
    limits[k] = v
  end
  limits.cpu_limit = limits.cpu
  local frontend = inst.urls.frontend
  local view = {
    subscription_id = inst.subscription_id,
    account_id = inst.account_id or json.null,
    app_name = inst.app_name,
    tier = inst.tier,
    status = inst.status,
    urls = {
      frontend = frontend or json.null,
      backend = inst.urls.backend or json.null,
      matrix = inst.urls.matrix or json.null,
    },
    frontend_url = frontend or json.null,
    backend_url = inst.urls.backend or json.null,
    matrix_url = inst.urls.matrix or json.null,
    subdomain = type(frontend) == "string" and frontend:match("^https?://([^/:]+)") or json.null,
    last_health_check = inst.health_checked_at or json.null,
    limits = limits,
    created_at = inst.created_at,
    updated_at = inst.updated_at,
    error = inst.error or json.null,
    dry_run = inst.dry_run,
    -- readiness (lua/health.lua): null until the profile's check ran
    health_state = inst.health_state or json.null,
    health_checked_at = inst.health_checked_at or json.null,
    health_error = inst.health_error or json.null,
    -- the Dokku host it lives on (lua/placement.lua; "default" without host files)
    host = M.host_of(inst),
    job = json.null,
  }
  if job then
    view.job = {
      id = job.id, operation = job.operation, state = job.state, step = job.step or json.null,
      steps_done = job.steps_done, steps_total = job.steps_total,
      waiting_for = job.waiting_for or json.null,
    }
  end
  return view
end

function M.job_view(job, steps)
  local list = json.array()
  for _, s in ipairs(steps) do
    list[#list + 1] = {
      seq = s.seq, resource = s.resource, target = s.target, command = s.command,
      mutating = s.mutating == 1, state = s.state, exit_code = s.exit_code or json.null,
      duration_ms = s.duration_ms or json.null, output = s.output or json.null, error = s.error or json.null,
      started_at = s.started_at or json.null, finished_at = s.finished_at or json.null,
    }
  end
  return {
    id = job.id, subscription_id = job.subscription_id, operation = job.operation, state = job.state,
    created_at = job.created_at, started_at = job.started_at or json.null,
    finished_at = job.finished_at or json.null, error = job.error or json.null, generation = job.generation,
    attempts = job.attempts, step = job.step or json.null, steps_done = job.steps_done,
    steps_total = job.steps_total, waiting_for = job.waiting_for or json.null,
    result = job.result or json.null, steps = list,
  }
end

-- Ids arrive in time order, so the oldest are the first rows by rowid: a
-- prune looks at the first PRUNE_BATCH of them and deletes those received
-- before the cutoff, with no index to keep up and no scan of every id kept
-- (a plain `DELETE … WHERE received_at < ?` made webhook ack p99 87 ms in
-- `make bench`). webhooks.lua asks for one at most once a second per Lua
-- state, so deliveries spend no time on it while they hold the write lock.
M.PRUNE_BATCH = 4096
M.PRUNE_WEBHOOK_IDS = "DELETE FROM webhook_ids WHERE rowid IN (SELECT rowid FROM webhook_ids ORDER BY rowid"
  .. " LIMIT " .. M.PRUNE_BATCH .. ") AND received_at < ?"

-- Records a webhook delivery id received at `now`; false when it was seen
-- before. With forget_before, ids received before it are pruned first.
function M.first_delivery(id, now, forget_before)
  return store.tx(function()
    local seen = check(store.query("SELECT 1 AS x FROM webhook_ids WHERE id = ?", id))
    if seen[1] then
      return false
    end
    if forget_before then
      check(store.exec(M.PRUNE_WEBHOOK_IDS, forget_before))
    end
    check(store.exec("INSERT INTO webhook_ids (id, received_at) VALUES (?, ?)", id, now))
    return true
  end)
end

-- Stopped and suspended instances, for the mrprov_instances_stopped gauge.
function M.stopped_counts()
  local rows = check(store.query("SELECT status, count(*) AS n FROM instances WHERE status IN ('stopped', " ..
    "'suspended') GROUP BY status"))
  local out = { stopped = 0, suspended = 0 }
  for _, r in ipairs(rows) do
    out[r.status] = r.n
  end
  return out
end

-- Running instances by tier, for the active-instances gauge.
function M.active_by_tier()
  local rows = check(store.query("SELECT tier, count(*) AS n FROM instances WHERE status = 'running' GROUP BY tier"))
  local out = {}
  for _, r in ipairs(rows) do
    out[r.tier] = r.n
  end
  return out
end

return M
