-- Readiness: "running" means the instance answers. A profile names the app
-- that must answer and its path (`health = { path = "/api/ready" }` on an
-- app, lua/profiles.lua); after a provision or update has deployed, the
-- instance is `starting` until that URL answers 200, then `running`. One that
-- does not answer within HEALTH_TIMEOUT_SECONDS becomes `unhealthy` with the
-- last answer (or error) in `error`; it is not rolled back (its data may
-- matter), and a later check that answers moves it to `running`.
--
-- Where the waiting happens: in a job of its own (operation `health`) that
-- makes one check per run and, while the answer is not 200, re-queues itself
-- with a delay (jobs.not_before, src/store/jobs.c) instead of sleeping in a
-- worker. A worker is busy for one request at most (HEALTH_REQUEST_TIMEOUT);
-- the check survives a restart like any queued job; and since the claim
-- never runs two jobs of one subscription at once, an update or deprovision
-- waits for at most that one request. A job that deploys the instance again
-- retires the queued check (retire), and its own success queues a new one.
-- After the bound the job keeps re-checking an unhealthy instance every
-- HEALTH_RECHECK_INTERVAL seconds (0: it ends there, and only an update
-- checks again).
local generation = require "generation"
local hosts = require "hosts"
local http = require "mrprov.http"
local instances = require "instances"
local json = require "json"
local metrics = require "mrprov.metrics"
local redact_text = require "redact"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"

local M = {}

M.OPERATION = "health"
-- The placeholders HEALTH_URL_TEMPLATE may use ({path}: the profile's path;
-- {host}: the name of the instance's Dokku host, as its status view shows
-- it, "default" for DOKKU_HOST alone; {host_address}: that host's address,
-- the host file's `host` or DOKKU_HOST).
M.PLACEHOLDERS = { app = true, domain = true, subscription_id = true, path = true, host = true,
                   host_address = true }
M.ANSWER_LIMIT = 300 -- bytes of an answer's body kept in `error`
M.BACKOFF_MAX = 30   -- seconds between two checks at most, while starting

local check = store_error.checked

-- HEALTH_URL_TEMPLATE: an http(s) URL with only the known placeholders.
-- Returns the template, or nil, why.
function M.template_ok(t)
  if type(t) ~= "string" or #t > 1024 or not t:match("^https?://[^/]") then
    return nil, "expected an http:// or https:// URL (up to 1024 bytes) with a host"
  end
  if t:find("[%c%s]") then
    return nil, "must not contain spaces or control characters"
  end
  local rest = t:gsub("{([a-z_]+)}", function(name)
    if M.PLACEHOLDERS[name] then return "" end
  end)
  local bad = rest:match("{[^}]*}?") or rest:match("}")
  if bad then
    return nil, ("unknown placeholder %s (known: {app}, {domain}, {subscription_id}, {path}, {host}, "
      .. "{host_address})"):format(bad)
  end
  return t
end

-- The app of the desired state that must answer: { app, path, domain }, or
-- nil when the profile names none (the instance is running once deployed).
function M.target(state)
  for _, a in ipairs(state and state.apps or {}) do
    if a.health and not a.absent then
      return { app = a.name, path = a.health.path, domain = a.domains and a.domains[1] or nil }
    end
  end
  return nil
end

-- The Dokku host `name` (nil: the implicit host) as {host} and
-- {host_address} fill it: { name, address }.
function M.host_of(name, cfg)
  name = name or hosts.IMPLICIT
  for _, h in ipairs(hosts.list(cfg)) do
    if h.name == name then
      return { name = name, address = h.host or (h.implicit and sys.config().DOKKU_HOST) or "" }
    end
  end
  return { name = name, address = "" }
end

-- Whether a template asks the Dokku host itself ({host}, {host_address}):
-- then a move asks its target before the switch (lua/move.lua).
function M.addresses_host(t)
  return type(t) == "string" and (t:find("{host}", 1, true) or t:find("{host_address}", 1, true)) ~= nil
end

-- The URL checked: https://{domain}{path} of the app's first domain, or
-- HEALTH_URL_TEMPLATE with its placeholders filled (host: M.host_of's
-- answer for the instance's host). nil, why when the app has no domain and
-- no template is set.
function M.url(target, subscription_id, settings, host)
  local t = settings.health_url_template
  if t then
    local values = { app = target.app, domain = target.domain or "", subscription_id = subscription_id,
                     path = target.path, host = host and host.name or hosts.IMPLICIT,
                     host_address = host and host.address or "" }
    return (t:gsub("{([a-z_]+)}", function(k) return values[k] end))
  end
  if not target.domain then
    return nil, ("app %s has a health check but no domain (set HEALTH_URL_TEMPLATE)"):format(target.app)
  end
  return "https://" .. target.domain .. target.path
end

-- What a readiness check of the desired state `state` asks, on Dokku host
-- `host` (M.host_of): url and the target app; or the target and why no
-- request is sent (dry-run, a 0 bound, no URL); or nothing when no app of
-- the layout has a health path. Shared by the check after a deploy and the
-- one a move makes of its target before the switch (lua/move.lua).
function M.asks(state, subscription_id, settings, host, dry_run)
  local target = M.target(state)
  if not target then
    return nil
  end
  if dry_run then
    return nil, target, "dry-run (no request is sent)"
  end
  if (settings.health_timeout or 0) <= 0 then
    return nil, target, "HEALTH_TIMEOUT_SECONDS is 0"
  end
  local url, why = M.url(target, subscription_id, settings, host)
  if not url then
    return nil, target, why
  end
  return url, target
end

-- What a deploy job's success does about readiness (called by worker.lua
-- inside the transaction that records it). Sets inst.status and the health
-- fields and returns { status, note, check = health job request or nil }.
function M.after_deploy(inst, state, dry_run)
  local settings = generation.current().settings
  local url, target, skip = M.asks(state, inst.subscription_id, settings,
    M.host_of(inst.host, generation.current()), dry_run)
  if not target then
    inst.health_state, inst.health_error = nil, nil
    inst.status = "running"
    return { status = "running" }
  end
  if skip then
    inst.health_state, inst.health_error = "skipped", nil
    inst.status = "running"
    return { status = "running", note = "health check skipped: " .. skip }
  end
  inst.status = "starting"
  inst.health_state, inst.health_error = "starting", nil
  return {
    status = "starting",
    note = ("health check: %s must answer 200 within %d s"):format(url, settings.health_timeout),
    check = { url = url, app = target.app, deadline = sys.now() + settings.health_timeout,
              bound = settings.health_timeout },
  }
end

-- What a job that converged an instance leaves it as: `stopped` (its
-- stopped status, when the job's state was stopped or suspended: nothing
-- runs, so no check; the start makes one), or running / starting until its
-- health path answers (M.after_deploy, the check queued). result.health
-- says which. Returns the readiness (nil when stopped). The worker's jobs
-- and a move's target (lua/move.lua) end this way.
function M.settle(inst, state, stopped, result, dry)
  if stopped then
    inst.status = stopped
    inst.health_state, inst.health_error = nil, nil
    result.health = "not checked: the instance is " .. stopped
    return nil
  end
  local readiness = M.after_deploy(inst, state, dry)
  result.health = readiness.note
  if readiness.check then
    M.queue(inst.subscription_id, readiness.check)
  end
  return readiness
end

-- Retires the queued checks of a subscription (a new deploy or a
-- deprovision supersedes them); inside the caller's transaction.
function M.retire(subscription_id, by_job_id)
  check(store.exec("UPDATE jobs SET state = 'succeeded', finished_at = ?, result = ?, waiting_for = NULL " ..
    "WHERE subscription_id = ? AND operation = ? AND state = 'queued'", sys.iso_time(),
    json.encode({ superseded_by = by_job_id }), subscription_id, M.OPERATION))
end

-- Queues a check job (inside the caller's transaction); its id.
function M.queue(subscription_id, request)
  return instances.create_job(subscription_id, M.OPERATION, request)
end

-- One check: ok (200), and the answer in a line fit for `error` (redacted
-- of credentials by form, clipped).
function M.probe(url, timeout_s)
  local status, body, _, truncated = http.request({
    method = "GET", url = url, timeout_ms = math.floor(timeout_s * 1000),
    headers = { Accept = "application/json, text/plain;q=0.9, */*;q=0.1", ["User-Agent"] = "mrprov-health" },
  })
  if not status then
    return false, redact_text.credentials(tostring(body))
  end
  if status == 200 then
    return true, "HTTP 200"
  end
  local text = redact_text.credentials((body or ""):gsub("[%c]+", " "):gsub("^%s+", ""):gsub("%s+$", ""))
  if #text > M.ANSWER_LIMIT or truncated then
    text = text:sub(1, M.ANSWER_LIMIT) .. " [...]"
  end
  return false, ("HTTP %d%s"):format(status, text ~= "" and (": " .. text) or "")
end

local function metric_labels(inst)
  return { app = inst.app_name }
end

-- Per-instance figures in /metrics: ready (1/0) and the last check's time.
function M.record_metrics(inst, ok, at)
  metrics.set("mrprov_instance_ready", metric_labels(inst), ok and 1 or 0)
  metrics.set("mrprov_instance_health_checked_timestamp_seconds", metric_labels(inst), at)
  metrics.inc("mrprov_health_checks_total", { outcome = ok and "ok" or "not_ready" })
end

function M.forget_metrics(inst)
  metrics.drop("mrprov_instance_ready", metric_labels(inst))
  metrics.drop("mrprov_instance_health_checked_timestamp_seconds", metric_labels(inst))
end

-- Instances by health state, for the mrprov_instances_health gauge.
function M.set_gauges()
  local rows = check(store.query("SELECT health_state AS s, count(*) AS n FROM instances WHERE status IN " ..
    "('starting', 'running', 'unhealthy') AND health_state IN ('starting', 'healthy', 'unhealthy') " ..
    "GROUP BY health_state"))
  local counts = { starting = 0, healthy = 0, unhealthy = 0 }
  for _, r in ipairs(rows) do
    counts[r.s] = r.n
  end
  for s, n in pairs(counts) do
    metrics.set("mrprov_instances_health", { state = s }, n)
  end
end

-- The delay before the next check while starting: 1, 2, 4 ... seconds, at
-- most BACKOFF_MAX and a quarter of the bound, never past the deadline.
function M.backoff(attempt, bound, left)
  local cap = math.max(1, math.min(M.BACKOFF_MAX, bound / 4))
  local d = math.min(2 ^ math.max(0, attempt - 1), cap)
  return math.max(0.1, math.min(d, left))
end

local CHECKED = { starting = true, unhealthy = true }

-- Runs one check of a `health` job (worker.lua calls it for a claimed job).
-- Returns the job's fields to write, the instance to save (or nil) and an
-- event { kind, message }; the caller records them in one transaction.
function M.step(job, inst, now)
  local settings = generation.current().settings
  local req = job.request
  if not inst or not CHECKED[inst.status] or not req.url then
    return { state = "succeeded", finished_at = sys.iso_time(now), waiting_for = json.null,
             result = { health = "not checked: the instance is " .. (inst and inst.status or "gone") } }
  end
  local ok, answer = M.probe(req.url, settings.health_request_timeout or 5)
  local at = sys.iso_time(now)
  inst.health_checked_at = at
  M.record_metrics(inst, ok, now)
  if ok then
    local was = inst.status
    inst.status, inst.error = "running", nil
    inst.health_state, inst.health_error = "healthy", nil
    return { state = "succeeded", finished_at = at, waiting_for = json.null,
             result = { health = "healthy", url = req.url, checks = job.attempts } },
      inst, { kind = "health_ok", message = ("%s answered 200 (%s before)"):format(req.url, was) }
  end
  inst.health_error = answer
  local left = (req.deadline or now) - now
  if left > 0 then
    local delay = M.backoff(job.attempts or 1, req.bound or 60, left)
    return { state = "queued", not_before = sys.iso_time(now + delay),
             waiting_for = "health: " .. answer }, inst
  end
  local event
  inst.error = ("not ready after %d s: %s"):format(req.bound or 0, answer)
  if inst.status ~= "unhealthy" then
    inst.status, inst.health_state = "unhealthy", "unhealthy"
    event = { kind = "health_failed", message = inst.error }
  end
  local every = settings.health_recheck_interval or 0
  if every > 0 then
    return { state = "queued", not_before = sys.iso_time(now + every),
             waiting_for = ("health: unhealthy, re-checked every %d s: %s"):format(every, answer) }, inst, event
  end
  return { state = "failed", finished_at = at, waiting_for = json.null, error = inst.error,
           result = { health = "unhealthy", url = req.url, checks = job.attempts } }, inst, event
end

return M
