-- Integration: per-instance OpenRouter keys (lua/model_key.lua) through the
-- real binary, sshd + Dokku simulator, PostgreSQL behind the PostgREST
-- gateway, and a loopback stand-in of OpenRouter's key API
-- (tests/fixtures/openrouter-stub). A provision creates one key with the
-- tier's monthly budget and the app's environment holds it; neither the
-- store nor Supabase nor the log holds its value; a tier change rotates; a
-- converge that creates nothing leaves the variable alone; a create whose
-- answer was lost, and a failed POST, leave one key after the retry; a
-- deprovision revokes.
local H = require "harness"
local D = require "dokku_harness"
local SB = require "supabase_harness"
local cjson = require "cjson"
local socket = require "socket"

local q = H.sh_quote
local MGMT = "sk-or-v1-mgmt-audit-5c2e8f1a9b7d"
local API_KEY = "or-apikey-3f9d1c7e"
local auth = { Authorization = "Bearer " .. API_KEY }

local read_file = H.read_file

-- Starts the stand-in; returns { pid, port, base }.
local function start_stub(dir)
  local out = dir .. "/stub.out"
  local p = io.popen("lua5.4 " .. q(H.root .. "/tests/fixtures/openrouter-stub") .. " --port 0 --key " .. q(MGMT)
    .. " >" .. q(out) .. " 2>" .. q(dir .. "/stub.err") .. " & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  local deadline = socket.gettime() + 10
  while socket.gettime() < deadline do
    local port = (read_file(out) or ""):match("listening port=(%d+)")
    if port then
      return { pid = pid, port = tonumber(port), base = "http://127.0.0.1:" .. port }
    end
    socket.sleep(0.05)
  end
  error("openrouter-stub did not start: " .. tostring(read_file(dir .. "/stub.err")))
end

local function stub_get(stub, path)
  local http = require "socket.http"
  local body = assert(http.request(stub.base .. path))
  return cjson.decode(body)
end

local function stub_post(stub, path, doc)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local text = cjson.encode(doc)
  assert(http.request({ url = stub.base .. path, method = "POST", source = ltn12.source.string(text),
                        headers = { ["content-type"] = "application/json", ["content-length"] = #text } }))
end

describe("per-instance OpenRouter keys #integration", function()
  local h, sb, srv, stub, dir

  setup(function()
    h = D.start()
    sb = SB.start({})
    dir = H.tmpdir()
    stub = start_stub(dir)
    srv = H.start({ dir = dir, env = D.mrprov_env(h, {
      PROVISIONER_API_KEYS = API_KEY, SUPABASE_URL = sb.url, SUPABASE_SERVICE_KEY = sb.key, LOG_LEVEL = "DEBUG",
      PROFILE = "split", -- the layout of this branch's shipped tiers; the main app of `mindroom` gets it likewise
      OPENROUTER_MANAGEMENT_KEY = MGMT, OPENROUTER_API_BASE = stub.base .. "/api/v1",
    }) })
  end)

  teardown(function()
    H.cleanup()
    D.stop_all()
    if sb then SB.stop(sb) end
    if stub then os.execute("kill " .. stub.pid .. " 2>/dev/null") end
  end)

  local function wait_job(sub, job_id)
    local deadline = socket.gettime() + 60
    while socket.gettime() < deadline do
      local _, st = H.request(srv, "GET", "/api/v1/status/" .. sub, nil, auth)
      if st and st.job and st.job ~= cjson.null and st.job.id == job_id
          and (st.job.state == "succeeded" or st.job.state == "failed") then
        return st
      end
      socket.sleep(0.1)
    end
    error("job " .. job_id .. " did not finish")
  end

  local function live(name_part)
    local out = {}
    for _, k in ipairs(stub_get(stub, "/_keys")) do
      if k.name:find(name_part, 1, true) then out[#out + 1] = k end
    end
    return out
  end

  local function calls(method)
    local out = {}
    for _, c in ipairs(stub_get(stub, "/_calls")) do
      if not method or c.method == method then out[#out + 1] = c end
    end
    return out
  end

  local function app_env(app)
    return D.state(h).apps[app .. "-backend"].env
  end

  it("creates, keeps, rotates and revokes one key per instance, its value only in the app", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_or1", account_id = "acc_or", tier = "starter" }, auth)
    assert.are.equal(202, code)
    local app = j.app_name
    local st = wait_job("sub_or1", j.job_id)
    assert.are.equal("succeeded", st.job.state, tostring(st.error))

    -- one key, MindRoom's name, the tier's budget, monthly; in the app's environment
    local keys = live(" instance " .. app)
    assert.are.equal(1, #keys)
    local k1 = keys[1]
    assert.are.equal("MindRoom starter account acc_or instance " .. app, k1.name)
    assert.same({ 15, "monthly", true }, { k1.limit, k1.limit_reset, k1.include_byok_in_limit })
    assert.are.equal(k1.value, app_env(app).OPENROUTER_API_KEY)
    for _, c in ipairs(calls()) do
      assert.is_true(c.auth, "every call carries the management key")
    end

    -- an update that creates nothing: the key stays, the variable is not touched
    code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_or1", app_name = app,
                                                       config_updates = { OR_FLAG = "on" } }, auth)
    assert.are.equal(202, code)
    assert.are.equal("succeeded", wait_job("sub_or1", j.job_id).job.state)
    assert.are.equal(1, #calls("POST"))
    assert.are.equal(k1.value, app_env(app).OPENROUTER_API_KEY)
    assert.are.equal("on", app_env(app).OR_FLAG)

    -- a tier change rotates: a new key with the new limit, set in the app, the old one revoked
    code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_or1", app_name = app,
                                                       tier = "professional" }, auth)
    assert.are.equal(202, code)
    st = wait_job("sub_or1", j.job_id)
    assert.are.equal("succeeded", st.job.state, tostring(st.error))
    keys = live(" instance " .. app)
    assert.are.equal(1, #keys)
    local k2 = keys[1]
    assert.are.equal("MindRoom professional account acc_or instance " .. app, k2.name)
    assert.are.equal(150, k2.limit)
    assert.are.equal(k2.value, app_env(app).OPENROUTER_API_KEY)
    local deletes = calls("DELETE")
    assert.are.equal(1, #deletes)
    assert.are.equal("/api/v1/keys/" .. k1.hash, deletes[1].path)

    -- the store keeps hash, label and limit; no value anywhere mrprov writes
    local rows = H.sqlite_rows(dir .. "/data/mrprov.db",
      "SELECT applied FROM instances WHERE subscription_id = 'sub_or1'")
    local rec = cjson.decode(rows[1].applied).openrouter_key.current
    assert.same({ hash = k2.hash, label = k2.label, limit = 150 },
      { hash = rec.hash, label = rec.label, limit = rec.limit })
    local db = read_file(dir .. "/data/mrprov.db") .. (read_file(dir .. "/data/mrprov.db-wal") or "")
    local log = H.log_text(srv)
    H.eventually("the Supabase row", function()
      return #SB.rows(sb, "instances", "subscription_id = 'sub_or1'") == 1
    end, 20)
    local supa = cjson.encode(SB.rows(sb, "instances")) .. cjson.encode(SB.rows(sb, "events"))
    for _, v in ipairs({ k1.value, k2.value, MGMT }) do
      for where, text in pairs({ store = db, log = log, supabase = supa }) do
        assert.is_nil(text:find(v, 1, true), "a key value in the " .. where)
        assert.is_nil(text:find(H.base64(v), 1, true), "a key value (base64) in the " .. where)
      end
    end
    assert.is_truthy(log:find("OPENROUTER_API_KEY=[REDACTED]", 1, true))

    -- deprovision revokes
    code, j = H.request(srv, "DELETE", "/api/v1/deprovision", { subscription_id = "sub_or1", app_name = app,
                                                              backup_data = false }, auth)
    assert.is_true(code == 202 or code == 200, tostring(code))
    st = wait_job("sub_or1", j.job_id)
    assert.are.equal("succeeded", st.job.state, tostring(st.error))
    assert.are.equal(0, #live(" instance " .. app))
  end)

  it("a create whose answer was lost, then a failed POST: the retried provision leaves one key", function()
    local before = #calls("POST")
    stub_post(stub, "/_fault", { method = "POST", mode = "drop" })
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_or2", account_id = "acc_or", tier = "starter" }, auth)
    assert.are.equal(202, code)
    local app = j.app_name
    local st = wait_job("sub_or2", j.job_id)
    assert.are.equal("failed", st.job.state)
    assert.matches("^OpenRouter POST /keys: no answer", st.error)
    assert.are.equal(1, #live(" instance " .. app)) -- created at OpenRouter, unknown to mrprov

    stub_post(stub, "/_fault", { method = "POST", status = 500 })
    code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_or2", account_id = "acc_or", tier = "starter" }, auth)
    assert.are.equal(202, code)
    st = wait_job("sub_or2", j.job_id)
    assert.are.equal("failed", st.job.state)
    assert.are.equal("OpenRouter POST /keys: HTTP 500: injected fault", st.error)
    assert.is_nil(st.error:find(MGMT, 1, true))

    code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_or2", account_id = "acc_or", tier = "starter" }, auth)
    assert.are.equal(202, code)
    st = wait_job("sub_or2", j.job_id)
    assert.are.equal("succeeded", st.job.state, tostring(st.error))
    local keys = live(" instance " .. app)
    assert.are.equal(1, #keys)
    assert.are.equal(keys[1].value, app_env(app).OPENROUTER_API_KEY)
    assert.are.equal(before + 3, #calls("POST"))
  end)
end)
