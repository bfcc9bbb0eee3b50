-- lua/model_key.lua against an in-memory OpenRouter key API (a fake
-- mrprov.http): the create/keep/PATCH/rotate/revoke decisions, the crash
-- and failure windows, and that no key value or management key reaches an
-- error or the stored record.
local cjson = require "cjson"
local model_key = require "model_key"

local MGMT = "sk-or-v1-management-7d1e9c3b5a"
local BASE = "https://openrouter.test/api/v1"

-- An OpenRouter of keys; fail = { [method] = status } answers that once.
local function fake_openrouter()
  local o = { keys = {}, order = {}, calls = {}, fail = {}, n = 0, down = false }
  local function answer(status, doc)
    return status, cjson.encode(doc), {}
  end
  function o.request(r)
    local path = r.url:sub(#BASE + 1)
    o.calls[#o.calls + 1] = { method = r.method, path = path, body = r.body and cjson.decode(r.body) or nil }
    if o.down then
      return nil, "connection refused (" .. r.url .. ")"
    end
    if r.headers.Authorization ~= "Bearer " .. MGMT then
      return answer(401, { error = { code = 401, message = "No auth credentials found" } })
    end
    if o.fail[r.method] then
      local st = o.fail[r.method]
      o.fail[r.method] = nil
      return answer(st, { error = { code = st, message = "upstream trouble" } })
    end
    local hash = path:match("^/keys/([%w_-]+)$")
    if r.method == "POST" and path == "/keys" then
      local b = cjson.decode(r.body)
      o.n = o.n + 1
      local k = { hash = ("%064x"):format(o.n), name = b.name, label = "sk-or-v1-abc..." .. o.n, limit = b.limit,
                  limit_reset = b.limit_reset, include_byok_in_limit = b.include_byok_in_limit,
                  value = "sk-or-v1-secretvalue-" .. o.n .. "-0123456789abcdef" }
      o.keys[k.hash] = k
      o.order[#o.order + 1] = k.hash
      return answer(201, { data = { hash = k.hash, name = k.name, label = k.label, limit = k.limit,
                                    limit_reset = k.limit_reset }, key = k.value })
    elseif r.method == "GET" and path:match("^/keys%?") then
      local offset = tonumber(path:match("offset=(%d+)")) or 0
      local data = {}
      for i = offset + 1, math.min(#o.order, offset + 2) do -- pages of 2: paging is exercised
        local k = o.keys[o.order[i]]
        data[#data + 1] = { hash = k.hash, name = k.name, label = k.label, limit = k.limit }
      end
      return answer(200, { data = setmetatable(data, cjson.array_mt) })
    elseif r.method == "PATCH" and hash then
      if not o.keys[hash] then return answer(404, { error = { code = 404, message = "Not found" } }) end
      o.keys[hash].limit = cjson.decode(r.body).limit
      return answer(200, { data = { hash = hash, limit = o.keys[hash].limit } })
    elseif r.method == "DELETE" and hash then
      if not o.keys[hash] then return answer(404, { error = { code = 404, message = "Not found" } }) end
      o.keys[hash] = nil
      for i, h in ipairs(o.order) do
        if h == hash then table.remove(o.order, i) break end
      end
      return answer(200, { deleted = true })
    end
    return answer(404, { error = { code = 404, message = "no route" } })
  end
  function o.count()
    return #o.order
  end
  function o.methods()
    local m = {}
    for _, c in ipairs(o.calls) do m[#m + 1] = c.method end
    o.calls = {}
    return table.concat(m, " ")
  end
  return o
end

local settings = { openrouter = { enabled = true, api_base = BASE }, dokku_mode = "dokku" }
local STARTER = { name = "starter", model_budget_usd = 15 }
local PRO = { name = "professional", model_budget_usd = 150 }
local FREE = { name = "free", model_budget_usd = 0 }

describe("model_key", function()
  local o, deps, inst, saves

  local function save(meta)
    saves = saves + 1
    inst.applied[model_key.SLOT] = cjson.decode(cjson.encode(meta)) -- as the store keeps it
  end

  before_each(function()
    o = fake_openrouter()
    deps = { http = function() return o end, key = function() return MGMT end }
    inst = { app_name = "mr-sub-1-abcd1234", account_id = "acct_9", applied = {} }
    saves = 0
  end)

  -- One job: prepare, inject into a state, (the converge), finish.
  local function job(tier, converge_fails)
    local plan = model_key.prepare(inst, tier, settings, save, deps)
    local state = { apps = { { name = inst.app_name, role = "main", env = { OPENROUTER_API_KEY = "global-key" } } } }
    assert(model_key.inject(state, plan))
    if converge_fails then
      return plan, state
    end
    model_key.finish(inst, settings, plan, save, deps)
    return plan, state
  end

  it("creates one key with the tier's monthly budget and MindRoom's name; stores no value", function()
    local plan, state = job(STARTER)
    assert.equal(1, o.count())
    local k = o.keys[o.order[1]]
    assert.equal("MindRoom starter account acct_9 instance mr-sub-1-abcd1234", k.name)
    assert.same({ 15, "monthly", true }, { k.limit, k.limit_reset, k.include_byok_in_limit })
    assert.equal(k.value, plan.value)
    local app = state.apps[1]
    assert.equal(k.value, app.env.OPENROUTER_API_KEY) -- wins over the profile's global key
    assert.is_true(app.secret_keys.OPENROUTER_API_KEY)
    assert.is_true(app.env_kept.OPENROUTER_API_KEY)
    local stored = cjson.encode(inst.applied)
    assert.is_nil(stored:find(k.value, 1, true))
    assert.same({ hash = k.hash, label = k.label, limit = 15, name = k.name }, inst.applied[model_key.SLOT].current)
    assert.is_nil(inst.applied[model_key.SLOT].pending)
  end)

  it("keeps the key on a later converge: no call that changes it, the variable is neither set nor unset", function()
    job(STARTER)
    o.methods()
    local plan, state = job(STARTER)
    assert.equal("", o.methods())
    assert.is_nil(plan.value)
    assert.is_nil(state.apps[1].env.OPENROUTER_API_KEY) -- not the global key, not a value
    assert.is_true(state.apps[1].env_kept.OPENROUTER_API_KEY)
    assert.equal(1, o.count())
  end)

  it("rotates on a tier change: the new key with the new limit first, the old one revoked after", function()
    job(STARTER)
    local old = o.order[1]
    o.methods()
    local plan = model_key.prepare(inst, PRO, settings, save, deps)
    assert.equal("GET GET POST", o.methods()) -- the list is read until an empty page
    assert.is_truthy(o.keys[old]) -- still valid while the converge sets the new one
    assert.equal(2, o.count())
    model_key.finish(inst, settings, plan, save, deps)
    assert.equal("DELETE", o.methods())
    assert.is_nil(o.keys[old])
    local new = o.keys[o.order[1]]
    assert.equal(150, new.limit)
    assert.equal("MindRoom professional account acct_9 instance mr-sub-1-abcd1234", new.name)
    assert.equal(new.hash, inst.applied[model_key.SLOT].current.hash)
    assert.same({}, inst.applied[model_key.SLOT].retired)
  end)

  it("PATCHes the limit when the same tier's budget changed (the key is fine)", function()
    job(STARTER)
    o.methods()
    local plan = job({ name = "starter", model_budget_usd = 20 })
    assert.equal("PATCH", o.methods())
    assert.is_nil(plan.value)
    assert.equal(20, o.keys[o.order[1]].limit)
    assert.equal(20, inst.applied[model_key.SLOT].current.limit)
  end)

  it("revokes the key when the tier has no budget, and leaves the variable to the profile", function()
    job(STARTER)
    local _, state = job(FREE)
    assert.equal(0, o.count())
    assert.equal("global-key", state.apps[1].env.OPENROUTER_API_KEY)
    assert.is_nil(state.apps[1].env_kept)
    assert.is_nil(inst.applied[model_key.SLOT].current)
  end)

  it("creates nothing for a tier without budget, or in dry-run, or with the feature off", function()
    job(FREE)
    model_key.prepare(inst, STARTER, { openrouter = { enabled = true, api_base = BASE }, dokku_mode = "dry-run" },
      save, deps)
    model_key.prepare(inst, STARTER, { openrouter = { enabled = false, api_base = BASE } }, save, deps)
    assert.equal("", o.methods())
  end)

  it("a retried job after a crash between OpenRouter's answer and the store's write leaves one key", function()
    -- the crash: the key exists at OpenRouter, nothing was stored
    local lost = function() error("killed", 0) end
    assert.has_error(function() model_key.prepare(inst, STARTER, settings, lost, deps) end)
    assert.equal(1, o.count())
    assert.same({}, inst.applied)
    local plan = job(STARTER)
    assert.equal(1, o.count())
    assert.equal(o.keys[o.order[1]].value, plan.value)
  end)

  it("a retried job after a failed converge revokes the key whose value died with it and makes one", function()
    local first = job(STARTER, true)
    assert.is_truthy(inst.applied[model_key.SLOT].pending)
    local plan = job(STARTER)
    assert.equal(1, o.count())
    assert.are_not.equal(first.value, plan.value)
    assert.equal(o.keys[o.order[1]].value, plan.value)
  end)

  it("a failed update that may have set a rotated key: the retry makes a fresh key even for the old tier", function()
    job(STARTER)
    job(PRO, true) -- the professional key may be in the app now; it is revoked on the retry
    local plan = job(STARTER)
    assert.is_string(plan.value) -- not 'keep': the app's value cannot be trusted
    assert.equal(1, o.count())
    assert.equal(15, o.keys[o.order[1]].limit)
  end)

  it("abandon revokes a failed provision's key", function()
    job(STARTER, true)
    assert.is_true(model_key.abandon(inst, settings, save, deps))
    assert.equal(0, o.count())
    assert.is_nil(inst.applied[model_key.SLOT].pending)
  end)

  it("revoke deletes stored keys and keys listed under the instance's names; 404 is fine", function()
    job(STARTER)
    job(PRO, true)
    -- another instance's key and an orphan of this one (any tier)
    o.request({ method = "POST", url = BASE .. "/keys", headers = { Authorization = "Bearer " .. MGMT },
                body = cjson.encode({ name = "MindRoom starter account acct_9 instance mr-other-1", limit = 1 }) })
    o.request({ method = "POST", url = BASE .. "/keys", headers = { Authorization = "Bearer " .. MGMT },
                body = cjson.encode({ name = "MindRoom free account acct_9 instance mr-sub-1-abcd1234", limit = 1 }) })
    o.request({ method = "DELETE", url = BASE .. "/keys/" .. inst.applied[model_key.SLOT].current.hash,
                headers = { Authorization = "Bearer " .. MGMT } }) -- gone already: its DELETE is a 404
    assert.is_nil(model_key.revoke(inst, settings, save, deps))
    assert.equal(1, o.count())
    assert.equal("MindRoom starter account acct_9 instance mr-other-1", o.keys[o.order[1]].name)
  end)

  it("revoke with the feature off names the keys it leaves (hash and label only)", function()
    job(STARTER)
    local w = model_key.revoke(inst, { openrouter = { enabled = false } }, save, deps)
    local k = o.keys[o.order[1]]
    assert.matches(k.hash, w, 1, true)
    assert.is_nil(w:find(k.value, 1, true))
  end)

  it("fails with OpenRouter's status and message, never a key or the Authorization header", function()
    o.fail.POST = 402
    local ok, err = pcall(model_key.prepare, inst, STARTER, settings, save, deps)
    assert.is_false(ok)
    assert.equal("OpenRouter POST /keys: HTTP 402: upstream trouble", err.message)
    deps.key = function() return "wrong-key" end
    err = select(2, pcall(model_key.prepare, inst, STARTER, settings, save, deps))
    assert.equal("OpenRouter GET /keys: HTTP 401: No auth credentials found", err.message)
    deps.key = function() return MGMT end
    o.down = true
    err = select(2, pcall(model_key.prepare, inst, STARTER, settings, save, deps))
    assert.matches("^OpenRouter GET /keys: no answer: connection refused", err.message)
    assert.is_nil(err.message:find(MGMT, 1, true))
    deps.key = function() return "bad key\r\nX: y" end
    err = select(2, pcall(model_key.prepare, inst, STARTER, settings, save, deps))
    assert.matches("must be printable ASCII", err.message)
    assert.is_nil(err.message:find("bad key", 1, true))
  end)

  it("refuses a hash that would steer the URL elsewhere", function()
    local real = o.request
    o.request = function(r)
      local st, body = real(r)
      if r.method == "POST" then
        body = body:gsub('"hash":"%x+"', '"hash":"../../credits"')
      end
      return st, body
    end
    local ok, err = pcall(model_key.prepare, inst, STARTER, settings, save, deps)
    assert.is_false(ok)
    assert.matches("answer without data.hash and key", err.message)
  end)

  it("puts the key on the split layout's backend (its main app has no environment)", function()
    local state = { apps = { { name = "a", role = "main" }, { name = "a-backend", role = "backend", env = {} } } }
    assert(model_key.inject(state, { keep = true, value = "sk-or-v1-x" }))
    assert.equal("sk-or-v1-x", state.apps[2].env.OPENROUTER_API_KEY)
    assert.is_nil(model_key.inject({ apps = {} }, { keep = true }))
  end)
end)
