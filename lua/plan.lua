-- An instance's desired state under the current configuration (the tier,
-- the desired-state builder, then the customer's hook), and the plan of a
-- provision request without side effects: what `mrprov plan` prints and
-- POST /api/v1/plan answers. The worker builds its jobs' state here too.
local crypto = require "mrprov.crypto"
local desired = require "desired"
local dokku = require "mrprov.dokku"
local engine = require "engine"
local executor = require "executor"
local hooks = require "hooks"
local instances = require "instances"
local json = require "json"
local model_key = require "model_key"
local store = require "mrprov.store"
local validate = require "validate"

local M = {}

-- The instance's admin password (derived; masked in every job output).
M.admin_password = executor.admin_password

-- The instance API key (MINDROOM_API_KEY) when its desired state `state`
-- uses it (the mindroom profile without Supabase auth), else nil.
function M.api_key(state, inst, cfg)
  if state and state.secrets_used and state.secrets_used.api_key then
    return executor.instance_secrets(inst.app_name, cfg.settings).api_key
  end
  return nil
end

-- What a hook is told about its instance (no secret).
function M.hook_ctx(inst, tier)
  return {
    subscription_id = inst.subscription_id, account_id = inst.account_id, app_name = inst.app_name,
    tier = tier.name, operation = inst.operation,
  }
end

-- The desired state of an instance under the current configuration.
-- profile (optional): a loaded profile to build with instead of the tier's
-- (`mrprov render --profile`).
function M.desired_state(inst, cfg, profile)
  local tier = cfg.tiers[inst.tier]
  if not tier then
    return nil, "tier " .. inst.tier .. " is not loaded"
  end
  local spec = inst.spec or {}
  -- An instance keeps the layout it was provisioned with (spec.profile,
  -- recorded then; `split` for instances older than the record, store v5):
  -- a later default PROFILE or a tier's new `profile` lays out new
  -- instances only. Moving an instance to another layout moves its data,
  -- which is not a convergence.
  if not profile and spec.profile and spec.profile ~= tier.profile then
    profile = (cfg.profiles or {})[spec.profile]
    if not profile then
      return nil, ("profile %s of this instance is not loaded (PROFILES_DIR)"):format(spec.profile)
    end
  end
  -- The instance's own MindRoom image (set by a rollout, lua/rollout.lua)
  -- replaces MINDROOM_IMAGE for it alone, and stays until a rollback.
  local settings = cfg.settings
  if type(spec.image) == "string" then
    settings = setmetatable({ mindroom_image = spec.image }, { __index = cfg.settings })
  end
  -- The environment a rollout set on the instance (spec.env) goes where the
  -- request's config_updates go, over them (the profile's own variables
  -- still win), and stays until a rollback.
  local config_updates = spec.config_updates
  if type(spec.env) == "table" and next(spec.env) ~= nil then
    config_updates = {}
    for k, v in pairs(spec.config_updates or {}) do config_updates[k] = v end
    for k, v in pairs(spec.env) do config_updates[k] = v end
  end
  local state, err = desired.build({
    instance = {
      app_name = inst.app_name, subscription_id = inst.subscription_id, account_id = inst.account_id,
      tier = inst.tier, enable_matrix = spec.enable_matrix, matrix_type = spec.matrix_type,
      custom_domain = spec.custom_domain, limits = spec.limits, config_updates = config_updates,
      config_overrides = spec.config_overrides,
    },
    tier = tier,
    profile = profile,
    settings = settings,
    admin_password = M.admin_password(inst.app_name),
    secrets = executor.instance_secrets(inst.app_name, cfg.settings),
  })
  if not state then
    return nil, err
  end
  local hook = hooks.find(cfg.hooks, inst)
  if hook then
    state, err = hooks.apply_desired(hook, state, M.hook_ctx(inst, tier), { base_domain = cfg.settings.base_domain })
    if not state then
      return nil, err
    end
  end
  -- Every key a rollout ever set on the instance (spec.env_owned) is
  -- mrprov's on its apps: one the state no longer holds (a rollback to
  -- "not set") is unset (resources/config.lua), not left behind. Never a
  -- key the state holds: the customer's own value of it comes back.
  if type(spec.env_owned) == "table" and next(spec.env_owned) ~= nil then
    for _, a in ipairs(state.apps or {}) do
      if not a.absent and a.env and a.role ~= "hook" then
        local owned = {}
        for k in pairs(spec.env_owned) do owned[k] = true end
        a.env_owned_keys = owned
      end
    end
  end
  -- A stopped or suspended instance (lua/lifecycle.lua) keeps its apps
  -- stopped: resources/processes.lua plans ps:stop, and no deploy starts
  -- them (resources/image.lua); set after the hook, which cannot start it.
  state.stopped = spec.stopped == true or nil
  -- An instance holding its own OpenRouter key keeps it (a job that makes
  -- a new one sets it on top, lua/worker.lua): what a plan shows is what a
  -- job does to the variable.
  if model_key.stored(inst).current then
    local ok, kerr = model_key.inject(state, { keep = true })
    if not ok then
      return nil, kerr
    end
  end
  return state, tier, hook
end

-- The instance spec of a validated provision request.
function M.spec_of(r, profile)
  return {
    profile = profile,
    enable_matrix = r.enable_matrix or false,
    matrix_type = r.matrix_type or "tuwunel",
    custom_domain = r.custom_domain,
    limits = r.limits,
    config_updates = r.config_updates or {},
    config_overrides = r.config_overrides,
  }
end

-- Whether converging inst (its updated spec, not yet run) would restart or
-- redeploy an app, or leave a change for the app's next start: the plan
-- against the model the instance's jobs applied (no Dokku probe; drift on
-- the server is found by the job), any command marked `restart` or
-- `deploys` by its resource module. False when no plan can be made: the
-- job then fails before it changes anything.
function M.restarts(inst, cfg)
  local ok, steps = pcall(function()
    local state = M.desired_state(inst, cfg)
    local applied = inst.applied or {}
    return state and engine.plan(engine.resources(state), function(r) return applied[r.key] end)
  end)
  for _, s in ipairs(ok and steps or {}) do
    for _, c in ipairs(s.commands) do
      if c.restart or c.deploys then
        return true
      end
    end
  end
  return false
end

-- The plan of a provision request, without side effects.
function M.plan_for(r, cfg)
  -- `mrprov plan` runs without a store when none exists yet.
  local inst = store.is_open() and instances.get(r.subscription_id) or nil
  local existing = inst and inst.status ~= "deprovisioned"
  local shown = {
    subscription_id = r.subscription_id, account_id = r.account_id, tier = r.tier,
    app_name = existing and inst.app_name or validate.new_app_name(r.subscription_id, crypto.random_token),
    -- an existing instance keeps its layout (desired_state)
    spec = M.spec_of(r, existing and inst.spec and inst.spec.profile or nil),
    applied = existing and inst.applied or nil,
  }
  local state, terr, hook = M.desired_state(shown, cfg)
  if not state then
    return nil, terr
  end
  local resources = engine.resources(state)
  -- probed on the instance's host; a new one's app name is new on any host
  local host = existing and instances.host_of(inst) or (cfg.hosts and cfg.hosts[1].name) or nil
  local steps, err = engine.plan(resources, executor.current_of(existing and inst.applied or {}, resources, host))
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

return M
