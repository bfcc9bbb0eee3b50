-- Loads one configuration generation into this Lua state: the service
-- settings (validated: every one may reach a Dokku command), the profiles
-- (instance layouts), the tiers, the hooks and the Dokku hosts.
-- C calls boot.load() when it builds a state; the rest reads the loaded
-- generation from lua/generation.lua.
local desired = require "desired"
local dokku = require "mrprov.dokku"
local generation = require "generation"
local hooks = require "hooks"
local hosts = require "hosts"
local profiles = require "profiles"
local sandbox = require "mrprov.sandbox"
local sys = require "mrprov.sys"
local tiers = require "tiers"
local validate = require "validate"

local M = {}

-- The generation's files, read into memory when it was loaded: a state built
-- later sees what was checked at reload, not the files as they are now.
-- Tier files and profiles run through this one `run`: the same sandbox as
-- a hook's (bounded instructions, also inside the string library, memory
-- and time), with the bounds of a tier file (a profile has the same).
local fs = {
  list = sys.source_list,
  read = sys.source_read,
  run = function(fn, ...) return sandbox.run(fn, tiers.INSTRUCTIONS, tiers.MEMORY, tiers.SECONDS, ...) end,
}

local function path_ok(p)
  return type(p) == "string" and p:match("^/[A-Za-z0-9._/-]*$") ~= nil and not p:find("..", 1, true)
end

-- The model-provider keys handed to every instance when set (secret
-- settings, src/config.c CONFIG_VAR_INSTANCE_SECRET), in a fixed order.
M.PROVIDER_KEYS = { "OPENROUTER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "DEEPSEEK_API_KEY" }

-- Service settings from the environment; nil, "VARIABLE: message" when one is bad.
-- Every default is C's (src/config.c config_vars): sys.config() carries each
-- setting with its default, so none has a second copy here.
function M.settings(cfg)
  local s = {
    base_domain = cfg.BASE_DOMAIN,
    backend_image = cfg.MINDROOM_BACKEND_IMAGE,
    frontend_image = cfg.MINDROOM_FRONTEND_IMAGE,
    tuwunel_image = cfg.TUWUNEL_IMAGE,
    synapse_image = cfg.SYNAPSE_IMAGE,
    mindroom_image = cfg.MINDROOM_IMAGE,
    instance_data_base = (cfg.INSTANCE_DATA_BASE or ""):gsub("/+$", ""),
    letsencrypt_email = cfg.LETSENCRYPT_EMAIL,
    backup_dir = cfg.BACKUP_DIR,
    dokku_mode = cfg.dokku_mode,
    -- default: config.h CONFIG_DOKKU_COMMAND_TIMEOUT_S
    command_timeout = tonumber(cfg.DOKKU_COMMAND_TIMEOUT),
    supabase = cfg.SUPABASE_URL ~= nil,
    profile = cfg.PROFILE,
    -- per-instance OpenRouter keys (lua/model_key.lua): on when the
    -- management key is set (Lua sees only that it is)
    openrouter = { enabled = cfg.OPENROUTER_MANAGEMENT_KEY == true, api_base = cfg.OPENROUTER_API_BASE },
    -- readiness (lua/health.lua); defaults: src/config.c config_vars
    health_url_template = cfg.HEALTH_URL_TEMPLATE,
    health_timeout = tonumber(cfg.HEALTH_TIMEOUT_SECONDS),
    health_request_timeout = tonumber(cfg.HEALTH_REQUEST_TIMEOUT),
    health_recheck_interval = tonumber(cfg.HEALTH_RECHECK_INTERVAL),
    -- the subscriptions sync's guard rail (lua/subscriptions_sync.lua)
    reconcile_max_destructive = tonumber(cfg.RECONCILE_MAX_DESTRUCTIVE),
    -- the drift sweep (lua/reconcile.lua); checked by src/config.c
    reconcile_interval = tonumber(cfg.RECONCILE_INTERVAL),
    reconcile_mode = cfg.RECONCILE_MODE,
    reconcile_probes_per_second = tonumber(cfg.RECONCILE_PROBES_PER_SECOND),
    -- moves out of one Dokku host at a time (lua/move.lua); checked by src/config.c
    evacuate_parallel = tonumber(cfg.EVACUATE_PARALLEL) or 2,
    -- Instances' dashboards use Supabase auth when the provisioner knows its
    -- project and the anon key for instances (SUPABASE_ANON_KEY).
    supabase_url = cfg.SUPABASE_URL,
    supabase_auth = cfg.SUPABASE_URL ~= nil and cfg.SUPABASE_ANON_KEY == true,
    -- The model-provider keys that are set (their values never reach the
    -- settings: plan.lua reads them per build through sys.instance_secret).
    provider_keys = {},
  }
  for _, k in ipairs(M.PROVIDER_KEYS) do
    if cfg[k] == true then s.provider_keys[#s.provider_keys + 1] = k end
  end
  if s.health_url_template then
    local ok, herr = require("health").template_ok(s.health_url_template)
    if not ok then
      return nil, "HEALTH_URL_TEMPLATE: " .. herr
    end
  end
  local ok, err = validate.domain(s.base_domain)
  if not ok then
    return nil, "BASE_DOMAIN: " .. err
  end
  s.base_domain = ok
  for var, key in pairs({ MINDROOM_BACKEND_IMAGE = "backend_image", MINDROOM_FRONTEND_IMAGE = "frontend_image",
                          TUWUNEL_IMAGE = "tuwunel_image", SYNAPSE_IMAGE = "synapse_image",
                          MINDROOM_IMAGE = "mindroom_image" }) do
    local v, ierr = validate.image(s[key])
    if not v then
      return nil, var .. ": " .. ierr
    end
  end
  if not path_ok(s.instance_data_base) then
    return nil, "INSTANCE_DATA_BASE: expected an absolute path of letters, digits, '.', '_', '-' and '/'"
  end
  -- storage:ensure-directory creates directories only under Dokku's own
  -- $DOKKU_LIB_ROOT/data/storage (core:plugins/storage); a mount elsewhere
  -- would be of a directory nothing created.
  if not s.instance_data_base:find("/data/storage$") then
    return nil, "INSTANCE_DATA_BASE: must be Dokku's storage root, $DOKKU_LIB_ROOT/data/storage "
      .. "(default /var/lib/dokku/data/storage): storage:ensure-directory creates directories only there"
  end
  -- (its default is C's; unit specs may carry none)
  if s.openrouter.api_base ~= nil then
    local base, berr = validate.api_base(s.openrouter.api_base)
    if not base then
      return nil, "OPENROUTER_API_BASE: " .. berr
    end
    s.openrouter.api_base = base
  end
  if s.letsencrypt_email then
    local e, eerr = validate.email(s.letsencrypt_email)
    if not e then
      return nil, "LETSENCRYPT_EMAIL: " .. eerr
    end
  elseif s.dokku_mode ~= "dry-run" then
    return nil, "LETSENCRYPT_EMAIL: required when DOKKU_HOST is set (Let's Encrypt needs an e-mail address)"
  end
  return s
end

-- A profile is checked when it loads, not at the first instance: each one a
-- tier uses builds a sample instance of the first such tier (by name) with
-- Matrix off, Tuwunel and Synapse, and its answer must pass desired.lua's
-- checks. Returns nil, "file:line: message" for the first that does not.
local SAMPLE = { app_name = "mr-check-00000000", subscription_id = "sub_check" }

-- Stand-ins for every secret a profile may get (executor.instance_secrets'
-- names), so the sample build takes the paths a real one takes.
function M.sample_secrets(settings)
  local out = { matrix_registration_secret = "sample", api_key = "sample", credentials_encryption_key = "sample" }
  for _, k in ipairs(settings.provider_keys or {}) do out[k] = "sample" end
  if settings.supabase_auth then out.SUPABASE_ANON_KEY = "sample" end
  return out
end

function M.try_profiles(by_name, settings)
  local tried = {}
  for _, name in ipairs(tiers.names(by_name)) do
    local tier = by_name[name]
    if tier.layout and not tried[tier.profile] then
      tried[tier.profile] = true
      for _, matrix in ipairs({ false, "tuwunel", "synapse" }) do
        local _, err = desired.build({
          instance = { app_name = SAMPLE.app_name, subscription_id = SAMPLE.subscription_id, tier = name,
                       enable_matrix = matrix and true or nil, matrix_type = matrix or nil },
          tier = tier, settings = settings, admin_password = "sample", secrets = M.sample_secrets(settings),
        })
        if err then
          return nil, ("%s (profile %s, a sample instance of tier %s%s)"):format(err, tier.profile, name,
            matrix and (" with " .. matrix) or "")
        end
      end
    end
  end
  return true
end

-- checking: the generation's first load (start-up, SIGHUP, `mrprov check`)
-- also builds a sample instance of each profile a tier uses; the states
-- built after it load the same files and skip that.
function M.load(checking)
  local cfg = sys.config()
  local settings, err = M.settings(cfg)
  if not settings then
    return nil, err
  end
  local profiles_dir = cfg.PROFILES_DIR
  local layouts, perr = profiles.load_dir(profiles_dir, fs)
  if not layouts then
    return nil, perr
  end
  if not layouts[settings.profile] then
    return nil, ("PROFILE: no profile '%s' in %s (%s)"):format(settings.profile, profiles_dir,
      table.concat(profiles.names(layouts), ", "))
  end
  local by_name, terr = tiers.load_dir(cfg.TIERS_DIR, fs,
    { by_name = layouts, default = settings.profile, dir = profiles_dir })
  if not by_name then
    return nil, terr
  end
  if next(by_name) == nil then
    return nil, cfg.TIERS_DIR .. ": no tier files (*.lua) found"
  end
  if checking then
    local tried, xerr = M.try_profiles(by_name, settings)
    if not tried then
      return nil, xerr
    end
  end
  local hooks_by_id, herr = hooks.load_dir(cfg.HOOKS_DIR, fs)
  if not hooks_by_id then
    return nil, herr
  end
  -- The resource modules of LUA_DIR/resources/ must load and keep their
  -- contract (lua/engine.lua): a broken one refuses the generation.
  local eok, eerr = pcall(require, "engine")
  if not eok then
    return nil, tostring(eerr)
  end
  -- The Dokku hosts (lua/hosts.lua); none: DOKKU_HOST, the implicit host.
  local host_list, hoerr = hosts.load_dir(cfg.HOSTS_DIR or "./hosts", fs,
    { key_path = cfg.DOKKU_SSH_KEY_PATH, known_hosts = cfg.DOKKU_KNOWN_HOSTS })
  if not host_list then
    return nil, hoerr
  end
  if not host_list[1].implicit and settings.dokku_mode == "local" then
    return nil, host_list[1].file .. ":1: host files need Dokku over SSH; DOKKU_HOST is 'local'"
  end
  -- Last: everything above is checked, so a refused generation leaves the
  -- transport's hosts as they were (the old generation keeps serving).
  local sok, serr = dokku.set_hosts(hosts.connections(host_list))
  if not sok then
    local at = host_list[1].file or cfg.HOSTS_DIR
    for _, h in ipairs(host_list) do
      if h.file and tostring(serr):find("host " .. h.name .. ":", 1, true) then at = h.file end
    end
    return nil, at .. ":1: " .. tostring(serr)
  end
  generation.set({
    settings = settings,
    tiers = by_name,
    profiles = layouts,
    profiles_dir = profiles_dir,
    hooks = hooks_by_id,
    hooks_dir = cfg.HOOKS_DIR,
    generation = sys.generation(),
    tiers_dir = cfg.TIERS_DIR,
    hosts = host_list,
    hosts_by_name = hosts.by_name(host_list),
    hosts_dir = cfg.HOSTS_DIR,
  })
  return true
end

-- The loaded generation is lua/generation.lua's; these two stay for the
-- specs, which install a configuration without reading files.
M.current = generation.current
M.set = generation.set

return M
