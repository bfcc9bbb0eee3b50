-- An instance's drift (issue 15 item 3): what its probes say differs from
-- its desired state, planned exactly as its next job would, and the record
-- of the last one (the `drift` table: the status view's `drift`, the
-- sweep's gauge). lua/reconcile.lua sweeps; this module knows one instance.
local engine = require "engine"
local executor = require "executor"
local json = require "json"
local plan = require "plan"
local redact_text = require "redact"
local store = require "mrprov.store"
local store_error = require "store_error"

local M = {}

local check = store_error.checked

-- The drift of a planned set of steps: one entry per resource whose probe
-- differs from its spec, { resource = key, type, app = target, commands =
-- {display...} }. raw[key] is what the probe said: a step planned only
-- because another change makes it stale (a domain change makes the
-- certificate stale, module.stale) is a follow-up of that fix, not drift
-- of its own; it is listed under `follow_ups`, and the restarts the engine
-- derives under `restarts` (apps).
function M.from_steps(steps, raw)
  local list, follow, restarts = json.array(), json.array(), json.array()
  for _, s in ipairs(steps) do
    local r = s.resource
    if s.derived then
      restarts[#restarts + 1] = r.target
    else
      local cmds = json.array()
      for _, c in ipairs(s.commands) do
        cmds[#cmds + 1] = c.display
      end
      local e = { resource = r.key, type = r.type, app = r.target, commands = cmds }
      local mod = engine.modules[r.type]
      local own = not raw or not mod or #mod.diff(r.spec, raw[r.key]) > 0
      if own then
        list[#list + 1] = e
      else
        follow[#follow + 1] = e
      end
    end
  end
  return list, follow, restarts
end

-- inst's desired state under cfg and its resources: { state, list }; or
-- nil, why (redacted).
function M.prepare(inst, cfg)
  local state, why = plan.desired_state(inst, cfg)
  if not state then
    return nil, redact_text.redactor(executor.job_secrets(inst, nil))(tostring(why))
  end
  return { state = state, list = engine.resources(state) }
end

-- Probes inst and plans it against its desired state under cfg. Returns
-- the drift entries (empty when in sync), { follow_ups, restarts } and the
-- number of resources probed; or nil, why (redacted).
-- current_of(applied, list, host) → function(r): default executor.current_of;
-- host: the instance's Dokku host.
-- prepared: what M.prepare returned for inst (the sweep prepares a batch
-- first, to probe it in one wave).
function M.drift(inst, cfg, current_of, prepared)
  local p = prepared
  if not p then
    local why
    p, why = M.prepare(inst, cfg)
    if not p then
      return nil, why
    end
  end
  local state, list = p.state, p.list
  local probe = (current_of or executor.current_of)(inst.applied or {}, list, inst.host or "default")
  local raw = {}
  local steps, err = engine.plan(list, function(r)
    local cur, perr = probe(r)
    raw[r.key] = cur
    return cur, perr
  end)
  if not steps then
    return nil, redact_text.redactor(executor.job_secrets(inst, state))(tostring(err))
  end
  local entries, follow, restarts = M.from_steps(steps, raw)
  return entries, { follow_ups = follow, restarts = restarts }, #list
end

-- Records an instance's drift (inside the caller's transaction).
function M.record(subscription_id, entries, at)
  check(store.exec("INSERT INTO drift (subscription_id, checked_at, resources) VALUES (?, ?, ?) " ..
    "ON CONFLICT (subscription_id) DO UPDATE SET checked_at = excluded.checked_at, resources = excluded.resources",
    subscription_id, at, json.encode(entries or json.array())))
end

-- A job that converged the instance made its drift history.
function M.forget(subscription_id)
  check(store.exec("DELETE FROM drift WHERE subscription_id = ?", subscription_id))
end

-- The status view's `drift`: null when never probed, else when and what.
function M.status_drift(subscription_id)
  local row = check(store.query("SELECT checked_at, resources FROM drift WHERE subscription_id = ?",
    subscription_id))[1]
  if not row then
    return json.null
  end
  local list = json.decode_stored(row.resources)
  return { checked_at = row.checked_at, resources = type(list) == "table" and list or json.array() }
end

-- Instances whose recorded drift is not empty (and that still exist).
function M.drifted_total()
  local rows = check(store.query("SELECT count(*) AS n FROM drift d JOIN instances i USING (subscription_id) " ..
    "WHERE d.resources <> '[]' AND i.status <> 'deprovisioned'"))
  return rows[1] and rows[1].n or 0
end

return M
