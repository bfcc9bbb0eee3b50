-- Request validators: a decoded JSON body of POST /provision, /update or
-- /deprovision (or the fields a webhook maps) into a checked table, with
-- the value validators of lua/validate.lua; refusals are error objects
-- {code, field, message}, the first problem in field order.
local cjson = require "cjson"
local render = require "render"
local schema = require "mindroom_schema"
local validate = require "validate"

local M = {}

-- A key from a request is echoed into an error's field name only when it is
-- plainly printable; anything else is reported against the parent field.
local function printable_key(k)
  if type(k) == "string" and #k <= 64 and k:match("^[A-Za-z0-9_.-]+$") then return k end
  return nil
end

local sorted_keys = schema.sorted_keys

-- cjson decodes every number as a float; an integral float counts as an integer.
local function to_int(v)
  if type(v) ~= "number" then return nil end
  return math.tointeger(v)
end

-- Request limits: JSON name → { normalized name, kind, min, max } (both
-- inclusive). The minimums of memory_mb (128 MB) and cpu_limit (0.1) are the
-- original service's (its ResourceLimits model: `ge=128`, `ge=0.1`), so what
-- its clients were refused stays refused (a tier or a hook may still set
-- less: lua/validate.lua has those caps).
local LIMIT_FIELDS = {
  memory_mb = { "memory_mb", "int", 128, 262144 },
  cpu_limit = { "cpu", "number", 0.1, 64 },
  storage_gb = { "storage_gb", "int", 1, 10000 },
  agents = { "agents", "int", 1, 1000 },
  messages_per_day = { "messages_per_day", "int", 0, 10000000, nullable = true },
}

-- Returns the normalized table plus, on failure, the offending key. A key the
-- request leaves out is absent; messages_per_day = cjson.null means "unlimited"
-- explicitly (tiers.effective_limits turns it into nil).
function M.limits(t)
  if type(t) ~= "table" or t == cjson.null or rawget(t, 1) ~= nil then
    return nil, "must be an object"
  end
  local out = {}
  for _, k in ipairs(sorted_keys(t)) do
    local f = LIMIT_FIELDS[k]
    if not f then
      local pk = printable_key(k)
      if pk then return nil, "is not a known limit", pk end
      return nil, "has an unknown key"
    end
    local v = t[k]
    if v == cjson.null and f.nullable then
      out[f[1]] = cjson.null
    elseif f[2] == "int" then
      local i = to_int(v)
      if not i or i < f[3] or i > f[4] then
        return nil, ("must be an integer from %d to %d"):format(f[3], f[4]), k
      end
      out[f[1]] = i
    else
      if type(v) ~= "number" or v ~= v or v < f[3] or v > f[4] then
        return nil, ("must be a number from %g to %g"):format(f[3], f[4]), k
      end
      if f[1] == "cpu" then
        local c, msg = validate.cpu(v)
        if not c then return nil, msg, k end
      end
      out[f[1]] = v + 0.0
    end
  end
  return out
end
local MAX_CONFIG_UPDATES = validate.MAX_CONFIG_UPDATES

local function is_string(s)
  return type(s) == "string"
end

local function absent(v)
  return v == nil or v == cjson.null
end

local function is_object(t)
  return type(t) == "table" and t ~= cjson.null and rawget(t, 1) == nil
end

local function invalid(field, message)
  return {
    code = "invalid_value",
    field = field,
    message = field and (field .. " " .. message) or message,
  }
end

-- take(t, name, validator, required) → true, value (nil when absent) or
-- false, error object. A validator may name a sub-field as third result.
local function take(t, name, validator, required)
  local raw = t[name]
  if absent(raw) then
    if required then return false, invalid(name, "is required") end
    return true, nil
  end
  local v, msg, sub = validator(raw)
  if v == nil then
    return false, invalid(sub and (name .. "." .. sub) or name, msg)
  end
  return true, v
end

-- Runs a list of { name, validator, required } over t into a result table,
-- in list order so the first error is always the same one.
local function take_all(t, fields)
  if not is_object(t) then
    return nil, { code = "invalid_body", message = "request body must be a JSON object" }
  end
  local r = {}
  for _, f in ipairs(fields) do
    local ok, v = take(t, f[1], f[2], f[3])
    if not ok then return nil, v end
    r[f[1]] = v
  end
  return r
end

local function boolean(v)
  if type(v) ~= "boolean" then return nil, "must be true or false" end
  return v
end

local function known_tier(tiers_by_name)
  return function(v)
    if not is_string(v) then return nil, "must be a string" end
    if tiers_by_name[v] then return v end
    -- Only echo the name back when it is harmless to print.
    local shown = validate.tier_name(v) and (" '" .. v .. "'") or ""
    return nil, ("names an unknown tier%s; known tiers: %s"):format(
      shown, table.concat(sorted_keys(tiers_by_name), ", "))
  end
end

local function request_limits(v)
  if not is_object(v) then return nil, "must be an object" end
  return M.limits(v)
end

local function config_updates(cu)
  if not is_object(cu) then return nil, "must be an object" end
  local keys = sorted_keys(cu)
  if #keys > MAX_CONFIG_UPDATES then
    return nil, "must have at most " .. MAX_CONFIG_UPDATES .. " entries"
  end
  local out = {}
  for _, k in ipairs(keys) do
    local _, kerr = validate.env_key(k)
    if kerr then return nil, "key " .. kerr, printable_key(k) end
    if validate.reserved_env_key(k) then
      return nil, "is managed by the provisioner and cannot be set", k
    end
    local v, verr = validate.env_value(cu[k])
    if not v then return nil, verr, k end
    out[k] = v
  end
  return out
end

-- An environment of KEY = value as config_updates are checked (a rollout's
-- env, lua/rollout.lua): the object, or nil, why and the key at fault.
M.config_updates = config_updates

-- config_overrides: a part of MindRoom's config.yaml (a JSON object of its
-- root keys) deep-merged over the tier's (lua/render.lua). Checked here for
-- the hostile-input bounds (mindroom_schema.value: depth, size, key
-- characters, NUL-free UTF-8, no null) and, in M.config_overrides_for,
-- merged with the tier's config against MindRoom's rules.
local function config_overrides(v)
  if not is_object(v) then return nil, "must be an object" end
  local out, path, message = schema.value(v, "")
  if not out then
    if path == "" then return nil, message end
    return nil, message, path
  end
  return out
end

-- config_overrides_for(tier, overrides) → nil when the tier's config with
-- the overrides merged passes MindRoom's rules, else an error object naming
-- the offending key (config_overrides.agents.x.tools[0]).
function M.config_overrides_for(tier, overrides)
  if overrides == nil or next(overrides) == nil then return nil end
  local doc, path, message = render.config_doc(tier, overrides)
  if doc then return nil end
  return invalid(schema.join("config_overrides", path), message)
end

local function check_flags(tier, r)
  local flags = tier.flags or {}
  if r.custom_domain and not flags.custom_domains then
    return nil, invalid("custom_domain", "is not available on the " .. tier.name .. " tier")
  end
  if r.enable_matrix and not flags.matrix then
    return nil, invalid("enable_matrix", "is not available on the " .. tier.name .. " tier")
  end
  return r
end

-- opts.account_required: account_id must be given (the API's provision, as
-- the original service's `account_id: str = Field(...)`); a webhook's row or
-- `mrprov plan` may leave it out.
function M.provision_request(t, tiers_by_name, opts)
  local r, err = take_all(t, {
    { "subscription_id", validate.subscription_id, true },
    { "account_id", validate.account_id, opts and opts.account_required or false },
    { "tier", known_tier(tiers_by_name), true },
    { "limits", request_limits },
    { "enable_matrix", boolean },
    { "matrix_type", validate.matrix_type },
    { "custom_domain", validate.domain },
    { "config_overrides", config_overrides },
  })
  if not r then return nil, err end
  if r.enable_matrix == nil then r.enable_matrix = false end
  r.matrix_type = r.matrix_type or "tuwunel"
  local oerr = M.config_overrides_for(tiers_by_name[r.tier], r.config_overrides)
  if oerr then return nil, oerr end
  return check_flags(tiers_by_name[r.tier], r)
end

-- Absent optional fields stay nil, meaning "keep what the instance has".
-- current_tier (optional): the instance's tier name, used to check flags when
-- the update keeps the tier; without it only a requested tier is checked.
function M.update_request(t, tiers_by_name, current_tier)
  local r, err = take_all(t, {
    { "subscription_id", validate.subscription_id, true },
    { "app_name", validate.app_name, true },
    { "tier", known_tier(tiers_by_name) },
    { "limits", request_limits },
    { "config_updates", config_updates },
    { "enable_matrix", boolean },
    { "matrix_type", validate.matrix_type },
    { "custom_domain", validate.domain },
    { "config_overrides", config_overrides },
  })
  if not r then return nil, err end
  local tier = tiers_by_name[r.tier or current_tier or ""]
  if tier then
    local oerr = M.config_overrides_for(tier, r.config_overrides)
    if oerr then return nil, oerr end
    return check_flags(tier, r)
  end
  return r
end

function M.deprovision_request(t)
  local r, err = take_all(t, {
    { "subscription_id", validate.subscription_id, true },
    { "app_name", validate.app_name, true },
    { "backup_data", boolean },
  })
  if not r then return nil, err end
  if r.backup_data == nil then r.backup_data = true end
  return r
end

return M
