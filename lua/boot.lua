-- Loads one configuration generation into this Lua state: the service
-- settings (validated: every one may reach a Dokku command) and the tiers.
-- C calls boot.load() when it builds a state; the rest reads boot.current().
local hooks = require "hooks"
local sandbox = require "mrprov.sandbox"
local sys = require "mrprov.sys"
local tiers = require "tiers"
local validate = require "validate"

local M = {}

local current

-- The generation's files, read into memory when it was loaded: a state built
-- later sees what was checked at reload, not the files as they are now.
-- A tier file's top level runs in the same sandbox as a hook's (bounded
-- instructions, also inside the string library, memory and time).
local fs = {
  list = sys.source_list,
  read = sys.source_read,
  run = function(fn) return sandbox.run(fn, tiers.INSTRUCTIONS, tiers.MEMORY, tiers.SECONDS) end,
}

local function path_ok(p)
  return type(p) == "string" and p:match("^/[A-Za-z0-9._/-]*$") ~= nil and not p:find("..", 1, true)
end

-- Service settings from the environment; nil, "VARIABLE: message" when one is bad.
function M.settings(cfg)
  local s = {
    base_domain = cfg.BASE_DOMAIN,
    backend_image = cfg.MINDROOM_BACKEND_IMAGE,
    frontend_image = cfg.MINDROOM_FRONTEND_IMAGE,
    tuwunel_image = cfg.TUWUNEL_IMAGE,
    synapse_image = cfg.SYNAPSE_IMAGE,
    instance_data_base = (cfg.INSTANCE_DATA_BASE or ""):gsub("/+$", ""),
    letsencrypt_email = cfg.LETSENCRYPT_EMAIL,
    backup_dir = cfg.BACKUP_DIR,
    dokku_mode = cfg.dokku_mode,
    -- C owns the default (config.h CONFIG_DOKKU_COMMAND_TIMEOUT_S): sys.config() carries it.
    command_timeout = tonumber(cfg.DOKKU_COMMAND_TIMEOUT),
    supabase = cfg.SUPABASE_URL ~= nil,
  }
  local ok, err = validate.domain(s.base_domain)
  if not ok then
    return nil, "BASE_DOMAIN: " .. err
  end
  s.base_domain = ok
  for var, key in pairs({ MINDROOM_BACKEND_IMAGE = "backend_image", MINDROOM_FRONTEND_IMAGE = "frontend_image",
                          TUWUNEL_IMAGE = "tuwunel_image", SYNAPSE_IMAGE = "synapse_image" }) do
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

function M.load()
  local cfg = sys.config()
  local settings, err = M.settings(cfg)
  if not settings then
    return nil, err
  end
  local by_name, terr = tiers.load_dir(cfg.TIERS_DIR, fs)
  if not by_name then
    return nil, terr
  end
  if next(by_name) == nil then
    return nil, cfg.TIERS_DIR .. ": no tier files (*.lua) found"
  end
  local hooks_by_id, herr = hooks.load_dir(cfg.HOOKS_DIR, fs)
  if not hooks_by_id then
    return nil, herr
  end
  current = {
    settings = settings,
    tiers = by_name,
    hooks = hooks_by_id,
    hooks_dir = cfg.HOOKS_DIR,
    generation = sys.generation(),
    tiers_dir = cfg.TIERS_DIR,
  }
  return true
end

function M.current()
  return current
end

-- For tests: install a configuration without reading files.
function M.set(c)
  current = c
end

return M
