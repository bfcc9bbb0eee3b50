-- Fleet rollouts (issue 18): move the selected instances to a new MindRoom
-- image and/or new field values in waves, each instance by the ordinary
-- convergent job followed by its readiness check (lua/health.lua), stop when
-- more instances fail than the failure budget allows, and roll the changed
-- ones back.
--
-- The targets are parts of the instance's desired state (lua/plan.lua
-- desired_state), so a later update, repair or sweep keeps them:
-- - image: spec.image, which replaces MINDROOM_IMAGE for that instance. A
--   rollback puts back what spec.image was (none: the setting again).
-- - env: spec.env, KEY = value in the MindRoom app's environment (where the
--   request's config_updates go, over them; the profile's own variables
--   still win). spec.env_owned names every key a rollout set, so that one
--   a rollback takes away again (it was not set before) is unset on Dokku.
--   A rollback puts back each key's value before (from_fields).
-- spec.pinned (POST …/pin) or a hook's pinned(ctx) keeps an instance as it
-- is: the rollout skips it. No value of env is shown or logged (keys only):
-- any may be a secret.
--
-- Durable: the rollout and one row per selected instance are in the store
-- (tables rollouts, rollout_instances, store v7; from_fields v9), and the driver is a job of
-- its own (operation `rollout`, subscription id M.SUBSCRIPTION_PREFIX..id,
-- which no real subscription can have) run by the ordinary workers, like
-- the drift sweep (lua/reconcile.lua): each run is one tick in one
-- transaction (record the instances whose step finished, halt or finish,
-- start the next steps), and the job re-queues itself (jobs.not_before)
-- while there is anything to wait for. A restart or kill -9 resumes it
-- where the store says it was; an instance's step is its own durable job.
local generation = require "generation"
local hooks = require "hooks"
local hosts = require "hosts"
local instances = require "instances"
local jobs = require "mrprov.jobs"
local json = require "json"
local log = require "mrprov.log"
local metrics = require "mrprov.metrics"
local sandbox = require "mrprov.sandbox"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"
local tier_check = require "tier_check"
local validate = require "validate"
local validate_request = require "validate_request"

local M = {}

M.OPERATION = "rollout"
M.SUBSCRIPTION_PREFIX = "_rollout_"
M.POLL_SECONDS = 0.25 -- the driver's next look while steps are in flight
M.MAX_WAVES = 50
M.MAX_PARALLEL = 100
M.MAX_PAUSE = 86400
M.MAX_IDS = 10000
M.LISTED = 100 -- rollouts GET /api/v1/rollouts lists, newest first

-- Rollout states; ACTIVE: at most one at a time (two would fight over
-- the instances they share).
M.STATES = { running = true, paused = true, halted = true, aborted = true, finished = true,
             rolling_back = true, rolled_back = true }
M.ACTIVE = { running = true, paused = true, rolling_back = true }
-- An instance's step: in flight (a job of the rollout's runs or its
-- readiness check is pending) and finished.
local IN_FLIGHT = { updating = true, checking = true, reverting = true }
local STEP_STATES = { "pending", "updating", "checking", "done", "failed", "skipped", "unchanged", "reverting",
                      "rolled_back", "rollback_failed" }
-- Instance statuses a step starts from; a busy one is waited for.
local STARTABLE = { running = true, starting = true, unhealthy = true, stopped = true, suspended = true }
local WAITED = { pending = true, provisioning = true, updating = true }

local check = store_error.checked

local function bad(field, message)
  return nil, { code = "invalid_value", field = field, message = field .. " " .. message }
end

---------------------------------------------------------------------------
-- The request
---------------------------------------------------------------------------

local FIELDS = { image = true, env = true, selector = true, waves = true, parallel = true, pause_seconds = true,
                 failure_budget = true, rollback_on_failure = true, apply_to_new = true, converge = true }
local SELECTOR_FIELDS = { tiers = true, hosts = true, labels = true, subscription_ids = true, percent = true }

local function int_in(v, lo, hi)
  return math.type(v) == "integer" and v >= lo and v <= hi
    or (type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi)
end

-- A host name as an instance's `host` field carries it (the implicit host
-- is "default").
function M.host_name(s)
  return type(s) == "string" and #s <= 63 and s:match("^[a-z0-9][a-z0-9_-]*$") ~= nil
end

local function string_list(v, field, max, each)
  if type(v) ~= "table" or not validate.is_list(v) or #v == 0 or #v > max then
    return bad(field, ("must be a list of 1-%d names"):format(max))
  end
  local seen, out = {}, {}
  for i, x in ipairs(v) do
    local ok, why = each(x)
    if not ok then
      return bad(("%s[%d]"):format(field, i), why or "is not valid")
    end
    if not seen[x] then
      seen[x] = true
      out[#out + 1] = x
    end
  end
  return out
end

local function selector_of(t, cfg)
  local sel = {}
  if t == nil then
    return sel
  end
  if type(t) ~= "table" or (next(t) ~= nil and validate.is_list(t)) then
    return bad("selector", "must be an object")
  end
  for k in pairs(t) do
    if not SELECTOR_FIELDS[k] then
      return bad("selector", "has an unknown field " .. tostring(k):sub(1, 40):gsub("[^%w_.-]", "?"))
    end
  end
  local err
  if t.tiers ~= nil then
    sel.tiers, err = string_list(t.tiers, "selector.tiers", 100, function(x)
      return type(x) == "string" and cfg.tiers[x] ~= nil, "is not a loaded tier"
    end)
    if not sel.tiers then return nil, err end
  end
  if t.hosts ~= nil then
    sel.hosts, err = string_list(t.hosts, "selector.hosts", 100, function(x)
      return M.host_name(x), "must be a host name ([a-z0-9][a-z0-9_-]*, up to 63)"
    end)
    if not sel.hosts then return nil, err end
  end
  if t.labels ~= nil then
    -- label = value the instance's host must carry (lua/hosts.lua labels),
    -- checked as a tier's or a hook's host_labels are
    if type(t.labels) ~= "table" or (next(t.labels) ~= nil and validate.is_list(t.labels)) then
      return bad("selector.labels", "must be an object of label = value")
    end
    local ok, labels = pcall(tier_check.check_host_labels, t.labels, "selector.labels")
    if not ok then
      if type(labels) ~= "table" then error(labels, 0) end -- a bug, not the request's
      return bad("selector.labels", (labels.message:gsub("^selector%.labels:? ?", "")))
    end
    -- none given: every host carries them all
    sel.labels = next(labels) ~= nil and labels or nil
  end
  if t.subscription_ids ~= nil then
    sel.subscription_ids, err = string_list(t.subscription_ids, "selector.subscription_ids", M.MAX_IDS,
      function(x)
        return type(x) == "string" and validate.subscription_id(x) ~= nil, "is not a subscription id"
      end)
    if not sel.subscription_ids then return nil, err end
  end
  if t.percent ~= nil then
    if type(t.percent) ~= "number" or t.percent ~= t.percent or t.percent <= 0 or t.percent > 100 then
      return bad("selector.percent", "must be a number above 0, at most 100")
    end
    sel.percent = t.percent
  end
  return sel
end

-- A wave's size: an integer count of instances, or "N%" of the selection
-- (rounded up). The last wave also takes whatever the sizes leave.
local function wave_ok(w)
  if int_in(w, 1, 1000000) then
    return math.tointeger(w)
  end
  if type(w) == "string" then
    local n = w:match("^(%d%d?%d?)%%$")
    n = tonumber(n)
    if n and n >= 1 and n <= 100 then
      return w
    end
  end
  return nil
end

-- Validates a POST /api/v1/rollouts body. Returns the normalized request,
-- or nil, { code, field, message }.
function M.validate(t, cfg)
  if type(t) ~= "table" then
    return nil, { code = "invalid_body", message = "the body must be a JSON object" }
  end
  for k in pairs(t) do
    if not FIELDS[k] then
      return bad(tostring(k):sub(1, 40):gsub("[^%w_.-]", "?"), "is not a rollout field")
    end
  end
  local r = {}
  if t.image ~= nil then
    local img, ierr = validate.image(t.image)
    if not img then
      return bad("image", ierr)
    end
    r.image = t.image
  end
  if t.env ~= nil then
    -- checked as an update's config_updates: no key mrprov manages, values
    -- Dokku stores as sent
    local env, eerr, key = validate_request.config_updates(t.env)
    if not env then
      return bad(key and ("env." .. key) or "env", eerr)
    end
    if next(env) == nil then
      return bad("env", "must set at least one key")
    end
    local within, why = validate.config_updates_total(env)
    if not within then
      return bad("env", why)
    end
    r.env = env
  end
  if not r.image and not r.env then
    return bad("image", "or env is required: a rollout sets the MindRoom image, the app's environment, or both")
  end
  local sel, serr = selector_of(t.selector, cfg)
  if not sel then
    return nil, serr
  end
  r.selector = sel
  local waves = t.waves == nil and { 1, "100%" } or t.waves
  if type(waves) ~= "table" or not validate.is_list(waves) or #waves == 0 or #waves > M.MAX_WAVES then
    return bad("waves", ("must be a list of 1-%d wave sizes"):format(M.MAX_WAVES))
  end
  r.waves = {}
  for i, w in ipairs(waves) do
    local v = wave_ok(w)
    if not v then
      return bad(("waves[%d]"):format(i), "must be a count (1-1000000) or a percentage (\"1%\"-\"100%\")")
    end
    r.waves[i] = v
  end
  r.parallel = t.parallel == nil and 1 or t.parallel
  if not int_in(r.parallel, 1, M.MAX_PARALLEL) then
    return bad("parallel", ("must be an integer from 1 to %d"):format(M.MAX_PARALLEL))
  end
  r.parallel = math.tointeger(r.parallel)
  r.pause_seconds = t.pause_seconds == nil and 0 or t.pause_seconds
  if type(r.pause_seconds) ~= "number" or r.pause_seconds ~= r.pause_seconds or r.pause_seconds < 0
      or r.pause_seconds > M.MAX_PAUSE then
    return bad("pause_seconds", ("must be a number from 0 to %d"):format(M.MAX_PAUSE))
  end
  r.failure_budget = t.failure_budget == nil and 0 or t.failure_budget
  if not int_in(r.failure_budget, 0, 1000000) then
    return bad("failure_budget", "must be an integer from 0 to 1000000")
  end
  r.failure_budget = math.tointeger(r.failure_budget)
  for _, k in ipairs({ "rollback_on_failure", "apply_to_new" }) do
    if t[k] ~= nil and type(t[k]) ~= "boolean" then
      return bad(k, "must be true or false")
    end
    r[k] = t[k] == true
  end
  -- What each step converges: "changed" (the default) only the resources
  -- the new value changes, probed and applied like any job
  -- (engine.pending); "all" every resource of the instance, as a full
  -- update does.
  r.converge = t.converge == nil and "changed" or t.converge
  if r.converge ~= "changed" and r.converge ~= "all" then
    return bad("converge", 'must be "changed" or "all"')
  end
  return r
end

-- The sizes of the waves for n selected instances: each as asked (a
-- percentage of n rounded up), never more than what is left; the last
-- takes the rest; empty waves are dropped.
function M.wave_sizes(waves, n)
  local out, left = {}, n
  for i, w in ipairs(waves) do
    local size = type(w) == "string" and math.ceil(n * tonumber(w:match("^(%d+)")) / 100) or w
    size = math.min(size, left)
    if i == #waves then
      size = left
    end
    if size > 0 then
      out[#out + 1] = size
      left = left - size
    end
  end
  return out
end

local function member(list, x)
  for _, v in ipairs(list) do
    if v == x then return true end
  end
  return false
end

-- The labels of each host of cfg's generation by name (its host file's;
-- the implicit host carries none).
local function labels_by_host(cfg)
  local out = {}
  for _, h in ipairs(hosts.list(cfg)) do
    out[h.name] = h.labels or {}
  end
  return out
end

-- Whether the host an instance is on carries every label of want with its
-- value (a host no host file names any more carries none).
local function has_labels(want, labels)
  for k, v in pairs(want) do
    if labels == nil or labels[k] ~= v then
      return false
    end
  end
  return true
end

-- Whether a selector (tiers, hosts and labels; ids and percent pick from
-- the existing instances only) takes inst (its tier and host set);
-- host_labels: labels_by_host's.
local function matches(sel, inst, host_labels)
  local host = instances.host_of(inst)
  return (not sel.tiers or member(sel.tiers, inst.tier))
    and (not sel.hosts or member(sel.hosts, host))
    and (not sel.labels or has_labels(sel.labels, host_labels[host]))
end

-- The instances a selector picks, in subscription id order; or nil, err.
local function select_instances(sel, cfg)
  local host_labels = labels_by_host(cfg)
  local rows = check(store.query("SELECT * FROM instances WHERE status NOT IN ('deprovisioned', 'deprovisioning') " ..
    "ORDER BY subscription_id"))
  local wanted
  if sel.subscription_ids then
    wanted = {}
    for _, id in ipairs(sel.subscription_ids) do
      wanted[id] = true
    end
  end
  local out, found = {}, {}
  for _, r in ipairs(rows) do
    r.spec = json.decode_stored(r.spec or "{}") or {}
    if (not wanted or wanted[r.subscription_id]) and matches(sel, r, host_labels) then
      out[#out + 1] = r.subscription_id
      found[r.subscription_id] = true
    end
  end
  for _, id in ipairs(sel.subscription_ids or {}) do
    if not found[id] then
      return bad("selector.subscription_ids", "names " .. id .. ", which is no selected instance")
    end
  end
  if sel.percent then
    local keep = math.ceil(#out * sel.percent / 100)
    for i = #out, keep + 1, -1 do
      out[i] = nil
    end
  end
  if #out == 0 then
    return bad("selector", "matches no instance")
  end
  return out
end

---------------------------------------------------------------------------
-- The targets
---------------------------------------------------------------------------

local function sorted_keys(t)
  local out = {}
  for k in pairs(t or {}) do
    out[#out + 1] = k
  end
  table.sort(out)
  return out
end

local function copy(t)
  local out = {}
  for k, v in pairs(type(t) == "table" and t or {}) do
    out[k] = v
  end
  return out
end

-- What a rollout sets, for messages: its image and its env's keys (never
-- a value).
local function target_text(spec)
  local parts = {}
  if spec.image then
    parts[#parts + 1] = spec.image
  end
  if spec.env then
    parts[#parts + 1] = "env " .. table.concat(sorted_keys(spec.env), ", ")
  end
  return table.concat(parts, " and ")
end

-- Sets the rollout's targets (its spec: image, env) in an instance spec;
-- the env tables are new ones (spec may be a copy sharing them).
local function set_fields(spec, target)
  if target.image then
    spec.image = target.image
  end
  if target.env then
    local env, owned = copy(spec.env), copy(spec.env_owned)
    for k, v in pairs(target.env) do
      env[k], owned[k] = v, true
    end
    spec.env, spec.env_owned = env, owned
  end
end

-- Puts back in an instance spec what entry e recorded before the rollout's
-- step: the image (none: the setting), each env key's value (none: unset;
-- the key stays owned so that the job removes it from the app).
local function restore_fields(spec, target, e)
  if target.image then
    spec.image = e.from_image
  end
  if target.env then
    local before = (json.decode_stored(e.from_fields or "{}") or {}).env or {}
    local env, owned = copy(spec.env), copy(spec.env_owned)
    for k in pairs(target.env) do
      local v = before[k]
      env[k], owned[k] = type(v) == "string" and v or nil, true
    end
    spec.env, spec.env_owned = next(env) ~= nil and env or nil, owned
  end
end

-- What entry e records of an instance spec before the step: the image,
-- and the value of each env key the rollout sets (null: not set).
local function record_from(e, spec, target)
  e.from_image = spec.image
  if target.env then
    local before = {}
    for k in pairs(target.env) do
      before[k] = type(spec.env) == "table" and spec.env[k] or json.null
    end
    e.from_fields = json.encode({ env = before })
  end
end

-- Whether the rollout would change the instance spec.
local function differs(target, spec, settings)
  if target.image and M.image_of(spec, settings) ~= target.image then
    return true
  end
  for k, v in pairs(target.env or {}) do
    if type(spec.env) ~= "table" or spec.env[k] ~= v then
      return true
    end
  end
  return false
end

-- An env shown: each key, "[set]" or null (not set); never a value.
local function env_shown(env)
  if not env then
    return json.null
  end
  local out = {}
  for k, v in pairs(env) do
    out[k] = (type(v) == "string") and "[set]" or json.null
  end
  return out
end

---------------------------------------------------------------------------
-- The store
---------------------------------------------------------------------------

local function row_to_rollout(r)
  if not r then
    return nil
  end
  r.spec = json.decode_stored(r.spec) or {}
  return r
end

function M.get(id)
  return row_to_rollout(check(store.query("SELECT * FROM rollouts WHERE id = ?", id))[1])
end

local function entries(id)
  return check(store.query("SELECT * FROM rollout_instances WHERE rollout_id = ? ORDER BY wave, position", id))
end

local function save_rollout(r)
  r.updated_at = sys.iso_time()
  check(store.exec("UPDATE rollouts SET state = ?, wave = ?, failures = ?, reason = ?, updated_at = ?, " ..
    "finished_at = ?, next_wave_at = ? WHERE id = ?", r.state, r.wave, r.failures, r.reason, r.updated_at,
    r.finished_at, r.next_wave_at, r.id))
end

local function save_entry(e)
  check(store.exec("UPDATE rollout_instances SET state = ?, from_image = ?, from_fields = ?, job_id = ?, error = ?, " ..
    "started_at = ?, finished_at = ? WHERE rollout_id = ? AND subscription_id = ?", e.state, e.from_image,
    e.from_fields, e.job_id, e.error, e.started_at, e.finished_at, e.rollout_id, e.subscription_id))
end

local function driver_sub(id)
  return M.SUBSCRIPTION_PREFIX .. id
end

-- Queues the driver job unless one waits or runs (inside the caller's
-- transaction); when one is queued with a delay, it is brought forward.
local function ensure_driver(id)
  local sub = driver_sub(id)
  local live = check(store.query("SELECT id, state FROM jobs WHERE subscription_id = ? AND state IN ('queued', " ..
    "'running') LIMIT 1", sub))[1]
  if live then
    if live.state == "queued" then
      instances.update_job(live.id, { not_before = json.null })
    end
    return live.id
  end
  return instances.create_job(sub, M.OPERATION, { rollout_id = id })
end

-- Brings the queued drivers forward: a step's job or readiness check
-- finished (lua/worker.lua), so a driver has something to record.
function M.wake()
  check(store.exec("UPDATE jobs SET not_before = NULL WHERE operation = ? AND state = 'queued' AND " ..
    "not_before IS NOT NULL", M.OPERATION))
end

-- A Supabase `events` row for an instance's step (its subscription), or
-- for the rollout itself (subscription id: the driver's).
local function event(r, sub, job_id, kind, message, data)
  data = data or {}
  data.rollout_id = r.id
  data.image = r.spec.image
  data.env_keys = r.spec.env and sorted_keys(r.spec.env) or nil
  instances.event({ id = job_id, subscription_id = sub or driver_sub(r.id), operation = M.OPERATION }, kind,
    message, data)
end

---------------------------------------------------------------------------
-- Create, read, act
---------------------------------------------------------------------------

local function new_id()
  return "ro_" .. require("mrprov.crypto").random_token(16, "0123456789abcdef")
end

-- Whether id has the shape new_id gives (checked before any store read).
function M.valid_id(id)
  return type(id) == "string" and #id <= 40 and id:match("^ro_[0-9a-f]+$") ~= nil
end

-- The active rollout other than except_id, or nil (one at a time: M.ACTIVE).
local function active_rollout(except_id)
  return check(store.query("SELECT id, state FROM rollouts WHERE id <> ? AND state IN ('running', 'paused', " ..
    "'rolling_back') LIMIT 1", except_id or ""))[1]
end

-- Creates a rollout from a validated request: { id } or { status, err }.
-- cfg: the generation whose hosts' labels selector.labels reads (default:
-- the current one).
function M.create(r, cfg)
  cfg = cfg or generation.current()
  local out = store.tx(function()
    local active = active_rollout()
    if active then
      return { status = 409, err = { code = "conflict", field = json.null,
               message = ("rollout %s is %s: pause is not enough, abort it or let it finish first")
                 :format(active.id, active.state) } }
    end
    local list, err = select_instances(r.selector, cfg)
    if not list then
      return { status = 422, err = err }
    end
    local id, now = new_id(), sys.iso_time()
    check(store.exec("INSERT INTO rollouts (id, state, spec, wave, failures, created_at, updated_at) " ..
      "VALUES (?, 'running', ?, 1, 0, ?, ?)", id, json.encode(r), now, now))
    local k = 0
    for w, size in ipairs(M.wave_sizes(r.waves, #list)) do
      for p = 1, size do
        k = k + 1
        check(store.exec("INSERT INTO rollout_instances (rollout_id, subscription_id, wave, position, state) " ..
          "VALUES (?, ?, ?, ?, 'pending')", id, list[k], w, p))
      end
    end
    ensure_driver(id)
    event({ id = id, spec = r }, nil, nil, "rollout_started",
      ("rollout to %s of %d instances"):format(target_text(r), #list), { instances = #list })
    return { id = id, count = #list }
  end)
  if out.id then
    jobs.notify()
    instances.flush()
    log.info("rollout started", { rollout_id = out.id, image = r.image,
                                  env_keys = r.env and table.concat(sorted_keys(r.env), ",") or nil,
                                  instances = out.count })
  end
  return out
end

-- The image an instance shows: its own (spec.image, or a status
-- summary's image column), else the setting.
function M.image_of(spec, settings)
  return type(spec) == "table" and type(spec.image) == "string" and spec.image or settings.mindroom_image
end

-- GET /api/v1/rollouts/{id}: the rollout with progress per wave and per
-- instance; nil when there is none.
function M.view(id)
  return store.read(function()
    local r = M.get(id)
    if not r then
      return nil
    end
    local settings = generation.current().settings
    local spec = r.spec
    local counts, waves, list = {}, json.array(), json.array()
    for _, s in ipairs(STEP_STATES) do
      counts[s] = 0
    end
    for _, e in ipairs(entries(id)) do
      counts[e.state] = (counts[e.state] or 0) + 1
      local w = waves[e.wave]
      if not w then
        w = { wave = e.wave, size = 0, counts = {} }
        waves[e.wave] = w
      end
      w.size = w.size + 1
      w.counts[e.state] = (w.counts[e.state] or 0) + 1
      list[#list + 1] = {
        subscription_id = e.subscription_id, wave = e.wave, state = e.state,
        previous_image = spec.image and (e.from_image or (e.state ~= "pending" and e.started_at
          and settings.mindroom_image)) or json.null,
        previous_env = spec.env and e.from_fields and env_shown((json.decode_stored(e.from_fields) or {}).env)
          or json.null,
        job_id = e.job_id or json.null, error = e.error or json.null,
        started_at = e.started_at or json.null, finished_at = e.finished_at or json.null,
      }
    end
    for _, w in ipairs(waves) do
      w.state = (w.wave < r.wave) and "done" or (w.wave == r.wave and "current" or "waiting")
    end
    return {
      id = r.id, state = r.state, image = spec.image or json.null, env = env_shown(spec.env),
      selector = spec.selector, waves = spec.waves,
      parallel = spec.parallel, pause_seconds = spec.pause_seconds, failure_budget = spec.failure_budget,
      rollback_on_failure = spec.rollback_on_failure, apply_to_new = spec.apply_to_new,
      converge = spec.converge or "changed", wave = r.wave, failures = r.failures, reason = r.reason or json.null,
      next_wave_at = r.next_wave_at or json.null, created_at = r.created_at, updated_at = r.updated_at,
      finished_at = r.finished_at or json.null, total = #list, counts = counts, wave_progress = waves,
      instances = list, actions = M.actions_of(r.state),
    }
  end)
end

-- GET /api/v1/rollouts: the newest M.LISTED, without their instances.
function M.list()
  return store.read(function()
    local out = json.array()
    for _, r in ipairs(check(store.query("SELECT * FROM rollouts ORDER BY rowid DESC LIMIT " .. M.LISTED))) do
      r = row_to_rollout(r)
      local n = check(store.query("SELECT state, count(*) AS n FROM rollout_instances WHERE rollout_id = ? " ..
        "GROUP BY state", r.id))
      local counts, total = {}, 0
      for _, c in ipairs(n) do
        counts[c.state] = c.n
        total = total + c.n
      end
      out[#out + 1] = { id = r.id, state = r.state, image = r.spec.image or json.null,
                        env_keys = r.spec.env and sorted_keys(r.spec.env) or json.null, wave = r.wave,
                        failures = r.failures, failure_budget = r.spec.failure_budget, total = total,
                        reason = r.reason or json.null, counts = counts, created_at = r.created_at,
                        updated_at = r.updated_at, finished_at = r.finished_at or json.null }
    end
    return out
  end)
end

-- What each action may start from, and the state it leaves.
local ACTIONS = {
  pause = { from = { running = true }, to = "paused" },
  resume = { from = { paused = true }, to = "running" },
  abort = { from = { running = true, paused = true, halted = true }, to = "aborted" },
  rollback = { from = { running = true, paused = true, halted = true, aborted = true, finished = true },
               to = "rolling_back" },
}
M.ACTIONS = ACTIONS

-- The actions a rollout in `state` allows, in a fixed order (the
-- console's buttons): what M.act would not refuse for the state alone
-- (resume and rollback are still refused while another rollout is active).
function M.actions_of(state)
  local out = json.array()
  for _, a in ipairs({ "pause", "resume", "abort", "rollback" }) do
    if ACTIONS[a].from[state] then
      out[#out + 1] = a
    end
  end
  return out
end

-- pause, resume, abort, rollback: { status, body } (200 with the new
-- state, 404, 409 when the rollout's state does not allow it).
function M.act(id, action)
  local a = ACTIONS[action]
  if not a then
    return { status = 404, err = { code = "not_found", message = "no such action", field = json.null } }
  end
  local out = store.tx(function()
    local r = M.valid_id(id) and M.get(id)
    if not r then
      return { status = 404, err = { code = "not_found", message = "no such rollout", field = "rollout_id" } }
    end
    if not a.from[r.state] then
      return { status = 409, err = { code = "conflict", field = json.null,
               message = ("the rollout is %s: %s is not possible"):format(r.state, action) } }
    end
    if action == "resume" or action == "rollback" then
      local active = active_rollout(r.id)
      if active then
        return { status = 409, err = { code = "conflict", field = json.null,
                 message = ("rollout %s is active: one rollout at a time"):format(active.id) } }
      end
    end
    local was = r.state
    r.state = a.to
    r.reason = action == "abort" and "aborted on request" or (action == "pause" and "paused on request" or nil)
    r.finished_at = action == "abort" and sys.iso_time() or nil
    if action == "rollback" then
      r.reason, r.next_wave_at = "rollback requested", nil
    end
    save_rollout(r)
    if action == "resume" or action == "rollback" then
      ensure_driver(r.id)
    end
    event(r, nil, nil, "rollout_" .. a.to, ("rollout %s: %s (was %s)"):format(r.id, action, was))
    return { state = r.state, was = was }
  end)
  if out.state then
    jobs.notify()
    instances.flush()
    log.info("rollout " .. action, { rollout_id = id, state = out.state, was = out.was })
  end
  return out
end

-- Gives a newly provisioned instance (its spec) the targets (image, env)
-- of the active rollout that says so (apply_to_new) and whose selector
-- (tiers, hosts, labels) takes it; otherwise it keeps MINDROOM_IMAGE and
-- its request's environment. inst carries its tier and its host
-- (placement has chosen it); cfg: the generation it was placed with.
-- Inside the provision's transaction.
function M.apply_to_new(inst, cfg)
  local r = row_to_rollout(check(store.query("SELECT * FROM rollouts WHERE state IN ('running', 'paused') " ..
    "ORDER BY rowid DESC LIMIT 1"))[1])
  if r and r.spec.apply_to_new and matches(r.spec.selector or {}, inst, labels_by_host(cfg)) then
    set_fields(inst.spec, r.spec)
  end
end

---------------------------------------------------------------------------
-- Pinning
---------------------------------------------------------------------------

-- POST /api/v1/instances/{subscription_id}/pin|unpin: spec.pinned. No job:
-- nothing on the server changes; rollouts skip a pinned instance.
function M.pin(subscription_id, pinned)
  local sub = type(subscription_id) == "string" and validate.subscription_id(subscription_id)
  local out = sub and store.tx(function()
    local inst = instances.get(sub)
    if not inst or inst.status == "deprovisioned" then
      return nil
    end
    inst.spec.pinned = pinned or nil
    instances.save(inst)
    return { subscription_id = sub, app_name = inst.app_name, pinned = pinned,
             image = M.image_of(inst.spec, generation.current().settings) }
  end)
  if out then
    instances.flush()
    log.info(pinned and "instance pinned" or "instance unpinned", { subscription_id = sub, image = out.image })
  end
  return out
end

-- Why an instance must keep its image, or nil: its pin, or its hook's
-- pinned(ctx) (true or a reason string).
local function pinned_by(inst, cfg)
  if inst.spec.pinned then
    return "pinned"
  end
  local hook = hooks.find(cfg.hooks, inst)
  if hook and hook.pinned then
    local ok, v = sandbox.run(hook.pinned, hooks.INSTRUCTIONS, hooks.MEMORY, hooks.SECONDS, {
      subscription_id = inst.subscription_id, account_id = inst.account_id, app_name = inst.app_name,
      tier = inst.tier, image = M.image_of(inst.spec, cfg.settings),
    })
    if not ok then
      return "pinned: its hook's pinned() failed: " .. tostring(v):sub(1, 200)
    end
    if v then
      return "pinned by its hook" .. (type(v) == "string" and (": " .. v:sub(1, 200)) or "")
    end
  end
  return nil
end

---------------------------------------------------------------------------
-- The driver
---------------------------------------------------------------------------

-- Whether the targets change the instance's desired state: an app of it
-- is deployed from the target image (a profile without the MindRoom app,
-- or a hook that sets its image, leaves nothing to roll), and an app of it
-- has the target env (a profile that passes no request environment, or
-- whose own variable of that name wins, leaves nothing to set).
local function target_applies(inst, cfg, target)
  local plan = require "plan"
  local shadow = { subscription_id = inst.subscription_id, account_id = inst.account_id, app_name = inst.app_name,
                   tier = inst.tier, applied = inst.applied, spec = copy(inst.spec) }
  set_fields(shadow.spec, target)
  local state, why = plan.desired_state(shadow, cfg)
  if not state then
    return nil, why
  end
  local image_ok, env_ok = not target.image, not target.env
  for _, a in ipairs(state.apps or {}) do
    if not a.absent then
      image_ok = image_ok or a.image == target.image
      if not env_ok and a.env then
        local all = true
        for k, v in pairs(target.env) do
          all = all and a.env[k] == v
        end
        env_ok = all
      end
    end
  end
  if not image_ok then
    return false, "no app of the instance's layout is deployed from the MindRoom image"
  end
  if not env_ok then
    return false, "no app of the instance's layout takes the rollout's env (its layout passes no request "
      .. "environment, or sets one of the keys itself)"
  end
  return true
end

-- Queues the ordinary update job after change(inst.spec) (the forward
-- targets, or what was before), inside the tick's transaction. The job's
-- request names the env keys, never their values.
local function queue_step(r, e, inst, change, rollback)
  change(inst.spec)
  inst.status = "updating"
  instances.save(inst)
  local job_id = instances.create_job(inst.subscription_id, "update", {
    subscription_id = inst.subscription_id, app_name = inst.app_name, rollout_id = r.id,
    image = r.spec.image and (inst.spec.image or json.null) or nil,
    env_keys = r.spec.env and sorted_keys(r.spec.env) or nil, rollback = rollback or nil,
    converge = r.spec.converge ~= "all" and "changed" or nil,
  })
  e.job_id = job_id
  e.started_at = e.started_at or sys.iso_time()
  e.finished_at = nil
  return job_id
end

-- An in-flight step's outcome: nil while it is not over, else ok, why.
local function outcome(e)
  local job = instances.job(e.job_id)
  if not job then
    return false, "its job is gone"
  end
  if job.state == "queued" or job.state == "running" then
    return nil
  end
  if job.state == "failed" then
    return false, "update failed: " .. tostring(job.error)
  end
  local inst = instances.get(e.subscription_id)
  local status = inst and inst.status or "gone"
  if status == "running" or status == "stopped" or status == "suspended" then
    return true
  end
  if status == "starting" or status == "updating" then
    e.state = e.state == "updating" and "checking" or e.state
    return nil
  end
  if status == "unhealthy" then
    return false, "not ready: " .. tostring(inst.error or inst.health_error)
  end
  return false, "the instance is " .. status .. (inst and inst.error and (": " .. inst.error) or "")
end

-- What a reverted entry is back on, for its event (no env value).
local function back_text(r, e, cfg)
  local parts = {}
  if r.spec.image then
    parts[#parts + 1] = "back on " .. tostring(e.from_image or cfg.settings.mindroom_image)
  end
  if r.spec.env then
    parts[#parts + 1] = "env " .. table.concat(sorted_keys(r.spec.env), ", ") .. " as before"
  end
  return table.concat(parts, "; ")
end

-- Records the in-flight steps that finished.
local function record(r, list, cfg, notes)
  for _, e in ipairs(list) do
    if IN_FLIGHT[e.state] then
      local before = e.state
      local ok, why = outcome(e)
      if ok == nil and e.state ~= before then
        save_entry(e) -- deployed: its readiness check runs
      elseif ok ~= nil then
        local reverting = e.state == "reverting"
        e.finished_at = sys.iso_time()
        if reverting then
          e.state = ok and "rolled_back" or "rollback_failed"
          if not ok then
            e.error = (e.error and (e.error .. "; ") or "") .. "rollback: " .. why
          end
          event(r, e.subscription_id, e.job_id, "rollout_instance_" .. e.state,
            ok and back_text(r, e, cfg) or e.error, { wave = e.wave })
        elseif ok then
          e.state, e.error = "done", nil
          event(r, e.subscription_id, e.job_id, "rollout_instance_done", "on " .. target_text(r.spec),
            { wave = e.wave })
        else
          e.state, e.error = "failed", why
          r.failures = r.failures + 1
          metrics.inc("mrprov_rollout_failures_total", { rollout = r.id }, 1)
          event(r, e.subscription_id, e.job_id, "rollout_instance_failed", why, { wave = e.wave })
          notes[#notes + 1] = { "rollout step failed", { subscription_id = e.subscription_id, error = why } }
          if r.spec.rollback_on_failure and r.state ~= "rolling_back" then
            local inst = instances.get(e.subscription_id)
            if inst and (STARTABLE[inst.status] or inst.status == "failed") and not WAITED[inst.status] then
              queue_step(r, e, inst, function(spec) restore_fields(spec, r.spec, e) end, true)
              e.state = "reverting"
            end
          end
        end
        save_entry(e)
      end
    end
  end
end

-- Whether another job of the instance (not a readiness check) waits or runs.
local function busy(sub)
  return check(store.query("SELECT 1 AS x FROM jobs WHERE subscription_id = ? AND state IN ('queued', 'running') " ..
    "AND operation <> 'health' LIMIT 1", sub))[1] ~= nil
end

-- Starts the forward step of a pending entry when it can; returns whether
-- it took a parallel slot (false: skipped, unchanged, or waited for).
local function start_forward(r, e, cfg)
  local inst = instances.get(e.subscription_id)
  local function finish(state, why)
    e.state, e.error, e.finished_at = state, why, sys.iso_time()
    save_entry(e)
    event(r, e.subscription_id, nil, "rollout_instance_" .. state, why, { wave = e.wave })
    return false
  end
  if not inst or inst.status == "deprovisioned" or inst.status == "deprovisioning" then
    return finish("skipped", "the instance is " .. (inst and inst.status or "gone"))
  end
  local why = pinned_by(inst, cfg)
  if why then
    return finish("skipped", why .. (r.spec.image and (" (on " .. M.image_of(inst.spec, cfg.settings) .. ")")
      or " (keeps its environment)"))
  end
  if inst.status == "failed" then
    return finish("skipped", "the instance is failed: " .. tostring(inst.error))
  end
  if WAITED[inst.status] or busy(inst.subscription_id) then
    e.error = "waiting for the instance's own job"
    save_entry(e)
    return false
  end
  if not differs(r.spec, inst.spec, cfg.settings) then
    return finish("unchanged", "already on " .. target_text(r.spec))
  end
  local applies, aerr = target_applies(inst, cfg, r.spec)
  if not applies then
    return finish("skipped", aerr)
  end
  record_from(e, inst.spec, r.spec)
  e.error = nil
  queue_step(r, e, inst, function(spec) set_fields(spec, r.spec) end)
  e.state = "updating"
  save_entry(e)
  return true
end

-- Starts the rollback step of a changed entry when it can.
local function start_back(r, e)
  local inst = instances.get(e.subscription_id)
  if not inst or inst.status == "deprovisioned" or inst.status == "deprovisioning" then
    e.state, e.error = "rollback_failed", "the instance is " .. (inst and inst.status or "gone")
    save_entry(e)
    return false
  end
  if WAITED[inst.status] or busy(inst.subscription_id) then
    return false
  end
  queue_step(r, e, inst, function(spec) restore_fields(spec, r.spec, e) end, true)
  e.state = "reverting"
  save_entry(e)
  return true
end

local function set_metrics(r, list)
  local counts = {}
  for _, s in ipairs(STEP_STATES) do
    counts[s] = 0
  end
  for _, e in ipairs(list) do
    counts[e.state] = counts[e.state] + 1
  end
  for s, n in pairs(counts) do
    metrics.set("mrprov_rollout_instances", { rollout = r.id, state = s }, n)
  end
  metrics.set("mrprov_rollout_wave", { rollout = r.id }, r.wave)
  local by = {}
  for s in pairs(M.STATES) do
    by[s] = 0
  end
  for _, x in ipairs(check(store.query("SELECT state, count(*) AS n FROM rollouts GROUP BY state"))) do
    by[x.state] = x.n
  end
  for s, n in pairs(by) do
    metrics.set("mrprov_rollouts", { state = s }, n)
  end
end

-- One tick (inside a transaction): returns the seconds until the next
-- (nil: the driver's work is over) and log lines to write after commit.
function M.tick(id, now)
  local cfg = generation.current()
  local r = M.get(id)
  local notes = {}
  if not r then
    return nil, notes
  end
  local list = entries(id)
  record(r, list, cfg, notes)
  local inflight = 0
  for _, e in ipairs(list) do
    if IN_FLIGHT[e.state] then
      inflight = inflight + 1
    end
  end
  local was = r.state
  if r.state == "running" and r.failures > r.spec.failure_budget then
    r.state = "halted"
    r.reason = ("%d instance(s) failed; the failure budget is %d"):format(r.failures, r.spec.failure_budget)
    r.finished_at = sys.iso_time(now)
  end
  local delay
  if r.state == "running" and not (r.next_wave_at and r.next_wave_at > sys.iso_time(now)) then
    r.next_wave_at = nil
    while true do
      local pending, open = {}, 0
      for _, e in ipairs(list) do
        if e.wave == r.wave then
          if e.state == "pending" then
            pending[#pending + 1] = e
          end
          if e.state == "pending" or IN_FLIGHT[e.state] then
            open = open + 1
          end
        end
      end
      for _, e in ipairs(pending) do
        if inflight >= r.spec.parallel then
          break
        end
        if start_forward(r, e, cfg) then
          inflight = inflight + 1
        end
        if e.state ~= "pending" and not IN_FLIGHT[e.state] then
          open = open - 1
        end
      end
      if open > 0 then
        break
      end
      -- the wave is over: the next one (after the pause), or the end
      local last = 0
      for _, e in ipairs(list) do
        last = math.max(last, e.wave)
      end
      if r.wave >= last then
        r.state, r.finished_at, r.reason = "finished", sys.iso_time(now), nil
        break
      end
      r.wave = r.wave + 1
      notes[#notes + 1] = { "rollout wave started", { rollout_id = r.id, wave = r.wave } }
      if (r.spec.pause_seconds or 0) > 0 then
        r.next_wave_at = sys.iso_time(now + r.spec.pause_seconds)
        delay = r.spec.pause_seconds
        break
      end
    end
  elseif r.state == "rolling_back" then
    local wave
    for _, e in ipairs(list) do
      if (e.state == "done" or e.state == "failed") and (not wave or e.wave < wave) then
        wave = e.wave
      end
    end
    local forward = 0
    for _, e in ipairs(list) do
      if e.state == "updating" or e.state == "checking" then
        forward = forward + 1
      end
    end
    if wave and forward == 0 then
      for _, e in ipairs(list) do
        if inflight >= r.spec.parallel then
          break
        end
        if e.wave == wave and (e.state == "done" or e.state == "failed") and start_back(r, e) then
          inflight = inflight + 1
        end
      end
    elseif not wave and inflight == 0 then
      r.state, r.finished_at, r.reason = "rolled_back", sys.iso_time(now), nil
    end
  end
  if r.state ~= was then
    event(r, nil, nil, "rollout_" .. r.state, r.reason or ("rollout " .. r.state))
    notes[#notes + 1] = { "rollout " .. r.state, { rollout_id = r.id, failures = r.failures, reason = r.reason } }
  end
  save_rollout(r)
  set_metrics(r, list)
  if r.state == "running" or r.state == "rolling_back" or inflight > 0 then
    delay = delay or M.POLL_SECONDS
  end
  return delay, notes
end

-- A claimed `rollout` job (lua/worker.lua): one tick, then re-queued with
-- its next look, or finished. The tick and the job's own outcome are one
-- transaction: a resume or rollback (M.act) either comes before it (and
-- the tick sees it) or finds the job queued or finished (and brings it
-- forward or queues a new one), never a driver about to end.
function M.run_job(job)
  local id = type(job.request) == "table" and job.request.rollout_id
  local function settle(delay)
    if delay then
      instances.update_job(job.id, { state = "queued", not_before = sys.iso_time(sys.now() + delay),
                                     waiting_for = "rollout: next look" })
    else
      instances.update_job(job.id, { state = "succeeded", finished_at = sys.iso_time(), waiting_for = json.null,
                                     result = { rollout_id = id } })
    end
  end
  local ok, notes = pcall(store.tx, function()
    local delay, n = M.tick(id, sys.now())
    settle(delay)
    return n
  end)
  if not ok then
    log.error("rollout tick failed; retried", { rollout_id = id, error = tostring(notes) })
    notes = {}
    store.tx(function() settle(1) end)
  end
  for _, n in ipairs(notes or {}) do
    (n[1]:find("failed") and log.warn or log.info)(n[1], n[2])
  end
  instances.flush()
  jobs.notify()
end

return M
