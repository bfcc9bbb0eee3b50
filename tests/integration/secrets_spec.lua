-- Integration: secrets audit. Every secret mrprov is given or derives gets a
-- known, unique value; the real binary then provisions over SSH (sshd +
-- Dokku simulator), updates, refuses bad credentials, takes a webhook, fails
-- a job on an injected fault, and deprovisions, mirroring to a real
-- PostgreSQL through the PostgREST-compatible gateway. Afterwards every
-- place something is written is searched for each secret, raw and base64:
-- mrprov's log, every job and status view, every answer and error body,
-- /metrics, the whole SQLite store, every public Supabase table, and the
-- simulator's command log. Where a secret must be, it is checked that it is
-- there in the right form and nowhere else.
local H = require "harness"
local D = require "dokku_harness"
local SB = require "supabase_harness"
local cjson = require "cjson"
local socket = require "socket"

local q = H.sh_quote

local API_KEY_1 = "audit-apikey-one-7f3c9a1e5b2d"
local API_KEY_2 = "audit-apikey-two-0d8e6b4a2c9f"
local WEBHOOK_RAW = "AuditWebhookKey-24bytes!"
local WEBHOOK_SECRET = "whsec_QXVkaXRXZWJob29rS2V5LTI0Ynl0ZXMh" -- whsec_ + base64(WEBHOOK_RAW)
local WEBHOOK_KEY_HEX = "4175646974576562686f6f6b4b65792d3234627974657321"
local SERVICE_KEY = "sb_secret_audit_5e1f0c7a9b3d6e2f"
local PROVISIONER_SECRET = "audit-provisioner-secret-4b8d2f6a1c3e5a7b"
-- customer environment values (config_updates): kept in the local store to
-- re-apply them (instances.spec, jobs.request), sent to Dokku base64-encoded,
-- and nowhere else (issue 12 item 2)
local CONFIG_SECRET = "audit-config-token-3e7a91c5d0b2"
local CONFIG_SECRET_2 = "audit-config-token2-8c4f06e2a9d1"
-- a credential in a URL that Dokku prints where mrprov clips its output
-- (4096 bytes): it must be masked before the cut, not a prefix of it left
local URL_PASSWORD = "auditurlpw5b1d9e3f7a2c"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

-- base64url without padding of HMAC-SHA256(key, msg): how crypto.derive works.
local function derive(key, msg)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(msg)
  f:close()
  local out = sh("openssl dgst -sha256 -hmac " .. q(key) .. " -binary " .. q(path) .. " | openssl base64 -A")
  os.remove(path)
  return (out:gsub("%s", ""):gsub("+", "-"):gsub("/", "_"):gsub("=", ""))
end

local function sign(id, ts, body)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(id .. "." .. ts .. "." .. body)
  f:close()
  local sig = sh("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. WEBHOOK_KEY_HEX .. " -binary " .. q(path) ..
    " | openssl base64 -A")
  os.remove(path)
  return "v1," .. sig
end

-- The forms a secret could take in text: raw, and base64 (with and without
-- padding, standard and url alphabets).
local function forms(name, value)
  local b64 = H.base64(value)
  return { { name, value }, { name .. " (base64)", b64 }, { name .. " (base64, unpadded)", (b64:gsub("=+$", "")) },
           { name .. " (base64url)", (b64:gsub("+", "-"):gsub("/", "_"):gsub("=+$", "")) } }
end

-- The first secret found in text: its name and the text around it.
local function find_any(text, secrets)
  for _, s in ipairs(secrets) do
    local a = text:find(s[2], 1, true)
    if a then
      return s[1] .. " [..." .. text:sub(math.max(1, a - 400), a + #s[2] + 40) .. "...]"
    end
  end
  return nil
end

describe("secrets audit #integration", function()
  local h, sb, srv, dir
  local bodies = {} -- every answer mrprov gave, except the one that must carry the password
  local auth1 = { Authorization = "Bearer " .. API_KEY_1 }
  local auth2 = { Authorization = "Bearer " .. API_KEY_2 }

  setup(function()
    h = D.start()
    sb = SB.start({ key = SERVICE_KEY, webhook_secret = WEBHOOK_SECRET })
    dir = H.tmpdir()
    srv = H.start({ dir = dir, env = D.mrprov_env(h, {
      LOG_LEVEL = "DEBUG", PROVISIONER_API_KEYS = API_KEY_1 .. "," .. API_KEY_2, WEBHOOK_SECRET = WEBHOOK_SECRET,
      SUPABASE_URL = sb.url, SUPABASE_SERVICE_KEY = SERVICE_KEY, PROVISIONER_SECRET = PROVISIONER_SECRET,
    }) })
  end)

  teardown(function()
    H.cleanup()
    D.stop_all()
    if sb then
      SB.stop(sb)
    end
  end)

  local function req(method, path, body, headers)
    local code, j, raw = H.request(srv, method, path, body, headers)
    bodies[#bodies + 1] = method .. " " .. path .. " -> " .. tostring(code) .. "\n" .. raw
    return code, j, raw
  end

  local function wait_job(sub, job_id, timeout)
    local deadline = socket.gettime() + (timeout or 60)
    while socket.gettime() < deadline do
      local _, st = H.request(srv, "GET", "/api/v1/status/" .. sub, nil, auth1)
      if st and st.job ~= cjson.null and st.job and st.job.id == job_id and
          (st.job.state == "succeeded" or st.job.state == "failed") then
        return st
      end
      socket.sleep(0.1)
    end
    error("job " .. job_id .. " did not finish")
  end

  local app, password
  local subs = { "sub_audit1", "sub_audit2", "sub_audit3" }
  -- the passwords of the PostgreSQL and Redis services the simulator
  -- created: dokku-postgres/dokku-redis print them (the Dsn row) after
  -- :create even under --quiet (issue 12 item 1)
  local service_passwords = {}
  local function note_service_passwords()
    local st = D.state(h)
    for _, kind in ipairs({ "postgres", "redis" }) do
      for name, svc in pairs(st.services[kind] or {}) do
        service_passwords[kind .. " password of " .. name] = svc.password
      end
    end
  end

  it("runs provision, update, refusals, a webhook, a failure and a deprovision", function()
    -- provision: the first answer carries the admin password (SPEC §5.2), derived from PROVISIONER_SECRET
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_audit1", account_id = "acc_a", tier = "professional" }, auth1)
    assert.are.equal(202, code)
    app, password = j.app_name, j.admin_password
    assert.are.equal(derive(PROVISIONER_SECRET, "admin-password:" .. app), password)
    assert.are.equal("succeeded", wait_job("sub_audit1", j.job_id).job.state)
    note_service_passwords()
    -- a repeat answers 200 with the same app and no password
    code = req("POST", "/api/v1/provision", { subscription_id = "sub_audit1", account_id = "acc_a",
                                              tier = "professional" }, auth2)
    assert.are.equal(200, code)

    -- update with the second (rotated) key, with a config value
    local uj
    code, uj = req("PUT", "/api/v1/update", { subscription_id = "sub_audit1", app_name = app, tier = "enterprise",
                                              config_updates = { AUDIT_FLAG = "on", AUDIT_TOKEN = CONFIG_SECRET } },
      auth2)
    assert.are.equal(202, code)
    assert.are.equal("succeeded", wait_job("sub_audit1", uj.job_id).job.state)

    -- a config:set that fails: its command is in the job error, the
    -- instance's error, the log and an event; Dokku's error quotes a value
    -- back (as v0.38 does for an ENV file it cannot read)
    D.set_faults(h, { { match = "config:set .*%-backend", action = "fail", exit = 1,
                        stderr = ' !     unterminated quoted value "' .. CONFIG_SECRET_2 .. '\\"' } })
    code, uj = req("PUT", "/api/v1/update", { subscription_id = "sub_audit1", app_name = app,
                                              config_updates = { AUDIT_TOKEN2 = CONFIG_SECRET_2 } }, auth2)
    assert.are.equal(202, code)
    local fst = wait_job("sub_audit1", uj.job_id)
    assert.are.equal("failed", fst.job.state)
    assert.truthy(fst.error:find("config:set --encoded --no-restart " .. app .. "-backend AUDIT_TOKEN2=", 1, true),
      fst.error)
    D.set_faults(h, {})

    -- refusals: a wrong key, a near-miss of a real key, a key in the wrong header, a bad webhook secret
    assert.are.equal(401, (req("GET", "/api/v1/status/sub_audit1", nil, { Authorization = "Bearer wrong-key" })))
    assert.are.equal(401, (req("GET", "/api/v1/status/sub_audit1", nil,
      { Authorization = "Bearer " .. API_KEY_1 .. "x" })))
    assert.are.equal(401, (req("GET", "/api/v1/status/sub_audit1", nil, { Authorization = API_KEY_1 })))
    local wbody = cjson.encode({ type = "INSERT", table = "subscriptions", schema = "public",
                                 record = { id = "sub_audit2", account_id = "acc_b", tier = "free", status = "active" },
                                 old_record = cjson.null })
    assert.are.equal(401, (req("POST", "/api/v1/webhooks/supabase", wbody,
      { Authorization = "Bearer " .. WEBHOOK_SECRET .. "0" })))
    assert.are.equal(401, (req("POST", "/api/v1/webhooks/supabase", wbody,
      { ["webhook-id"] = "msg_bad", ["webhook-timestamp"] = tostring(os.time()), ["webhook-signature"] = "v1,AAAA" })))

    -- a signed webhook provisions sub_audit2; the shared-secret form is accepted too
    local ts = tostring(os.time())
    local wj
    code, wj = req("POST", "/api/v1/webhooks/supabase", wbody,
      { ["webhook-id"] = "msg_audit_1", ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sign("msg_audit_1", ts, wbody) })
    assert.are.equal(202, code, cjson.encode(wj))
    code = req("POST", "/api/v1/webhooks/supabase", wbody, { Authorization = "Bearer " .. WEBHOOK_SECRET })
    assert.is_true(code == 200 or code == 202, tostring(code))
    local _, st2 = H.request(srv, "GET", "/api/v1/status/sub_audit2", nil, auth1)
    assert.are.equal("succeeded", wait_job("sub_audit2", st2.job.id).job.state)
    note_service_passwords()

    -- an injected failure: the backend's deploy fails for good, the job rolls back and fails
    D.set_faults(h, { { match = "git:from%-image %S+%-backend", action = "fail", exit = 1,
                        -- the password starts at byte 4085: the first 12 bytes are before the cut
                        stderr = " !     audit: image pull failed" .. string.rep(".", 4085 - 31 - 10 - 1)
                          .. " redis://:" .. URL_PASSWORD .. "@dokku-redis-x:6379" } })
    local fj
    -- a first answer: it carries the password (not collected among the answers searched)
    code, fj = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_audit3", account_id = "acc_c", tier = "starter" }, auth1)
    assert.are.equal(202, code)
    assert.is_string(fj.admin_password)
    local st3 = wait_job("sub_audit3", fj.job_id)
    assert.are.equal("failed", st3.job.state)
    D.set_faults(h, {})

    -- deprovision with backup
    local dj
    code, dj = req("DELETE", "/api/v1/deprovision",
      { subscription_id = "sub_audit1", app_name = app, backup_data = true }, auth1)
    assert.are.equal(202, code)
    assert.are.equal("succeeded", wait_job("sub_audit1", dj.job_id).job.state)
  end)

  -- Every secret in every form; the admin password of each instance too;
  -- with customer = true also the config_updates values and the service
  -- passwords (which reach Dokku, but must come back from nowhere).
  local function all_secrets(customer)
    local list = {}
    if customer then
      assert.is_true(next(service_passwords) ~= nil, "no service password noted")
      local pairs_ = {}
      for name, pw in pairs(service_passwords) do
        pairs_[#pairs_ + 1] = { name, pw }
      end
      table.sort(pairs_, function(a, b) return a[1] < b[1] end)
      pairs_[#pairs_ + 1] = { "URL password (its first 8 bytes)", URL_PASSWORD:sub(1, 8) }
      pairs_[#pairs_ + 1] = { "config_updates value", CONFIG_SECRET }
      pairs_[#pairs_ + 1] = { "config_updates value 2", CONFIG_SECRET_2 }
      for _, pair in ipairs(pairs_) do
        for _, f in ipairs(forms(pair[1], pair[2])) do
          list[#list + 1] = f
        end
      end
    end
    for _, pair in ipairs({ { "API key 1", API_KEY_1 }, { "API key 2", API_KEY_2 },
                            { "webhook secret", WEBHOOK_SECRET }, { "webhook key", WEBHOOK_RAW },
                            { "Supabase service key", SERVICE_KEY }, { "PROVISIONER_SECRET", PROVISIONER_SECRET } }) do
      for _, f in ipairs(forms(pair[1], pair[2])) do
        list[#list + 1] = f
      end
    end
    local db = dir .. "/data/mrprov.db"
    for line in sh("sqlite3 -cmd '.timeout 5000' " .. q(db) .. " 'SELECT app_name FROM instances'"):gmatch("[^\n]+") do
      for _, f in ipairs(forms("admin password of " .. line, derive(PROVISIONER_SECRET, "admin-password:" .. line))) do
        list[#list + 1] = f
      end
    end
    return list
  end

  it("leaves no secret in the log, the job views, the answers or /metrics", function()
    local secrets = all_secrets(true)
    assert.is_true(#secrets >= 6 * 4 + 3 * 4 + 2 * 4 + 4 * 4, "expected every instance's and service's password")
    local texts = { ["mrprov log"] = H.log_text(srv) }
    local db = dir .. "/data/mrprov.db"
    for id in sh("sqlite3 -cmd '.timeout 5000' " .. q(db) .. " 'SELECT id FROM jobs'"):gmatch("[^\n]+") do
      local _, _, raw = req("GET", "/api/v1/jobs/" .. id, nil, auth1)
      texts["job " .. id] = raw
    end
    for _, sub in ipairs(subs) do
      local _, _, raw = req("GET", "/api/v1/status/" .. sub, nil, auth1)
      texts["status " .. sub] = raw
    end
    texts["/metrics"] = select(3, H.request(srv, "GET", "/metrics"))
    texts["/ready"] = select(3, H.request(srv, "GET", "/ready"))
    texts["answers"] = table.concat(bodies, "\n")
    for where, text in pairs(texts) do
      local hit = find_any(text, secrets)
      assert.is_nil(hit, hit and (hit .. " found in " .. where))
    end
    -- the job views are not empty: they do hold the commands
    assert.matches("config:set", texts["answers"])
  end)

  it("leaves no secret in the SQLite store", function()
    local secrets = all_secrets()
    local dump = sh("sqlite3 -cmd '.timeout 5000' " .. q(dir .. "/data/mrprov.db") .. " .dump")
    assert.matches("CREATE TABLE", dump)
    assert.matches("INSERT INTO", dump)
    local hit = find_any(dump, secrets)
    assert.is_nil(hit, hit and (hit .. " found in the store"))
    -- the customer's values only where they are kept to be re-applied (the
    -- instance's spec, the update's request), the service passwords nowhere:
    -- searched in a copy with those two columns emptied
    local copy = dir .. "/audit-copy.db"
    sh("sqlite3 -cmd '.timeout 5000' " .. q(dir .. "/data/mrprov.db") .. " " .. q(".backup " .. copy))
    local kept = sh("sqlite3 " .. q(copy) .. " \"SELECT spec FROM instances WHERE subscription_id = 'sub_audit1'\"")
    assert.truthy(kept:find(CONFIG_SECRET, 1, true), "the value is kept to be re-applied")
    dump = sh("sqlite3 " .. q(copy) .. " \"UPDATE instances SET spec = '{}'; UPDATE jobs SET request = '{}';\" .dump")
    assert.matches("INSERT INTO steps", dump)
    hit = find_any(dump, all_secrets(true))
    assert.is_nil(hit, hit and (hit .. " found in the store"))
    -- with PROVISIONER_SECRET set, no secret file is written beside the store
    assert.is_nil(H.read_file(dir .. "/data/secret"))
  end)

  it("leaves no secret in Supabase's tables", function()
    local secrets = all_secrets(true)
    local dump = sh("pg_dump --data-only --schema=public " .. q(sb.pg.conninfo) .. " 2>&1")
    assert.matches("COPY public%.instances", dump)
    assert.truthy(dump:find(app, 1, true))
    local hit = find_any(dump, secrets)
    assert.is_nil(hit, hit and (hit .. " found in Supabase's public tables"))
  end)

  it("sends the admin password to Dokku only base64-encoded in the backend's config:set", function()
    local secrets = all_secrets()
    local log = H.read_file(h.state .. "/log.jsonl")
    local carriers = 0
    for line in log:gmatch("[^\n]+") do
      local e = cjson.decode(line)
      local joined = table.concat(e.argv, " ")
      local hit = find_any(line, secrets)
      if hit then
        -- allowed only: config:set --encoded on a backend app carrying
        -- MINDROOM_ADMIN_PASSWORD=base64(password) of that very app
        assert.matches("config:set", joined, hit .. " in " .. joined)
        assert.matches("%-%-encoded", joined)
        local target = joined:match("(mr%-%S+%-backend)")
        assert.is_string(target, hit .. " sent to a non-backend app: " .. joined)
        local inst = target:gsub("%-backend$", "")
        local pw = derive(PROVISIONER_SECRET, "admin-password:" .. inst)
        local rest = joined:gsub("MINDROOM_ADMIN_PASSWORD=" .. H.base64(pw):gsub("%p", "%%%0"), "")
        assert.is_nil(find_any(rest, secrets), "a secret beside the encoded password: " .. joined)
        assert.is_nil(line:find(pw, 1, true), "the password crossed SSH unencoded")
        carriers = carriers + 1
      end
    end
    assert.is_true(carriers >= 1, "the password never reached Dokku")
    -- and on the server it is the right value (where it must be)
    D.state(h) -- sub_audit1 is deprovisioned; sub_audit2's backend holds its password
    local st = D.state(h)
    local found = 0
    for name, a in pairs(st.apps) do
      if name:match("%-backend$") then
        assert.are.equal(derive(PROVISIONER_SECRET, "admin-password:" .. name:gsub("%-backend$", "")),
          a.env.MINDROOM_ADMIN_PASSWORD)
        found = found + 1
      end
    end
    assert.is_true(found >= 1)
  end)
end)
