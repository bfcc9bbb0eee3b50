-- The drift sweep's readings in bulk (lua/reconcile.lua).
-- In bulk: probing each app costs one Dokku command a resource (about 20
-- an instance), so a sweep reads what it can for all apps at once: each
-- resource module with `M.bulk` (resources/lib/contract.lua) names the
-- all-apps reports it reads (resources/lib/reports.lua: apps:list,
-- postgres:list, redis:list, apps:report, domains:report, ports:report,
-- ps:report, resource:report, storage:report, checks:report,
-- letsencrypt:report), which are sent once (M.fetch_reports) and answer
-- its current state exactly as its probe would; what they cannot tell (an
-- app's environment: config:export has no all-apps form; a link between
-- an existing service and app; a build context's digest) is probed per
-- app as before.
-- Freshness: the reports are used for M.BULK_MAX_AGE seconds, and never for
-- an instance a job of its own finished after they were read (that job
-- changed it: its apps are probed one by one).
-- Hosts (issue 16): the reports are read per Dokku host, and an instance
-- is answered from its own host's.
local dokku = require "mrprov.dokku"
local engine = require "engine"
local executor = require "executor"
local hosts = require "hosts"
local json = require "json"
local log = require "mrprov.log"
local redact_text = require "redact"
local reports = require "resources.lib.reports"
local sys = require "mrprov.sys"

local M = {}

-- Seconds the all-apps reports of a sweep are used before they are read
-- again (a sweep of 1000 instances is meant to take at most about this).
M.BULK_MAX_AGE = 30
M.BULK = true -- read all-apps reports (false: probe every app, as jobs do)

-- The names of the all-apps reports the loaded resource modules read.
function M.report_names()
  local names, seen = {}, {}
  for _, mod in pairs(engine.modules) do
    for _, n in ipairs(mod.bulk and mod.bulk.reports or {}) do
      if not seen[n] then
        seen[n] = true
        names[#names + 1] = n
      end
    end
  end
  table.sort(names)
  return names
end

-- How many all-apps reports go out at once. Each can take a second of the
-- host's CPU on thousands of apps: read one at a time with "jobs go first"
-- checked between them, a provision that arrives shares the host with at
-- most one report (bench 7: two at a time made it 1.8-2.6 s later than
-- alone, one at a time 1.3 s, for the same sweep time).
M.REPORT_WAVE = 1

-- Reads the reports not read yet (`have`: name → parsed; `tried`: name →
-- true, a failed one included) M.REPORT_WAVE at a time, and stops between
-- two waves when busy() says a job waits. A report whose command failed is
-- left out (its modules then probe each app). Returns have, the number of
-- commands sent, and whether every report was tried.
function M.fetch_reports(have, busy, tried, host)
  have, tried = have or {}, tried or {}
  local todo = {}
  for _, n in ipairs(M.report_names()) do
    if not tried[n] then
      todo[#todo + 1] = n
    end
  end
  local sent = 0
  for first = 1, #todo, M.REPORT_WAVE do
    if sent > 0 and busy and busy() then
      return have, sent, false
    end
    local names, calls = {}, {}
    for k = first, math.min(#todo, first + M.REPORT_WAVE - 1) do
      names[#names + 1] = todo[k]
      calls[#calls + 1] = { argv = reports.REPORTS[todo[k]].argv, timeout = math.min(60, executor.timeout()),
                            host = host }
    end
    for i, res in ipairs(dokku.run_many(calls)) do
      local ok = res.ok
      tried[names[i]] = true
      if ok and ok.exit == 0 then
        have[names[i]] = reports.parse(names[i], ok.stdout or "")
      else
        log.warn("drift sweep: an all-apps report failed; its resources are probed per app",
          { command = table.concat(reports.REPORTS[names[i]].argv, " "),
            error = redact_text.credentials(ok and ("exited " .. ok.exit .. ": " .. (ok.stderr or ""))
              or tostring(res.error)) })
      end
    end
    sent = sent + #calls
  end
  return have, sent, true
end

-- A current_of (see drift.drift) that answers from the reports what each
-- module's M.bulk can tell (completed by M.recall from the journal, as
-- executor.current_of does), and probes the rest per app in one wave
-- (counted in counter.n when given) on the instance's host.
function M.current_of(reps, counter)
  return function(applied, list, host)
    local known, rest, probes = {}, {}, {}
    for _, r in ipairs(list) do
      local mod = engine.modules[r.type]
      local cur
      if mod and mod.bulk then
        cur = mod.bulk.current(r.spec, reps)
      end
      if cur ~= nil then
        known[r.key] = cur
      else
        rest[#rest + 1] = r
        if mod and mod.bulk and mod.bulk.probe then
          local bprobe = mod.bulk.probe
          probes[r.key] = function(run, spec) return bprobe(run, spec, reps) end
        end
      end
    end
    if counter then
      counter.n = (counter.n or 0) + #rest
    end
    local probe = executor.current_of(applied, rest, host, probes)
    return function(r)
      local cur = known[r.key]
      if cur == nil then
        return probe(r)
      end
      if cur == reports.NOTHING then
        cur = nil
      end
      return executor.recalled(r, cur, applied)
    end
  end
end

-- The reports of this sweep, read again when older than M.BULK_MAX_AGE.
-- A sweep's runs are claimed by whichever Lua state the pool hands out, so
-- the reports travel with the sweep's progress (rep.bulk in its job row,
-- JSON text: when, and the reports with only the keys the modules read,
-- resources/lib/reports.lua `keep`); each state keeps its decoded copy.
-- One reading per Dokku host: the implicit host's stays in rep.bulk, where
-- it was before there were hosts; another host's in rep.bulk_hosts[name].
local cache = {}

-- Whether a sweep reads the all-apps reports at all (not in dry-run).
function M.wanted()
  return M.BULK and dokku.mode() ~= "dry-run"
end

local function reports_fresh(at)
  return sys.now() - at <= M.BULK_MAX_AGE
end

local IMPLICIT = hosts.IMPLICIT

local function progress(rep, host)
  if host == IMPLICIT then
    return rep.bulk
  end
  return type(rep.bulk_hosts) == "table" and rep.bulk_hosts[host] or nil
end

local function keep_progress(rep, host, b)
  if host == IMPLICIT then
    rep.bulk = b
  else
    rep.bulk_hosts = type(rep.bulk_hosts) == "table" and rep.bulk_hosts or {}
    rep.bulk_hosts[host] = b
  end
end

-- The sweep's complete all-apps reports of `host` (the Dokku host of the
-- instance about to be probed; nil: the implicit one), read now if need be;
-- nil when no loaded module wants them; nil, true when a waiting job
-- stopped the reading or kept it from starting.
function M.for_sweep(rep, opts, host)
  if not M.wanted() then
    return nil
  end
  host = host or IMPLICIT
  local cached = cache[host]
  local key = rep.started_at
  if cached and cached.key == key and cached.complete and reports_fresh(cached.at) then
    return cached
  end
  local b = progress(rep, host)
  -- the sweep's progress may carry a newer reading than this state's copy
  -- (another worker's state read it, or finished an interrupted one)
  local newer = type(b) == "table" and b.key == key and type(b.at) == "number" and reports_fresh(b.at)
    and type(b.reports) == "string"
    and (not cached or cached.key ~= key or b.at > cached.at or (b.complete ~= false and not cached.complete))
  if newer then
    local reps = json.decode_stored(b.reports)
    if type(reps) == "table" then
      cached = { key = key, at = b.at, iso = b.iso, reports = reps, complete = b.complete ~= false,
                 tried = type(b.tried) == "table" and b.tried or {} }
      cache[host] = cached
      if cached.complete then
        return cached
      end
    end
  end
  -- jobs go first: with one waiting, nothing is read (second result: a
  -- job stopped the reading; the run yields, lua/reconcile.lua)
  if opts.busy and opts.busy() then
    return nil, true
  end
  -- a fresh start, or the rest of a reading a job interrupted (its age is
  -- that of its first wave)
  local partial = cached and cached.key == key and not cached.complete and reports_fresh(cached.at) and cached
  local at = partial and partial.at or sys.now()
  local tried = partial and partial.tried or {}
  local reps, sent, complete = M.fetch_reports(partial and partial.reports or {}, opts.busy, tried, host)
  rep.bulk_commands = (rep.bulk_commands or 0) + sent
  if complete ~= false then
    for _, n in ipairs(M.report_names()) do tried[n] = true end
  end
  cached = { key = key, at = at, iso = sys.iso_time(at), reports = reps, complete = complete ~= false, tried = tried }
  cache[host] = cached
  if not opts.dry then
    keep_progress(rep, host, { key = key, at = at, iso = cached.iso, reports = json.encode(reps),
                               complete = cached.complete, tried = tried })
  end
  -- an interrupted reading: fetch_reports stops only when a job waits
  if not cached.complete then
    return nil, true
  end
  return cached
end

function M.forget_reports()
  cache = {}
end

return M
