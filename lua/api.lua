-- The HTTP API under /api/v1 (SPEC §5): C routes, authenticates and hands
-- over the raw body; here it is parsed, validated and decided. Every answer
-- is JSON; every error has the shape {"error": {code, message, field}}.
local boot = require "boot"
local crypto = require "mrprov.crypto"
local desired = require "desired"
local dokku = require "mrprov.dokku"
local engine = require "engine"
local instances = require "instances"
local jobs = require "mrprov.jobs"
local json = require "json"
local log = require "mrprov.log"
local store = require "mrprov.store"
local tiers = require "tiers"
local validate = require "validate"
local worker = require "worker"

local M = {}

M.MAX_WAIT = 600

local function answer(status, body, headers)
  return status, json.encode(body), headers
end

local function fail(status, code, message, field)
  return answer(status, { error = { code = code, message = message, field = field } })
end

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

-- `Prefer: wait=N` (RFC 7240): seconds to wait, or nil.
function M.prefer_wait(header)
  if not header then
    return nil
  end
  local n = header:lower():match("wait%s*=%s*(%d+)")
  if not n then
    return nil
  end
  return math.min(tonumber(n), M.MAX_WAIT)
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

local function new_app_name(subscription_id)
  for _ = 1, 20 do
    local name = validate.new_app_name(subscription_id, crypto.random_token)
    if not instances.app_taken(name) then
      return name
    end
  end
  error("cannot find a free app name")
end

local function urls_of(inst_like, cfg)
  local n = desired.names(inst_like.app_name, cfg.settings, inst_like.custom_domain, inst_like.enable_matrix)
  return n.urls
end

-- The legacy fields the original service returned, kept for its clients.
local function legacy(body, message)
  body.success = body.status ~= "failed"
  body.message = message
  body.subdomain = body.app_name
  return body
end

-- Waits for the job when the client asked to, and folds its outcome in.
local function maybe_wait(req, job_id, body, message)
  local wait = M.prefer_wait(req.prefer)
  if not wait or wait == 0 then
    return answer(202, legacy(body, message))
  end
  local headers = { ["Preference-Applied"] = "wait=" .. wait }
  if not jobs.wait(job_id, wait) then
    return answer(202, legacy(body, message), headers)
  end
  local job = instances.job(job_id)
  local inst = instances.get(job.subscription_id)
  body.status = inst.status
  body.job_state = job.state
  if job.result and job.result ~= json.null then
    body.provisioning_time_seconds = job.result.provisioning_time_seconds
    if job.result.backup then
      body.backup = job.result.backup
    end
  end
  body.error = job.error
  local msg = job.state == "succeeded" and (job.operation .. " finished") or ("job failed: " .. tostring(job.error))
  return answer(200, legacy(body, msg), headers)
end

local function spec_of(r)
  return {
    enable_matrix = r.enable_matrix or false,
    matrix_type = r.matrix_type or "tuwunel",
    custom_domain = r.custom_domain,
    limits = r.limits,
    config_updates = r.config_updates or {},
  }
end

-- Parses the body, validates it with check(t, cfg) → request | nil, err,
-- refuses a custom domain under BASE_DOMAIN, then answers with
-- next_fn(request, req, cfg).
local function with_request(req, check, next_fn)
  local t, perr = parse(req.body)
  if not t then
    return fail(400, "invalid_json", perr)
  end
  local cfg = boot.current()
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
  return with_request(req, function(t, cfg) return validate.provision_request(t, cfg.tiers) end,
    M.provision_validated)
end

-- A validated provision request (from the API or a webhook).
function M.provision_validated(r, req, cfg)
  local outcome = store.tx(function()
    local inst = instances.get(r.subscription_id)
    if inst and instances.ACTIVE[inst.status] then
      return { repeat_of = inst }
    end
    if inst and inst.status == "deprovisioning" then
      return { conflict = "the instance of this subscription is being deprovisioned" }
    end
    local resume = inst and inst.status == "failed"
    if r.custom_domain then
      local claimed, why = instances.claim_domains(r.subscription_id, { r.custom_domain })
      if not claimed then
        return { conflict = why, field = "custom_domain" }
      end
    end
    inst = {
      subscription_id = r.subscription_id,
      account_id = r.account_id,
      app_name = resume and inst.app_name or new_app_name(r.subscription_id),
      tier = r.tier,
      status = "provisioning",
      spec = spec_of(r),
      applied = resume and inst.applied or {},
      created_at = resume and inst.created_at or nil,
      dry_run = dokku.mode() == "dry-run",
    }
    inst.urls = urls_of({ app_name = inst.app_name, custom_domain = r.custom_domain,
                          enable_matrix = r.enable_matrix }, cfg)
    inst.limits = desired.limits(cfg.tiers[r.tier], r.limits)
    instances.save(inst)
    local job_id = instances.create_job(inst.subscription_id, "provision", r)
    return { inst = inst, job_id = job_id, resumed = resume }
  end)
  if outcome.conflict then
    return fail(409, "conflict", outcome.conflict, outcome.field or "subscription_id")
  end
  if outcome.repeat_of then
    local inst = outcome.repeat_of
    local job = instances.latest_job(inst.subscription_id)
    return answer(200, legacy({
      job_id = job and job.id or json.null,
      subscription_id = inst.subscription_id,
      app_name = inst.app_name,
      status = inst.status,
      frontend_url = inst.urls.frontend,
      backend_url = inst.urls.backend,
      matrix_url = inst.urls.matrix or json.null,
    }, "an instance already exists for this subscription"))
  end
  jobs.notify()
  instances.flush()
  local inst = outcome.inst
  log.info("provision accepted", { job_id = outcome.job_id, subscription_id = inst.subscription_id,
                                   app_name = inst.app_name, tier = inst.tier, resumed = outcome.resumed })
  return maybe_wait(req, outcome.job_id, {
    job_id = outcome.job_id,
    subscription_id = inst.subscription_id,
    app_name = inst.app_name,
    status = "provisioning",
    frontend_url = inst.urls.frontend,
    backend_url = inst.urls.backend,
    matrix_url = inst.urls.matrix or json.null,
    -- Only to the API caller: a webhook's answer is kept by its sender
    -- (Supabase's pg_net stores response bodies in net._http_response).
    admin_password = not req.from_webhook and worker.admin_password(inst.app_name) or nil,
  }, outcome.resumed and "Provisioning resumed" or "Provisioning started")
end

local function owned(r)
  local inst = instances.get(r.subscription_id)
  if not inst then
    return nil, 404, "not_found", "no instance for this subscription", "subscription_id"
  end
  if inst.app_name ~= r.app_name then
    return nil, 409, "conflict", "app_name is not the instance of this subscription", "app_name"
  end
  return inst
end

function M.update(req)
  return with_request(req, function(t, cfg)
    local sub = type(t.subscription_id) == "string" and validate.subscription_id(t.subscription_id)
    local existing = sub and instances.get(sub)
    return validate.update_request(t, cfg.tiers, existing and existing.tier)
  end, M.update_validated)
end

function M.update_validated(r, req, cfg)
  local outcome = store.tx(function()
    local inst, status, code, message, field = owned(r)
    if not inst then
      return { status = status, code = code, message = message, field = field }
    end
    if inst.status == "deprovisioned" or inst.status == "deprovisioning" then
      return { status = 409, code = "conflict", message = "the instance is " .. inst.status }
    end
    local tier_name = r.tier or inst.tier
    local tier = cfg.tiers[tier_name]
    local spec = inst.spec
    if r.enable_matrix ~= nil then
      spec.enable_matrix = r.enable_matrix
    end
    if r.matrix_type then
      spec.matrix_type = r.matrix_type
    end
    if r.custom_domain ~= nil then
      spec.custom_domain = r.custom_domain ~= json.null and r.custom_domain or nil
    end
    if r.limits then
      spec.limits = r.limits
    end
    if spec.custom_domain and not tier.flags.custom_domains then
      return { status = 422, code = "invalid_value", field = "tier",
               message = "tier " .. tier_name .. " does not allow the instance's custom domain" }
    end
    if spec.custom_domain then
      local claimed, why = instances.claim_domains(inst.subscription_id, { spec.custom_domain })
      if not claimed then
        return { status = 409, code = "conflict", field = "custom_domain", message = why }
      end
    end
    spec.config_updates = spec.config_updates or {}
    for k, v in pairs(r.config_updates or {}) do
      spec.config_updates[k] = v
    end
    local within, why = validate.config_updates_total(spec.config_updates)
    if not within then
      return { status = 422, code = "invalid_value", field = "config_updates", message = "config_updates " .. why }
    end
    inst.tier = tier_name
    inst.spec = spec
    if not instances.ACTIVE[inst.status] or inst.status == "running" then
      inst.status = "updating"
    end
    instances.save(inst)
    local job_id = instances.create_job(inst.subscription_id, "update", r)
    return { inst = inst, job_id = job_id }
  end)
  if outcome.status then
    return fail(outcome.status, outcome.code, outcome.message, outcome.field)
  end
  jobs.notify()
  instances.flush()
  local inst = outcome.inst
  return maybe_wait(req, outcome.job_id, {
    job_id = outcome.job_id, subscription_id = inst.subscription_id, app_name = inst.app_name,
    status = "updating", restart_required = false,
  }, "Update started")
end

function M.deprovision(req)
  return with_request(req, function(t) return validate.deprovision_request(t) end, M.deprovision_validated)
end

function M.deprovision_validated(r, req)
  local outcome = store.tx(function()
    local inst, status, code, message, field = owned(r)
    if not inst then
      return { status = status, code = code, message = message, field = field }
    end
    if inst.status == "deprovisioned" then
      return { done = inst }
    end
    if inst.status == "deprovisioning" then
      return { status = 409, code = "conflict", message = "the instance is already being deprovisioned" }
    end
    inst.status = "deprovisioning"
    instances.save(inst)
    local job_id = instances.create_job(inst.subscription_id, "deprovision", r)
    return { inst = inst, job_id = job_id }
  end)
  if outcome.status then
    return fail(outcome.status, outcome.code, outcome.message, outcome.field)
  end
  if outcome.done then
    return answer(200, legacy({ job_id = json.null, subscription_id = r.subscription_id, app_name = r.app_name,
                                status = "deprovisioned", backup_url = json.null },
      "the instance is already deprovisioned"))
  end
  jobs.notify()
  instances.flush()
  local inst = outcome.inst
  return maybe_wait(req, outcome.job_id, {
    job_id = outcome.job_id, subscription_id = inst.subscription_id, app_name = inst.app_name,
    status = "deprovisioning", backup_url = json.null,
  }, "Deprovisioning started")
end

-- The plan of a provision request, without side effects.
function M.plan_for(r, cfg)
  -- `mrprov plan` runs without a store when none exists yet.
  local inst = store.is_open() and instances.get(r.subscription_id) or nil
  local existing = inst and inst.status ~= "deprovisioned"
  local shown = {
    subscription_id = r.subscription_id, account_id = r.account_id, tier = r.tier,
    app_name = existing and inst.app_name or validate.new_app_name(r.subscription_id, crypto.random_token),
    spec = spec_of(r),
  }
  local state, terr, hook = worker.desired_state(shown, cfg)
  if not state then
    return nil, terr
  end
  local resources = engine.resources(state)
  local steps, err = engine.plan(resources, worker.current_of(existing and inst.applied or {}, resources))
  if not steps then
    return nil, err
  end
  local commands, list = json.array(), json.array()
  for _, s in ipairs(steps) do
    for _, c in ipairs(s.commands) do
      commands[#commands + 1] = c.display
      list[#list + 1] = { resource = c.resource, target = c.target, command = c.display }
    end
  end
  return {
    tier = r.tier, app_name = shown.app_name, subscription_id = r.subscription_id,
    dry_run = dokku.mode() == "dry-run", existing = existing or false,
    urls = state.urls, commands = commands, steps = list,
    hook = hook and { file = hook.file, desired = hook.desired ~= nil, after = hook.after ~= nil } or json.null,
  }
end

function M.plan(req)
  return with_request(req, function(t, cfg) return validate.provision_request(t, cfg.tiers) end,
    function(r, _, cfg)
      local p, err = M.plan_for(r, cfg)
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
  return i, i and instances.latest_job_summary(sub)
end

function M.status(req)
  local sub = validate.subscription_id(req.param or "")
  local inst, job = store.read(read_status, sub)
  if not inst then
    return fail(404, "not_found", "no instance for this subscription", "subscription_id")
  end
  return answer(200, instances.status_view(inst, job))
end

function M.job(req)
  local id = req.param or ""
  local job, steps = store.read(function()
    local j = id:match("^job_[0-9a-f]+$") and #id <= 64 and instances.job(id)
    return j, j and instances.steps(id)
  end)
  if not job then
    return fail(404, "not_found", "no such job", "job_id")
  end
  return answer(200, instances.job_view(job, steps))
end

function M.tiers()
  local cfg = boot.current()
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
  return require("webhooks").handle(t, req, M)
end

local handlers = {
  provision = M.provision, update = M.update, deprovision = M.deprovision, plan = M.plan,
  status = M.status, job = M.job, tiers = M.tiers, webhook = M.webhook,
}

function M.handle(route, req)
  local h = handlers[route]
  if not h then
    return fail(404, "not_found", "no such route")
  end
  return h(req)
end

return M
