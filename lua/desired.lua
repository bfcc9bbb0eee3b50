-- The desired state of one instance: a plain table built from the tier, the
-- instance's request (spec) and the service settings. It names every Dokku
-- object of SPEC §4 and what each should hold; the engine turns it into
-- resources. Pure: no I/O, so plan and apply cannot disagree.
-- This is the generic part: names, limits, secrets, the context; the layout
-- (which apps, images, environment, storage, ports, domains, services and
-- links) is the tier's profile (PROFILES_DIR/*.lua), whose answer is checked
-- (profiles.run) before anything plans from it.
local profiles = require "profiles"
local render = require "render"
local tiers = require "tiers"

local M = {}

local function fmt_num(v)
  if v == nil then
    return ""
  end
  if math.type(v) == "float" then
    return (string.format("%.3f", v):gsub("0+$", ""):gsub("%.$", ""))
  end
  return tostring(v)
end

-- The limits in force: the tier's, or for tiers with flags.custom_limits
-- (enterprise) the request's over the tier's.
function M.limits(tier, requested)
  return tiers.effective_limits(tier, requested)
end

-- Names and URLs of an instance (SPEC §4).
function M.names(app, settings, custom_domain, matrix)
  local domain = custom_domain or (app .. "." .. settings.base_domain)
  return {
    app = app,
    backend = app .. "-backend",
    frontend = app .. "-frontend",
    matrix = app .. "-matrix",
    db = app .. "-db",
    redis = app .. "-redis",
    domain = domain,
    urls = {
      frontend = "https://" .. domain,
      backend = "https://api." .. domain,
      matrix = matrix and ("https://matrix." .. domain) or nil,
    },
  }
end

local LIMIT_KEYS = { "memory_mb", "cpu", "storage_gb", "agents", "messages_per_day" }

local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

-- ctx: { instance = {app_name, subscription_id, account_id, tier, enable_matrix,
--        matrix_type, custom_domain, limits, config_updates, config_overrides},
--        tier = normalized tier (tier.layout: its profile), settings = service settings,
--        admin_password = derived secret, profile = a profile (optional: else the tier's),
--        secrets = { [name] = value } further secrets a profile may use (optional:
--        executor.instance_secrets) }
-- Returns the state, or nil and why.
function M.build(ctx)
  local inst, tier, settings = ctx.instance, ctx.tier, ctx.settings
  local profile = ctx.profile or tier.layout
  if not profile then
    return nil, "tier " .. tier.name .. " has no profile loaded"
  end
  local matrix = inst.enable_matrix and true or false
  local n = M.names(inst.app_name, settings, inst.custom_domain, matrix)
  local limits = M.limits(tier, inst.limits)
  local config_yaml, yerr = render.config_yaml(tier, {
    app_name = inst.app_name, subscription_id = inst.subscription_id,
    account_id = inst.account_id, tier = tier.name, config_overrides = inst.config_overrides,
  })
  if not config_yaml then
    return nil, "cannot render config.yaml for tier " .. tier.name .. ": " .. tostring(yerr)
  end
  local limits_text = {}
  for _, k in ipairs(LIMIT_KEYS) do limits_text[k] = fmt_num(limits[k]) end

  -- The profile never sees a secret: an opaque marker stands for each, and
  -- an env value set to one becomes that secret and a secret key of its app.
  local values = { admin_password = ctx.admin_password }
  for k, v in pairs(ctx.secrets or {}) do values[k] = v end
  local secrets = profiles.secrets(values)
  local answer, err = profiles.run(profile, {
    app = inst.app_name, subscription_id = inst.subscription_id, account_id = inst.account_id,
    tier = tier.name, names = copy(n), custom_domain = inst.custom_domain,
    matrix = matrix and { type = inst.matrix_type or "tuwunel" } or nil,
    limits = copy(limits), limits_text = limits_text,
    app_limits = { memory_mb = limits.memory_mb, cpu = limits.cpu },
    config_yaml = config_yaml, config_updates = copy(inst.config_updates or {}),
    settings = {
      backend_image = settings.backend_image, frontend_image = settings.frontend_image,
      tuwunel_image = settings.tuwunel_image, synapse_image = settings.synapse_image,
      instance_data_base = settings.instance_data_base, letsencrypt_email = settings.letsencrypt_email,
      base_domain = settings.base_domain, mindroom_image = settings.mindroom_image,
      supabase_url = settings.supabase_url, supabase_auth = settings.supabase_auth or false,
      provider_keys = copy(settings.provider_keys or {}),
    },
    secrets = secrets.markers,
  }, { app = n.app, data_base = settings.instance_data_base, secrets = secrets })
  if not answer then
    return nil, err
  end
  local state = {
    app = n.app,
    domain = n.domain,
    urls = n.urls,
    limits = limits,
    apps = answer.apps,
    services = answer.services,
    -- the names of the secrets the layout uses (the provision answer
    -- returns the instance API key once only when it is in use)
    secrets_used = answer.secrets_used,
  }
  -- A layout that always runs a homeserver (the mindroom profile) has a
  -- Matrix URL whatever the request said.
  if not n.urls.matrix then
    for _, a in ipairs(answer.apps) do
      if a.role == "matrix" and not a.absent then n.urls.matrix = "https://matrix." .. n.domain end
    end
  end
  local _, derr = M.domains(state)
  if derr then
    return nil, profiles.where(profile) .. ": build(): " .. derr
  end
  return state
end

-- Every domain the state's apps serve, sorted; nil, why when two of its apps
-- share one (Dokku's proxy would serve it from either).
function M.domains(state)
  local list, seen = {}, {}
  for _, a in ipairs(state.apps) do
    if not a.absent then
      for _, d in ipairs(a.domains or {}) do
        if seen[d] then
          return nil, "domain " .. d .. " is on both " .. seen[d] .. " and " .. a.name
        end
        seen[d] = a.name
        list[#list + 1] = d
      end
    end
  end
  table.sort(list)
  return list
end

return M
