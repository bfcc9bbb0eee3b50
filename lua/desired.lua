-- The desired state of one instance: a plain table built from the tier, the
-- instance's request (spec) and the service settings. It names every Dokku
-- object of SPEC §4 and what each should hold; the engine turns it into
-- resources. Pure: no I/O, so plan and apply cannot disagree.
local render = require "render"
local tiers = require "tiers"

local M = {}

M.BACKEND_DATA_PATH = "/app/data"
M.MATRIX_DATA_PATH = { tuwunel = "/var/lib/tuwunel", synapse = "/data" }
M.MATRIX_ENV_PREFIXES = { "TUWUNEL_", "SYNAPSE_" }
-- The ports the servers listen on, mapped from host port 80 (Dokku maps an
-- EXPOSEd port P as http:P:P). MindRoom: 8765 (mindroom Dockerfile.mindroom,
-- cli/main.py --api-port); Synapse 8008 (its listener); Tuwunel 8008 (the
-- mindroom-tuwunel chart). The frontend image's port is left to Dokku.
M.CONTAINER_PORT = { backend = 8765, matrix = { tuwunel = 8008, synapse = 8008 } }
M.STORAGE_CHOWN = "false"

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

-- ctx: { instance = {app_name, subscription_id, account_id, tier, enable_matrix,
--        matrix_type, custom_domain, limits, config_updates},
--        tier = normalized tier, settings = service settings,
--        admin_password = derived secret }
-- Returns the state, or nil and why.
function M.build(ctx)
  local inst, tier, settings = ctx.instance, ctx.tier, ctx.settings
  local matrix = inst.enable_matrix and true or false
  local n = M.names(inst.app_name, settings, inst.custom_domain, matrix)
  local limits = M.limits(tier, inst.limits)
  local base = settings.instance_data_base
  local config_yaml, yerr = render.config_yaml(tier, {
    app_name = inst.app_name, subscription_id = inst.subscription_id,
    account_id = inst.account_id, tier = tier.name,
  })
  if not config_yaml then
    return nil, "cannot render config.yaml for tier " .. tier.name .. ": " .. tostring(yerr)
  end

  local backend_env = {
    MINDROOM_INSTANCE_ID = inst.app_name,
    MINDROOM_SUBSCRIPTION_ID = inst.subscription_id,
    MINDROOM_ACCOUNT_ID = inst.account_id or "",
    MINDROOM_TIER = tier.name,
    MINDROOM_FRONTEND_URL = n.urls.frontend,
    MINDROOM_BACKEND_URL = n.urls.backend,
    MINDROOM_MATRIX_URL = n.urls.matrix or "",
    MINDROOM_MEMORY_MB = fmt_num(limits.memory_mb),
    MINDROOM_CPU_LIMIT = fmt_num(limits.cpu),
    MINDROOM_STORAGE_GB = fmt_num(limits.storage_gb),
    MINDROOM_MAX_AGENTS = fmt_num(limits.agents),
    MINDROOM_MESSAGES_PER_DAY = fmt_num(limits.messages_per_day),
    MINDROOM_STORAGE_PATH = M.BACKEND_DATA_PATH,
    MINDROOM_ADMIN_PASSWORD = ctx.admin_password,
    MINDROOM_CONFIG_YAML = config_yaml,
  }
  for k, v in pairs(inst.config_updates or {}) do
    backend_env[k] = v
  end

  -- Always a limits resource: a limit the tier (or request) no longer has
  -- is cleared on Dokku, not left as it was.
  local app_limits = { memory_mb = limits.memory_mb, cpu = limits.cpu }
  local tls = { email = settings.letsencrypt_email }

  local apps = {
    { name = n.app, role = "main" },
    {
      name = n.backend, role = "backend", image = settings.backend_image, container_port = M.CONTAINER_PORT.backend,
      env = backend_env, secret_keys = { MINDROOM_ADMIN_PASSWORD = true },
      limits = app_limits, domains = { "api." .. n.domain },
      storage = { dir = n.app, host_path = base .. "/" .. n.app, container_path = M.BACKEND_DATA_PATH,
                  chown = M.STORAGE_CHOWN },
      letsencrypt = tls,
    },
    {
      name = n.frontend, role = "frontend", image = settings.frontend_image,
      env = {
        MINDROOM_INSTANCE_ID = inst.app_name,
        MINDROOM_API_URL = n.urls.backend,
        MINDROOM_MATRIX_URL = n.urls.matrix or "",
      },
      limits = app_limits, domains = { n.domain }, letsencrypt = tls,
    },
  }
  if matrix then
    local kind = inst.matrix_type or "tuwunel"
    local env
    if kind == "synapse" then
      env = { SYNAPSE_SERVER_NAME = "matrix." .. n.domain, SYNAPSE_REPORT_STATS = "no" }
    else
      env = {
        TUWUNEL_SERVER_NAME = "matrix." .. n.domain,
        TUWUNEL_DATABASE_PATH = M.MATRIX_DATA_PATH.tuwunel,
        TUWUNEL_ALLOW_REGISTRATION = "false",
      }
    end
    apps[#apps + 1] = {
      name = n.matrix, role = "matrix", matrix_type = kind, container_port = M.CONTAINER_PORT.matrix[kind],
      image = kind == "synapse" and settings.synapse_image or settings.tuwunel_image,
      -- after a switch of server, the other one's variables and mount go
      env = env, env_owned_prefixes = M.MATRIX_ENV_PREFIXES, domains = { "matrix." .. n.domain },
      storage = { dir = n.matrix, host_path = base .. "/" .. n.matrix,
                  container_path = M.MATRIX_DATA_PATH[kind], chown = M.STORAGE_CHOWN,
                  owned_paths = { M.MATRIX_DATA_PATH.tuwunel, M.MATRIX_DATA_PATH.synapse } },
      letsencrypt = tls,
    }
  else
    apps[#apps + 1] = { name = n.matrix, role = "matrix", absent = true }
  end

  return {
    app = n.app,
    domain = n.domain,
    urls = n.urls,
    limits = limits,
    apps = apps,
    services = {
      { kind = "postgres", name = n.db, links = { n.backend } },
      { kind = "redis", name = n.redis, links = { n.backend } },
    },
  }
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
