-- What a hook's desired() may change, and how its answer is taken back
-- (lua/hooks.lua runs it): the hook works on a copy of the state in which
-- secret values are placeholders; from that copy only an app's env,
-- domains, image and (for an app the hook added) limits are taken,
-- validated, and the placeholders revealed.
local validate = require "validate"

local M = {}

-- A hook never sees a secret value: in its copy of the state each value of
-- an app's secret_keys is this placeholder. Placeholders in the env values it
-- hands back are replaced by the real values afterwards (and the keys holding
-- them become secret keys of their app); anywhere else (errors, domains,
-- images, after()'s commands) a placeholder stays the placeholder.
function M.placeholder(key)
  return "[secret:" .. key .. "]"
end

-- Replaces the secrets' values by placeholders in a copy of the state;
-- returns { [placeholder] = value }.
function M.hide_secrets(c)
  local secrets = {}
  for _, a in ipairs(c.apps or {}) do
    for k in pairs(a.secret_keys or {}) do
      if a.env and type(a.env[k]) == "string" then
        local ph = M.placeholder(k)
        -- Two apps with one secret key name and different values would make
        -- the placeholder ambiguous.
        assert(secrets[ph] == nil or secrets[ph] == a.env[k], "two secrets named " .. k)
        secrets[ph] = a.env[k]
        a.env[k] = ph
      end
    end
  end
  return secrets
end

-- v with every placeholder replaced by its value; true when there was one.
local function reveal(v, secrets)
  local hit = false
  for ph, real in pairs(secrets or {}) do
    local i = 1
    while true do
      local a, b = v:find(ph, i, true)
      if not a then
        break
      end
      v = v:sub(1, a - 1) .. real .. v:sub(b + 1)
      i = a + #real
      hit = true
    end
  end
  return v, hit
end

-- The env a hook handed back, validated, placeholders revealed; plus the
-- keys whose values now hold a secret.
local function check_env(env, where, secrets)
  if type(env) ~= "table" then
    return nil, where .. ": env must be a table"
  end
  local out, secret = {}, {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or not validate.env_key(k) then
      return nil, where .. ": invalid environment key " .. tostring(k)
    end
    local ok, why = validate.env_value(v)
    if not ok then
      return nil, where .. ": invalid value for " .. k .. ": " .. tostring(why)
    end
    local hit
    v, hit = reveal(v, secrets)
    if hit and not validate.env_value(v) then
      return nil, where .. ": invalid value for " .. k
    end
    out[k] = v
    secret[k] = hit or nil
  end
  return out, secret
end

-- A hook's domains pass the API's rules (validate.instance_domain: nothing
-- under BASE_DOMAIN but the instance's own names); uniqueness across
-- instances is claimed in the store when the job runs (instances.claim_domains).
local function check_domains(list, where, rules, app)
  if type(list) ~= "table" then
    return nil, where .. ": domains must be a list"
  end
  local out = {}
  for i, d in ipairs(list) do
    if type(d) ~= "string" or not validate.domain(d) then
      return nil, where .. ": invalid domain " .. tostring(d)
    end
    local ok, why = validate.instance_domain(d, rules.base_domain, app)
    if not ok then
      return nil, where .. ": domain " .. d:lower() .. " " .. why
    end
    out[i] = ok
  end
  return out
end

-- Takes from the hook's copy only what a hook may change, validated.
function M.merge(state, changed, secrets, rules)
  local by_name = {}
  for _, a in ipairs(state.apps) do
    by_name[a.name] = a
  end
  for _, c in ipairs(changed.apps or {}) do
    if type(c) ~= "table" or type(c.name) ~= "string" then
      return nil, "an app must be a table with a name"
    end
    local a = by_name[c.name]
    local where = "app " .. c.name
    if not a then
      local suffix = c.name:sub(#state.app + 2)
      if c.name:sub(1, #state.app + 1) ~= state.app .. "-" or not suffix:match("^[a-z0-9]+$")
          or not validate.dokku_app(c.name) then
        return nil, "an extra app must be named " .. state.app .. "-<letters and digits>, not " .. c.name
      end
      a = { name = c.name, role = "hook" }
      state.apps[#state.apps + 1] = a
      by_name[c.name] = a
    end
    if not a.absent then
      if c.env ~= nil then
        local env, secret = check_env(c.env, where, secrets)
        if not env then
          return nil, secret
        end
        if a.secret_keys then
          for k in pairs(a.secret_keys) do
            if env[k] ~= a.env[k] then
              return nil, where .. ": a hook may not change " .. k
            end
          end
        end
        a.env = env
        if next(secret) then
          a.secret_keys = a.secret_keys or {}
          for k in pairs(secret) do
            a.secret_keys[k] = true
          end
        end
      end
      if c.domains ~= nil then
        local d, err = check_domains(c.domains, where, rules, state.app)
        if not d then
          return nil, err
        end
        a.domains = d
      end
      if c.image ~= nil then
        local img = type(c.image) == "string" and validate.image(c.image)
        if not img then
          return nil, where .. ": invalid image " .. tostring(c.image)
        end
        a.image = img
      end
      if a.role == "hook" and type(c.limits) == "table" then
        local lim, lerr = validate.app_limits(c.limits.memory_mb, c.limits.cpu)
        if not lim then
          return nil, where .. ": limits: " .. lerr
        end
        a.limits = lim
      end
    end
  end
  return state
end

return M
