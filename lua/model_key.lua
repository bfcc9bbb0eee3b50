-- Per-instance OpenRouter keys (issue 14 item 7): when OPENROUTER_MANAGEMENT_KEY
-- is set, an instance whose tier has a model_budget_usd > 0 gets an
-- OpenRouter key of its own, limited to that many USD a month, through
-- OpenRouter's key-management API, as MindRoom's own provisioner does
-- (mindroom-ai/mindroom saas-platform/platform-backend/src/backend/openrouter.py:69-150,
-- services/provisioner_service.py _provision_openrouter_key):
--   POST   {base}/keys         {name, limit, limit_reset = "monthly", include_byok_in_limit = true}
--          → 201 {data = {hash, name, label, limit, ...}, key = "sk-or-v1-..."}
--          https://openrouter.ai/docs/api/api-reference/api-keys/create-keys
--   GET    {base}/keys?offset=N&include_disabled=true → 200 {data = [{hash, name, label, limit, ...}]}
--          https://openrouter.ai/docs/api/api-reference/api-keys/list
--   PATCH  {base}/keys/{hash}  {limit} → 200 {data = {...}}
--          https://openrouter.ai/docs/api/api-reference/api-keys/update-keys
--   DELETE {base}/keys/{hash}  → 200 {deleted = true}
--          https://openrouter.ai/docs/api/api-reference/api-keys/delete-keys
-- each with `Authorization: Bearer <management key>`
-- (https://openrouter.ai/docs/guides/overview/auth/management-api-keys).
--
-- The key's value is shown once (the create answer). It reaches the
-- instance only as the app's secret environment value OPENROUTER_API_KEY
-- (masked in every log, step and error like every secret of a job) and is
-- never stored: the store keeps the key's hash, label, limit and name
-- (instances.applied[M.SLOT]), Supabase nothing of it. A later converge
-- therefore cannot set the value again: the config resource leaves the
-- variable as it is (env_kept) unless this job has just created a key.
--
-- What is stored: { current = key the app holds, pending = key created by a
-- job that has not finished (its value lived only in that job), retired =
-- keys to revoke }, each key { hash, label, limit, name }. The steps:
--   before the converge (prepare): revoke `pending` (a crash or failure
--   lost its value: it can never be handed out again) and `retired`; then
--   keep `current` when it is the key of this tier (its limit PATCHed when
--   the tier's budget changed), or create one: first revoking any key OpenRouter
--   lists under the name it will have that is not `current` (a run cut off
--   between OpenRouter's answer and the store's write left it: its value is
--   lost), then POST, then store it as `pending` before any Dokku command.
--   after the converge (finish): `pending` becomes `current`, the previous
--   `current` (another tier's key: the rotation) is retired and revoked.
--   deprovision (revoke): every stored key and every key listed under this
--   instance's names is revoked before the apps go.
-- A failed OpenRouter request fails the job with the status and OpenRouter's
-- message (never a key or the Authorization header).
local json = require "json"
local redact_text = require "redact"

local M = {}

M.SLOT = "openrouter_key" -- in instances.applied (not a resource key: none has a ':'-less name)
M.ENV = "OPENROUTER_API_KEY"
M.TIMEOUT_MS = 20000
M.MAX_PAGES = 50 -- of the key list (100 keys a page): a bound, not a limit anyone should reach
M.SETTING = "OPENROUTER_MANAGEMENT_KEY"

-- Where the binding and the credential come from; unit specs replace them.
M.deps = {
  http = function() return require "mrprov.http" end,
  key = function() return require("mrprov.sys").client_secret(M.SETTING) end,
}

-- The key's name, as MindRoom's provisioner names it (provisioner_service.py
-- _openrouter_key_name): tier, account and instance, so OpenRouter's own
-- dashboard tells whose key it is.
function M.name(tier_name, account_id, app_name)
  return ("MindRoom %s account %s instance %s"):format(tier_name, tostring(account_id or "-"), app_name)
end

local function name_of_instance(name, account_id, app_name)
  local tail = (" account %s instance %s"):format(tostring(account_id or "-"), app_name)
  return type(name) == "string" and name:sub(1, 9) == "MindRoom " and #name > #tail and name:sub(-#tail) == tail
end

-- Whether the feature is on (the setting and not dry-run).
function M.enabled(settings)
  return settings and settings.openrouter and settings.openrouter.enabled and settings.dokku_mode ~= "dry-run"
    and true or false
end

-- The monthly budget of the tier's keys, or nil for none.
function M.budget(tier)
  local b = tier and tier.model_budget_usd
  if type(b) == "number" and b > 0 then
    return b
  end
  return nil
end

local function copy(k)
  return k and { hash = k.hash, label = k.label, limit = k.limit, name = k.name } or nil
end

-- The stored record (a copy; nil parts absent).
function M.stored(inst)
  local m = inst.applied and inst.applied[M.SLOT] or {}
  local retired = {}
  for i, k in ipairs(m.retired or {}) do
    retired[i] = copy(k)
  end
  return { current = copy(m.current), pending = copy(m.pending), retired = retired }
end

-- A hash OpenRouter gave is put in a URL path: letters, digits, '-' and '_'
-- only (OpenRouter's are hex), so no answer can steer the request elsewhere.
local function hash_ok(h)
  return type(h) == "string" and #h > 0 and #h <= 256 and h:match("^[%w_-]+$") ~= nil
end

-- A client of the key API. Raises { message = ... } on failure.
function M.client(settings, deps)
  deps = deps or M.deps
  local key = deps.key()
  if type(key) ~= "string" or key == "" then
    error({ message = "OpenRouter: " .. M.SETTING .. " is not set" }, 0)
  end
  if not key:match("^[\33-\126]+$") then
    error({ message = "OpenRouter: " .. M.SETTING .. " must be printable ASCII without blanks" }, 0)
  end
  local http = deps.http()
  local base = settings.openrouter.api_base
  local mask = redact_text.redactor({ key })
  local c = {}

  local function fail(what, msg)
    error({ message = mask(("OpenRouter %s: %s"):format(what, msg)) }, 0)
  end

  -- status, decoded body; raises unless the status is one of ok.
  local function call(method, path, body, ok)
    local what = method .. " " .. path:gsub("%?.*$", "")
    local status, text = http.request({
      method = method, url = base .. path, timeout_ms = M.TIMEOUT_MS, body = body and json.encode(body) or nil,
      headers = { Authorization = "Bearer " .. key, ["Content-Type"] = "application/json",
                  Accept = "application/json" },
    })
    if not status then
      fail(what, "no answer: " .. tostring(text))
    end
    local doc = type(text) == "string" and json.decode(text) or nil
    if not ok[status] then
      -- OpenRouter's errors: {"error": {"code": 401, "message": "..."}}
      local msg = type(doc) == "table" and type(doc.error) == "table" and doc.error.message
      msg = type(msg) == "string" and msg:sub(1, 300) or "(no message)"
      fail(what, ("HTTP %s: %s"):format(tostring(status), msg))
    end
    return status, doc
  end

  -- Every key OpenRouter lists (disabled ones too), up to M.MAX_PAGES pages.
  function c.list()
    local out, offset = {}, 0
    for _ = 1, M.MAX_PAGES do
      local _, doc = call("GET", "/keys?include_disabled=true&offset=" .. offset, nil, { [200] = true })
      local data = type(doc) == "table" and doc.data
      if type(data) ~= "table" then
        fail("GET /keys", "answer without a data list")
      end
      for _, k in ipairs(data) do
        if type(k) == "table" and hash_ok(k.hash) then
          out[#out + 1] = { hash = k.hash, name = k.name, label = k.label, limit = k.limit }
        end
      end
      if #data == 0 then
        break
      end
      offset = offset + #data
    end
    return out
  end

  -- The new key: value, { hash, label, limit, name }.
  function c.create(name, limit)
    local _, doc = call("POST", "/keys", { name = name, limit = limit, limit_reset = "monthly",
                                           include_byok_in_limit = true }, { [200] = true, [201] = true })
    local data = type(doc) == "table" and doc.data
    if type(data) ~= "table" or type(doc.key) ~= "string" or doc.key == "" or not hash_ok(data.hash) then
      fail("POST /keys", "answer without data.hash and key")
    end
    local label = type(data.label) == "string" and data.label:sub(1, 200) or ""
    return doc.key, { hash = data.hash, label = label, limit = limit, name = name }
  end

  function c.set_limit(hash, limit)
    call("PATCH", "/keys/" .. hash, { limit = limit }, { [200] = true })
  end

  -- 404: already gone, which is what was asked.
  function c.delete(hash)
    call("DELETE", "/keys/" .. hash, nil, { [200] = true, [204] = true, [404] = true })
  end

  return c
end

-- Revokes the retired keys, saving after each.
local function revoke_retired(c, meta, save)
  while #meta.retired > 0 do
    c.delete(meta.retired[1].hash)
    table.remove(meta.retired, 1)
    save(meta)
  end
end

-- Before a provision's or update's converge. save(meta) stores the record
-- durably (a transaction of its own). Returns what the job does with the
-- app's OPENROUTER_API_KEY: { value = new key (set it) | nil, keep = true
-- (mrprov's key: the profile's value does not replace it, and it is never
-- unset) | nil (the profile decides), finish = true (call M.finish after) }.
function M.prepare(inst, tier, settings, save, deps)
  local meta = M.stored(inst)
  if not M.enabled(settings) then
    -- Nothing can be created or revoked: a key an instance already has stays in it.
    return { keep = meta.current ~= nil or nil }
  end
  local c = M.client(settings, deps)
  -- A pending key may have reached the app before its job failed: once it
  -- is revoked the app's variable cannot be trusted to hold `current`.
  local tainted = meta.pending ~= nil
  if meta.pending then
    c.delete(meta.pending.hash)
    meta.pending = nil
    save(meta)
  end
  revoke_retired(c, meta, save)
  local budget = M.budget(tier)
  if not budget then
    -- budget 0: the key goes after the converge (the profile decides the variable)
    return { finish = meta.current ~= nil or nil }
  end
  local name = M.name(tier.name, inst.account_id, inst.app_name)
  if meta.current and meta.current.name == name and not tainted then
    if meta.current.limit ~= budget then
      -- The same tier with another budget: the key is fine, only its limit changes.
      c.set_limit(meta.current.hash, budget)
      meta.current.limit = budget
      save(meta)
    end
    return { keep = true }
  end
  for _, k in ipairs(c.list()) do
    if k.name == name and not (meta.current and k.hash == meta.current.hash) then
      c.delete(k.hash)
    end
  end
  local value, key = c.create(name, budget)
  meta.pending = key
  save(meta)
  return { value = value, keep = true, finish = true }
end

-- The app that gets the key: the instance's main app when it has an
-- environment (the mindroom profile), else its backend (split).
function M.target(state)
  for _, role in ipairs({ "main", "backend" }) do
    for _, a in ipairs(state.apps or {}) do
      if a.role == role and not a.absent and a.env then
        return a
      end
    end
  end
  return nil
end

-- Puts the job's decision into the desired state. True, or nil and why.
function M.inject(state, plan)
  if not plan.keep then
    return true
  end
  local app = M.target(state)
  if not app then
    return nil, "OpenRouter: the instance's layout has no main or backend app with an environment for " .. M.ENV
  end
  -- mrprov's per-instance key wins over the provisioner-wide key a profile sets
  app.env[M.ENV] = plan.value
  app.secret_keys = app.secret_keys or {}
  app.secret_keys[M.ENV] = plan.value and true or nil
  app.env_kept = app.env_kept or {}
  app.env_kept[M.ENV] = true
  return true
end

-- After the converge succeeded: the new key is in the app, so it becomes
-- `current`; the one it replaces (and, with no budget, the only one) is revoked.
function M.finish(inst, settings, plan, save, deps)
  if not plan.finish then
    return
  end
  local meta = M.stored(inst)
  if meta.current then
    meta.retired[#meta.retired + 1] = meta.current
    meta.current = nil
  end
  if meta.pending then
    meta.current, meta.pending = meta.pending, nil
  end
  save(meta)
  revoke_retired(M.client(settings, deps), meta, save)
end

-- A failed provision: its apps are gone (undone), so is the key it created.
-- Best effort: a failure here is reported, and the next job or the
-- deprovision revokes it (it stays stored as `pending`).
function M.abandon(inst, settings, save, deps)
  local meta = M.stored(inst)
  if not meta.pending or not M.enabled(settings) then
    return true
  end
  local ok, err = pcall(function()
    M.client(settings, deps).delete(meta.pending.hash)
    meta.pending = nil
    save(meta)
  end)
  return ok, not ok and (type(err) == "table" and err.message or tostring(err)) or nil
end

-- Deprovision: revokes every key stored for the instance and every key
-- OpenRouter lists under its names (any tier). Returns the record to keep
-- ({} when all are gone) and, when the feature is off, a warning naming
-- the keys left (hash and label, no value).
function M.revoke(inst, settings, save, deps)
  local meta = M.stored(inst)
  local keys = {}
  for _, k in ipairs({ meta.current, meta.pending }) do
    keys[#keys + 1] = k
  end
  for _, k in ipairs(meta.retired) do
    keys[#keys + 1] = k
  end
  if not M.enabled(settings) then
    if #keys == 0 then
      return nil
    end
    local names = {}
    for _, k in ipairs(keys) do
      names[#names + 1] = k.hash .. " (" .. tostring(k.label) .. ")"
    end
    return "OpenRouter keys not revoked (" .. M.SETTING .. " is not set): " .. table.concat(names, ", ")
  end
  local c = M.client(settings, deps)
  local seen = {}
  for _, k in ipairs(keys) do
    seen[k.hash] = true
  end
  for _, k in ipairs(c.list()) do
    if not seen[k.hash] and name_of_instance(k.name, inst.account_id, inst.app_name) then
      seen[k.hash] = true
      keys[#keys + 1] = k
    end
  end
  for _, k in ipairs(keys) do
    c.delete(k.hash)
  end
  save({ retired = {} })
  return nil
end

return M
