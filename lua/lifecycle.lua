-- Stop, start, restart, suspend and resume of an instance (issue 15): the
-- requests of POST /api/v1/instances/{subscription_id}/stop|start|restart,
-- of the Supabase webhook mapping (suspend, resume: lua/webhooks.lua) and
-- of the sweep. Each is decided in one transaction against the instance
-- row and queues an ordinary convergent job (after any job already queued
-- for the instance: the claim never runs two of one subscription at once).
--
-- Stopped is desired state, not an action: spec.stopped (true for a
-- stopped and for a suspended instance) makes resources/processes.lua plan
-- `ps:stop` for each app that runs and keeps deploys out of the plan, so a
-- later update, a repair or a resumed job never starts the instance by
-- accident; clearing it plans `ps:start` for what does not run. Every
-- object and all data stay. spec.suspended marks a stop the subscription
-- asked for: the API's start refuses it (409), only resume clears it. A
-- tier change while suspended is recorded (spec.pending_tier) and applied
-- by the resume. A restart puts the job's id in the desired state
-- (worker.lua: state.restart_token), which the running resource turns into
-- one `ps:restart` per app.
--
-- A request that changes nothing (stop of a stopped instance, start of a
-- running one, suspend of a suspended one, resume of one not suspended)
-- queues no job and is answered 200 with the instance's status and its
-- latest job, as a repeated provision is.
local generation = require "generation"
local instances = require "instances"
local jobs = require "mrprov.jobs"
local json = require "json"
local log = require "mrprov.log"
local requests = require "requests"
local store = require "mrprov.store"
local validate = require "validate"
local validate_request = require "validate_request"

local M = {}

M.ACTIONS = { stop = true, start = true, restart = true, suspend = true, resume = true }

local SUSPENDED = "the instance is suspended: its subscription is past due, unpaid or paused; it is resumed " ..
  "when the subscription is active again"

-- nil, or why the instance's spec cannot run on tier.
local function tier_refusal(tier, spec)
  if spec.custom_domain and not (tier.flags or {}).custom_domains then
    return "tier " .. tier.name .. " does not allow the instance's custom domain"
  end
  local oerr = validate_request.config_overrides_for(tier, spec.config_overrides)
  if oerr then
    return oerr.message
  end
end

-- The decision, inside the transaction: { status, code, message, field }
-- for a refusal, { same = message } when nothing changes, { update = r }
-- for a resume of an instance that is not suspended but changes tier, or
-- { inst, job_id, message }.
local function decide(sub, action, opts, cfg)
  local inst = instances.get(sub)
  if not inst then
    return { status = 404, code = "not_found", message = "no instance for this subscription",
             field = "subscription_id" }
  end
  if inst.status == "deprovisioned" or inst.status == "deprovisioning" then
    return { status = 409, code = "conflict", message = "the instance is " .. inst.status }
  end
  local spec = inst.spec
  local tier_note
  local new_tier = opts.tier
  if new_tier ~= nil and (type(new_tier) ~= "string" or not cfg.tiers[new_tier]) then
    if action ~= "suspend" then
      return { status = 422, code = "invalid_value", field = "tier", message = "tier is not a loaded tier" }
    end
    -- a suspension is not held up by a tier it cannot record
    tier_note = "tier " .. tostring(new_tier) .. " is not loaded: not recorded"
    new_tier = nil
  end
  if new_tier == inst.tier then
    new_tier = nil
  end
  local message
  if action == "stop" then
    if spec.stopped then
      return { same = spec.suspended and SUSPENDED or "the instance is already stopped", inst = inst }
    end
    spec.stopped = true
    message = "Stop started"
  elseif action == "start" then
    if spec.suspended then
      return { status = 409, code = "conflict", message = SUSPENDED }
    end
    if not spec.stopped then
      return { same = "the instance is not stopped", inst = inst }
    end
    spec.stopped = nil
    message = "Start started"
  elseif action == "restart" then
    if spec.suspended then
      return { status = 409, code = "conflict", message = SUSPENDED }
    end
    if spec.stopped then
      return { status = 409, code = "conflict", message = "the instance is stopped: start it instead" }
    end
    message = "Restart started"
  elseif action == "suspend" then
    if new_tier then
      local why = tier_refusal(cfg.tiers[new_tier], spec)
      if why then
        tier_note = "tier " .. new_tier .. " not recorded: " .. why
      else
        spec.pending_tier = new_tier
        tier_note = "tier change to " .. new_tier .. " recorded; applied on resume"
      end
    end
    if spec.suspended then
      if new_tier and spec.pending_tier == new_tier then
        instances.save(inst)
      end
      return { same = "the instance is already suspended" .. (tier_note and ("; " .. tier_note) or ""), inst = inst }
    end
    spec.stopped, spec.suspended = true, true
    message = "Suspension started" .. (tier_note and ("; " .. tier_note) or "")
  else -- resume
    if not spec.suspended then
      if new_tier then
        return { update = { subscription_id = sub, app_name = inst.app_name, tier = new_tier }, inst = inst }
      end
      return { same = "the instance is not suspended", inst = inst }
    end
    local tier_name = new_tier or spec.pending_tier or inst.tier
    local tier = cfg.tiers[tier_name]
    if not tier then
      return { status = 422, code = "invalid_value", field = "tier",
               message = "tier " .. tier_name .. " is not loaded: the instance stays suspended" }
    end
    local why = tier_refusal(tier, spec)
    if why then
      return { status = 422, code = "invalid_value", field = "tier", message = why .. ": the instance stays suspended" }
    end
    inst.tier = tier_name
    spec.pending_tier, spec.suspended, spec.stopped = nil, nil, nil
    message = "Resume started"
  end
  inst.spec = spec
  if not instances.ACTIVE[inst.status] or instances.SETTLED[inst.status] then
    inst.status = "updating"
  end
  instances.save(inst)
  local job_id = instances.create_job(sub, action, { subscription_id = sub, app_name = inst.app_name, action = action,
                                                     tier = inst.tier, from_webhook = opts.from_webhook or nil,
                                                     from_sweep = opts.from_sweep or nil })
  return { inst = inst, job_id = job_id, message = message }
end

-- subscription_id: the instance's; action: stop, start, restart, suspend or
-- resume; opts: { from_webhook = bool, from_sweep = bool, tier = new tier
-- (suspend: recorded for the resume; resume: applied), prefer = the
-- request's Prefer header (`wait=N`), cfg = the configuration (default: the
-- current generation) }. Returns status, JSON body [, headers], as the other
-- request functions (lua/requests.lua).
function M.request(subscription_id, action, opts)
  opts = opts or {}
  local cfg = opts.cfg or generation.current()
  if not M.ACTIONS[action] then
    return requests.fail(422, "invalid_value", "unknown action " .. tostring(action), "action")
  end
  local sub = type(subscription_id) == "string" and validate.subscription_id(subscription_id)
  if not sub then
    return requests.fail(404, "not_found", "no instance for this subscription", "subscription_id")
  end
  local d = store.tx(function()
    return decide(sub, action, opts, cfg)
  end)
  if d.status then
    return requests.fail(d.status, d.code, d.message, d.field)
  end
  if d.update then
    return requests.update_validated(d.update, { from_webhook = opts.from_webhook, prefer = opts.prefer }, cfg)
  end
  local inst = d.inst
  if d.same then
    instances.flush()
    local job = instances.latest_job(sub)
    return requests.answer(200, {
      job_id = job and job.id or json.null, subscription_id = sub, app_name = inst.app_name,
      action = action, status = inst.status, success = true, message = d.same,
    })
  end
  jobs.notify()
  instances.flush()
  log.info(action .. " accepted", { job_id = d.job_id, subscription_id = sub, app_name = inst.app_name,
                                    from_webhook = opts.from_webhook or nil, from_sweep = opts.from_sweep or nil })
  return requests.maybe_wait({ prefer = opts.prefer }, d.job_id, {
    job_id = d.job_id, subscription_id = sub, app_name = inst.app_name, action = action, status = inst.status,
  }, d.message)
end

return M
