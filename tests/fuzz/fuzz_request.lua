-- Driver of fuzz_request: one request body through what the API does with
-- it before any store or Dokku work — json.decode (depth limit, UTF-8,
-- duplicate keys), the provision/update/deprovision validators, the custom
-- domain rule, the Supabase webhook mapping, and the error answer's
-- encoding. Refusals are values; anything raised here is a bug.
local api = require "api"
local boot = require "boot"
local json = require "json"
local validate = require "validate"
local validate_request = require "validate_request"
local webhooks = require "webhooks"

local cfg = boot.current()
local tiers = cfg.tiers

-- What may reach a Dokku argv: the transport's token characters, never a flag.
local function token(s)
  return type(s) == "string" and s:match("^[A-Za-z0-9._:/=+@,-]+$") ~= nil and s:sub(1, 1) ~= "-"
end

local function check(cond, what)
  if not cond then
    error("invariant: " .. what, 2)
  end
end

-- A validator's answer: the request, or nil and an error object that encodes.
local function answer(r, err)
  if r == nil then
    check(type(err) == "table" and type(err.code) == "string" and type(err.message) == "string",
      "a refusal is an error object")
    check(err.field == nil or type(err.field) == "string", "a refusal's field is a string")
    json.encode({ error = err })
    return nil
  end
  check(type(r) == "table", "an accepted request is a table")
  check(validate.subscription_id(r.subscription_id) == r.subscription_id, "subscription_id is an id")
  check(token(r.subscription_id), "subscription_id is a token")
  return r
end

local function check_common(r)
  check(r.account_id == nil or (token(r.account_id) and validate.account_id(r.account_id)), "account_id")
  check(r.tier == nil or tiers[r.tier] ~= nil, "tier is known")
  check(r.matrix_type == nil or validate.MATRIX_TYPES[r.matrix_type], "matrix_type")
  check(r.enable_matrix == nil or type(r.enable_matrix) == "boolean", "enable_matrix")
  if r.custom_domain ~= nil then
    check(token(r.custom_domain) and validate.domain(r.custom_domain) == r.custom_domain, "custom_domain")
    local derr = api.custom_domain_error(r.custom_domain, cfg)
    check(derr == nil or type(derr) == "string", "custom_domain_error")
  end
  if r.limits ~= nil then
    for k, v in pairs(r.limits) do
      check(type(k) == "string" and (type(v) == "number" or v == json.null), "limits")
    end
  end
end

-- Members written in the text: one ':' outside strings each.
local function members_in_text(text)
  local n, i, len = 0, 1, #text
  while i <= len do
    local c = text:byte(i)
    if c == 34 then -- '"': skip the string, escapes included
      i = i + 1
      while true do
        local b = text:byte(i)
        if b == 92 then
          i = i + 2
        elseif b == 34 or b == nil then
          break
        else
          i = i + 1
        end
      end
    elseif c == 58 then
      n = n + 1
    end
    i = i + 1
  end
  return n
end

-- Members kept in the decoded value (object keys are strings, array keys are not).
local function members_in_value(v)
  if type(v) ~= "table" then
    return 0
  end
  local n = 0
  for k, x in pairs(v) do
    if type(k) == "string" then
      n = n + 1
    end
    n = n + members_in_value(x)
  end
  return n
end

local function run(text)
  local wait = api.prefer_wait(text)
  check(wait == nil or (wait >= 0 and wait <= api.MAX_WAIT), "Prefer: wait is bounded")
  local sub = validate.subscription_id(text)
  check(sub == nil or token(sub), "a subscription id in a path is a token")

  local v, err = json.decode(text)
  if v == nil then
    check(type(err) == "string", "json.decode says why")
    return
  end
  -- Accepted JSON has no duplicate key: decoding kept every member written.
  check(members_in_value(v) == members_in_text(text), "a member was dropped: a duplicate key got through")
  if type(v) ~= "table" then
    return
  end

  local r = answer(validate_request.provision_request(v, tiers))
  if r then
    check_common(r)
    check(tiers[r.tier] ~= nil and type(r.enable_matrix) == "boolean" and r.matrix_type ~= nil, "provision")
  end
  for _, current in ipairs({ "starter", "professional", false }) do
    r = answer(validate_request.update_request(v, tiers, current or nil))
    if r then
      check_common(r)
      check(validate.app_name(r.app_name) == r.app_name and token(r.app_name), "app_name")
      for k, val in pairs(r.config_updates or {}) do
        check(validate.env_key(k) == k and not validate.reserved_env_key(k), "config_updates key")
        check(type(val) == "string" and validate.utf8_valid(val) and not val:find("\0", 1, true),
          "config_updates value")
      end
    end
  end
  r = answer(validate_request.deprovision_request(v))
  if r then
    check(validate.app_name(r.app_name) == r.app_name and type(r.backup_data) == "boolean", "deprovision")
  end

  -- The same body as a Supabase Database Webhook payload.
  local d = webhooks.decide(v)
  check(type(d) == "table" and (d.op == "provision" or d.op == "update" or d.op == "deprovision"
    or d.op == "ignore"), "webhook op")
  check(d.op == "ignore" or type(d.subscription_id) == "string", "a webhook op names a subscription")
  if d.op == "provision" or d.op == "update" then
    answer(validate_request.provision_request({ subscription_id = d.subscription_id, account_id = d.account_id,
                                        tier = d.tier }, tiers))
  end
end

return run
