-- The HTTP API under /api/v1 (SPEC §5): C routes, authenticates and hands
-- over the raw body; here it is parsed, validated and routed: the write
-- requests to lua/requests.lua, the plan to lua/plan.lua; the reads are
-- answered here. Every answer is JSON; every error has the shape
-- {"error": {code, message, field}}.
local generation = require "generation"
local instances = require "instances"
local journal = require "journal"
local json = require "json"
local listings = require "listings"
local plan = require "plan"
local drift = require "drift"
local reconcile = require "reconcile"
local requests = require "requests"
local rollout = require "rollout"
local store = require "mrprov.store"
local tiers = require "tiers"
local validate = require "validate"
local validate_request = require "validate_request"

local M = {}

M.MAX_WAIT = requests.MAX_WAIT
M.prefer_wait = requests.prefer_wait

local answer, fail = requests.answer, requests.fail

local function invalid(err)
  local status = err.code == "invalid_body" and 400 or 422
  return fail(status, err.code or "invalid_value", err.message, err.field)
end

local function parse(body)
  if body == "" then
    return nil, "request body is empty"
  end
  local v, err = json.decode(body)
  if v == nil then
    return nil, "malformed JSON: " .. tostring(err)
  end
  if type(v) ~= "table" or (next(v) ~= nil and #v > 0) then
    return nil, "the body must be a JSON object"
  end
  return v
end

-- A custom domain must not sit under BASE_DOMAIN, where instances' own
-- names live (it could shadow another customer's instance).
function M.custom_domain_error(domain, cfg)
  if type(domain) ~= "string" then
    return nil
  end
  local ok, err = validate.instance_domain(domain, cfg.settings.base_domain)
  if not ok then
    return "custom_domain " .. err
  end
end

-- Parses the body, validates it with check(t, cfg) → request | nil, err,
-- refuses a custom domain under BASE_DOMAIN, then answers with
-- next_fn(request, req, cfg).
local function with_request(req, check, next_fn)
  local t, perr = parse(req.body)
  if not t then
    return fail(400, "invalid_json", perr)
  end
  local cfg = generation.current()
  local r, err = check(t, cfg)
  if not r then
    return invalid(err)
  end
  local derr = M.custom_domain_error(r.custom_domain, cfg)
  if derr then
    return fail(422, "invalid_value", derr, "custom_domain")
  end
  return next_fn(r, req, cfg)
end

function M.provision(req)
  return with_request(req, function(t, cfg)
    return validate_request.provision_request(t, cfg.tiers, { account_required = true })
  end, requests.provision_validated)
end

function M.update(req)
  return with_request(req, function(t, cfg)
    local sub = type(t.subscription_id) == "string" and validate.subscription_id(t.subscription_id)
    local existing = sub and instances.get(sub)
    return validate_request.update_request(t, cfg.tiers, existing and existing.tier)
  end, requests.update_validated)
end

function M.deprovision(req)
  return with_request(req, function(t) return validate_request.deprovision_request(t) end,
    requests.deprovision_validated)
end

function M.plan(req)
  return with_request(req, function(t, cfg) return validate_request.provision_request(t, cfg.tiers) end,
    function(r, _, cfg)
      local p, err = plan.plan_for(r, cfg)
      if not p then
        return fail(503, "unavailable", err)
      end
      return answer(200, p)
    end)
end

-- One snapshot: a job and its instance change in one transaction, so a view
-- read in two steps could show a finished job beside a busy status; only
-- the columns the view shows (no spec, applied, request or result document
-- decoded).
local function read_status(sub)
  local i = sub and instances.get_summary(sub)
  return i, i and instances.latest_job_summary(sub), i and drift.status_drift(sub)
end

function M.status(req)
  local sub = validate.subscription_id(req.param or "")
  local inst, job, drifted = store.read(read_status, sub)
  if not inst then
    return fail(404, "not_found", "no instance for this subscription", "subscription_id")
  end
  local view = instances.status_view(inst, job)
  -- what the last drift sweep found (lua/drift.lua); null until probed
  view.drift = drifted or json.null
  -- the MindRoom image of its desired state: its own (a rollout's,
  -- lua/rollout.lua) or MINDROOM_IMAGE; pinned: rollouts skip it
  view.image = rollout.image_of(inst, generation.current().settings)
  view.image_override = type(inst.image) == "string"
  -- the environment keys a rollout set on it (names only, never a value)
  local keys = json.array()
  for k in tostring(inst.env_keys or ""):gmatch("[^,]+") do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  view.env_override_keys = keys
  view.pinned = inst.pinned == 1 or inst.pinned == true
  return answer(200, view)
end

-- GET /api/v1/reconcile: the last finished sweep's report (null before the
-- first), and the sweep under way if one is.
function M.reconcile_report()
  local rep, running = reconcile.last()
  local body = rep or { state = "none", message = "no sweep has finished yet" }
  body.running = running or json.null
  return answer(200, body)
end

-- POST /api/v1/reconcile: starts a sweep now (202), or 409 while one runs.
function M.reconcile_start()
  local what, id = reconcile.start_now()
  if what == "running" then
    return answer(409, { error = { code = "conflict", message = "a sweep is already running", field = json.null },
                         job_id = id })
  end
  return answer(202, { job_id = id, state = "queued", message = "sweep started" })
end

function M.job(req)
  local id = req.param or ""
  local job, steps = store.read(function()
    local j = id:match("^job_[0-9a-f]+$") and #id <= 64 and instances.job(id)
    return j, j and journal.steps(id)
  end)
  if not job then
    return fail(404, "not_found", "no such job", "job_id")
  end
  return answer(200, instances.job_view(job, steps))
end

-- GET /api/v1/instances and GET /api/v1/jobs (lua/listings.lua): filters
-- and paging from the query string.
local function listing(fn)
  return function(req)
    local body, err = fn(req.query or {})
    if not body then
      return invalid(err)
    end
    return answer(200, body)
  end
end

-- POST /api/v1/jobs/{job_id}/retry (lua/retry.lua); no body is read.
function M.job_retry(req)
  return require("retry").request(req.param or "", req)
end

function M.tiers()
  local cfg = generation.current()
  local list = json.array()
  for _, name in ipairs(tiers.names(cfg.tiers)) do
    list[#list + 1] = tiers.describe(cfg.tiers[name])
  end
  return answer(200, { tiers = list, generation = cfg.generation })
end

-- POST /api/v1/webhooks/supabase: C has already checked the signature or
-- the shared secret; here the payload is mapped to an operation.
function M.webhook(req)
  local t, perr = parse(req.body)
  if not t then
    return fail(400, "invalid_json", perr)
  end
  return require("webhooks").handle(t, req, requests)
end

-- POST /api/v1/subscriptions/sync: one run of the subscriptions sync now
-- (lua/subscriptions_sync.lua; the sweep runs it too), body {} or
-- {"dry_run": true}. Blocks this request for the PostgREST reads (each
-- bounded by SUPABASE_TIMEOUT).
function M.subscriptions_sync(req)
  local t = {}
  if req.body ~= "" then
    local perr
    t, perr = parse(req.body)
    if not t then
      return fail(400, "invalid_json", perr)
    end
  end
  if t.dry_run ~= nil and type(t.dry_run) ~= "boolean" then
    return fail(422, "invalid_value", "dry_run must be true or false", "dry_run")
  end
  if not generation.current().settings.supabase then
    return fail(409, "conflict", "Supabase is not configured (SUPABASE_URL)")
  end
  return answer(200, require("subscriptions_sync").run({}, { dry_run = t.dry_run == true }))
end

-- POST /api/v1/instances/{subscription_id}/stop|start|restart
-- (lua/lifecycle.lua); no body is read.
local function lifecycle_route(action)
  return function(req)
    return require("lifecycle").request(req.param or "", action, { prefer = req.prefer })
  end
end

-- Fleet rollouts (lua/rollout.lua).
function M.rollout_create(req)
  local t, perr = parse(req.body)
  if not t then
    return fail(400, "invalid_json", perr)
  end
  local r, err = rollout.validate(t, generation.current())
  if not r then
    return invalid(err)
  end
  local out = rollout.create(r)
  if not out.id then
    return answer(out.status, { error = out.err })
  end
  return answer(201, rollout.view(out.id))
end

function M.rollouts()
  return answer(200, { rollouts = rollout.list() })
end

function M.rollout_show(req)
  local id = req.param or ""
  local v = rollout.valid_id(id) and rollout.view(id)
  if not v then
    return fail(404, "not_found", "no such rollout", "rollout_id")
  end
  return answer(200, v)
end

local function rollout_action(action)
  return function(req)
    local out = rollout.act(req.param or "", action)
    if not out.state then
      return answer(out.status, { error = out.err })
    end
    return answer(200, rollout.view(req.param))
  end
end

-- POST /api/v1/instances/{subscription_id}/pin|unpin
local function pin_route(pinned)
  return function(req)
    local out = rollout.pin(req.param or "", pinned)
    if not out then
      return fail(404, "not_found", "no instance for this subscription", "subscription_id")
    end
    return answer(200, out)
  end
end

local handlers = {
  provision = M.provision, update = M.update, deprovision = M.deprovision, plan = M.plan,
  status = M.status, job = M.job, tiers = M.tiers, webhook = M.webhook, subscriptions_sync = M.subscriptions_sync,
  stop = lifecycle_route("stop"), start = lifecycle_route("start"), restart = lifecycle_route("restart"),
  reconcile = M.reconcile_report, reconcile_start = M.reconcile_start,
  instances = listing(listings.instances), jobs = listing(listings.jobs), job_retry = M.job_retry,
  rollouts = M.rollouts, rollout_create = M.rollout_create, rollout = M.rollout_show,
  rollout_pause = rollout_action("pause"), rollout_resume = rollout_action("resume"),
  rollout_abort = rollout_action("abort"), rollout_rollback = rollout_action("rollback"),
  pin = pin_route(true), unpin = pin_route(false),
  -- the Dokku hosts (issue 16, lua/hosts_api.lua)
  hosts = function(req) return require("hosts_api").list(req) end,
  host_drain = function(req) return require("hosts_api").drain(req, true) end,
  host_undrain = function(req) return require("hosts_api").drain(req, false) end,
  host_evacuate = function(req) return require("move").evacuate(req.param) end,
  -- POST /api/v1/instances/{subscription_id}/move (lua/move.lua)
  move = function(req) return require("move").request(req.param or "", req.body) end,
}

function M.handle(route, req)
  local h = handlers[route]
  if not h then
    return fail(404, "not_found", "no such route")
  end
  return h(req)
end

return M
