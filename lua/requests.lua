-- The three write requests of the API (and of Supabase webhooks) once
-- validated: provision, update and deprovision. Each is decided in one
-- transaction against the instance row (a repeat, a conflict, a domain
-- already claimed), queues a job, and is answered at once or, when the
-- client asked (`Prefer: wait=N`), with the job's outcome.
local crypto = require "mrprov.crypto"
local desired = require "desired"
local dokku = require "mrprov.dokku"
local generation = require "generation"
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
local store = require "mrprov.store"
local validate = require "validate"
local validate_request = require "validate_request"

local M = {}

M.MAX_WAIT = 600

local function answer(status, body, headers)
  return status, json.encode(body), headers
end

local function fail(status, code, message, field)
  return answer(status, { error = { code = code, message = message, field = field } })
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

-- The instance's domain: `{app}.{BASE_DOMAIN}`, or its custom domain. The
-- original service's `subdomain` is this name (its provision.py:
-- `subdomain = request.custom_domain or f"{app_name}.{settings.base_domain}"`).
local function domain_of(app_name, custom_domain, cfg)
  return desired.names(app_name, cfg.settings, custom_domain).domain
end

-- The legacy fields the original service returned, kept for its clients
-- (`subdomain` is set by the caller: it knows the instance's domain).
local function legacy(body, message)
  body.success = body.status ~= "failed"
  body.message = message
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
  if body.restart_required ~= nil then
    -- What the job did, from its journal: the prediction made at the
    -- request is replaced by the steps that ran.
    body.restart_required = journal.restarted(job_id)
  end
  local msg = job.state == "succeeded" and (job.operation .. " finished") or ("job failed: " .. tostring(job.error))
  return answer(200, legacy(body, msg), headers)
end

-- Each host's health now (lua/placement.lua's candidates must answer):
-- asked before the request's transaction, which must not wait on SSH. The
-- implicit host alone is not asked: without host files a provision is
-- taken while Dokku is down, as it always was (its job retries, then fails).
-- (lua/move.lua asks the same for a move's target.)
function M.host_health(list)
  local out = {}
  if list[1] and list[1].implicit then
    return out
  end
  for _, h in ipairs(list) do
    local ok, why = dokku.host_health(h.name)
    out[h.name] = { ok = ok, why = why }
  end
  return out
end

-- The hosts of list as placement sees them (lua/host_usage.lua), those
-- health (M.host_health) found down refused.
function M.host_views(list, health)
  return host_usage.view(list, function(name)
    local hh = health[name]
    if hh and not hh.ok then return false, hh.why end
    return true
  end)
end

-- Where a new instance goes: placement's choice among the generation's
-- hosts with what they hold now (inside the request's transaction, so two
-- provisions at once see each other). Returns the host's name, or nil, why.
local function place(r, cfg, health)
  local list = M.host_views(hosts.list(cfg), health)
  local limits = desired.limits(cfg.tiers[r.tier], r.limits)
  local hook = hooks.find(cfg.hooks, { subscription_id = r.subscription_id, account_id = r.account_id })
  return placement.choose({
    hosts = list, tier = cfg.tiers[r.tier], request = r,
    need = { memory_mb = limits.memory_mb, cpu = limits.cpu, instances = 1 },
    labels = placement.required_labels(cfg.tiers[r.tier], hook),
  })
end

-- A validated provision request (from the API or a webhook).
function M.provision_validated(r, req, cfg)
  local health = M.host_health(hosts.list(cfg))
  local outcome = store.tx(function()
    local inst = instances.get(r.subscription_id)
    if inst and instances.ACTIVE[inst.status] then
      return { repeat_of = inst }
    end
    if inst and inst.status == "deprovisioning" then
      return { conflict = "the instance of this subscription is being deprovisioned" }
    end
    local resume = inst and inst.status == "failed"
    -- The host is decided before anything else is written: no room
    -- anywhere creates nothing (a resumed provision keeps its host).
    local host = resume and inst.host
    if not host then
      local why
      host, why = place(r, cfg, health)
      if not host then
        return { no_capacity = why }
      end
    end
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
      -- the layout is chosen now and kept (plan.desired_state)
      spec = plan.spec_of(r, resume and inst.spec and inst.spec.profile or cfg.tiers[r.tier].profile),
      applied = resume and inst.applied or {},
      created_at = resume and inst.created_at or nil,
      dry_run = dokku.mode() == "dry-run",
      -- set before the rollout looks: its selector reads the host
      host = host,
      limits = desired.limits(cfg.tiers[r.tier], r.limits),
    }
    -- an active rollout that says so gives a new instance its targets
    -- (lua/rollout.lua); otherwise it gets MINDROOM_IMAGE
    require("rollout").apply_to_new(inst, cfg)
    -- the URLs of the layout (the mindroom profile always runs a
    -- homeserver: its matrix URL is known before the request asks for it)
    local state = plan.desired_state(inst, cfg)
    inst.urls = state and state.urls or urls_of({ app_name = inst.app_name, custom_domain = r.custom_domain,
                                                  enable_matrix = r.enable_matrix }, cfg)
    instances.save(inst)
    instances.place(inst.subscription_id, host)
    local job_id = instances.create_job(inst.subscription_id, "provision", r)
    return { inst = inst, job_id = job_id, resumed = resume, state = state }
  end)
  if outcome.no_capacity then
    log.warn("provision refused: no capacity", { subscription_id = r.subscription_id, reason = outcome.no_capacity })
    return fail(503, "no_capacity", outcome.no_capacity)
  end
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
      subdomain = domain_of(inst.app_name, inst.spec.custom_domain, cfg),
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
                                   app_name = inst.app_name, tier = inst.tier, resumed = outcome.resumed,
                                   host = inst.host })
  return maybe_wait(req, outcome.job_id, {
    job_id = outcome.job_id,
    subscription_id = inst.subscription_id,
    app_name = inst.app_name,
    subdomain = domain_of(inst.app_name, r.custom_domain, cfg),
    status = "provisioning",
    frontend_url = inst.urls.frontend,
    backend_url = inst.urls.backend,
    matrix_url = inst.urls.matrix or json.null,
    -- Only to the API caller: a webhook's answer is kept by its sender
    -- (Supabase's pg_net stores response bodies in net._http_response).
    admin_password = not req.from_webhook and plan.admin_password(inst.app_name) or nil,
    -- The instance's dashboard key (its MINDROOM_API_KEY), when its layout
    -- uses one: once, to the API caller only, like the admin password.
    api_key = not req.from_webhook and plan.api_key(outcome.state, inst, cfg) or nil,
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
      -- A tier without custom_limits has fixed limits (no range to apply
      -- them within): refused, never dropped without a word.
      if not tier.flags.custom_limits then
        return { status = 422, code = "invalid_value", field = "limits",
                 message = "limits cannot be set on the " .. tier_name .. " tier: its limits are fixed "
                   .. "(only a tier with custom_limits takes requested limits)" }
      end
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
    -- config_overrides in an update replace the instance's whole (send {} to
    -- drop them); kept ones must still fit the tier the update ends on.
    if r.config_overrides ~= nil then
      spec.config_overrides = next(r.config_overrides) ~= nil and r.config_overrides or nil
    end
    local oerr = validate_request.config_overrides_for(tier, spec.config_overrides)
    if oerr then
      return { status = 422, code = oerr.code, field = oerr.field, message = oerr.message }
    end
    inst.tier = tier_name
    inst.spec = spec
    if not instances.ACTIVE[inst.status] or instances.SETTLED[inst.status] then
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
  -- Whether the update restarts or redeploys anything: predicted from the
  -- plan against what the instance's jobs applied (no Dokku probe in a
  -- request); a client that waits gets what the job's steps did. Not for a
  -- webhook: its answer is read by no one and must be quick.
  local restarts
  if not req.from_webhook then
    restarts = plan.restarts(inst, cfg)
  end
  return maybe_wait(req, outcome.job_id, {
    job_id = outcome.job_id, subscription_id = inst.subscription_id, app_name = inst.app_name,
    subdomain = domain_of(inst.app_name, inst.spec.custom_domain, cfg),
    status = "updating", restart_required = restarts,
  }, "Update started")
end

function M.deprovision_validated(r, req, cfg)
  cfg = cfg or generation.current()
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
    local done = outcome.done
    return answer(200, legacy({ job_id = json.null, subscription_id = r.subscription_id, app_name = r.app_name,
                                subdomain = domain_of(done.app_name, done.spec.custom_domain, cfg),
                                status = "deprovisioned", backup_url = json.null },
      "the instance is already deprovisioned"))
  end
  jobs.notify()
  instances.flush()
  local inst = outcome.inst
  return maybe_wait(req, outcome.job_id, {
    job_id = outcome.job_id, subscription_id = inst.subscription_id, app_name = inst.app_name,
    subdomain = domain_of(inst.app_name, inst.spec.custom_domain, cfg),
    status = "deprovisioning", backup_url = json.null,
  }, "Deprovisioning started")
end

M.answer, M.fail, M.maybe_wait = answer, fail, maybe_wait

return M
