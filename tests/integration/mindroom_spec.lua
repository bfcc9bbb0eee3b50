-- Integration: the real binary provisioning an instance of the mindroom
-- profile (the default PROFILE) through a real OpenSSH sshd whose forced
-- command is the Dokku simulator. Checks what lands on the server against
-- MindRoom's runtime contract (docs/reference/mindroom.md §§1-5, 7):
-- two apps, MindRoom's variable names, mounts and owners, ports, domains,
-- secret values never in a step log or the log, and the instance API key
-- returned once.
local H = require "harness"
local D = require "dokku_harness"
local cjson = require "cjson"

local PROVIDER = "sk-or-v1-integration-provider-key"

-- The deploy job's end; then the instance is `starting` until its
-- /api/ready answers (here the loopback health server, which answers 503
-- once, then 200), then `running`.
local function wait_job(srv, sub, job_id)
  H.wait_for(srv, "/api/v1/status/" .. sub, function(s)
    return s.status == "running" or s.status == "failed" or s.status == "unhealthy"
  end, 60)
  local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. job_id)
  return { job = job }
end

-- The names mrprov set (Dokku's own DOKKU_* and GIT_REV left out).
local function keys(t)
  local out = {}
  for k in pairs(t) do
    if not k:match("^DOKKU_") and k ~= "GIT_REV" then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

describe("the mindroom profile on the Dokku simulator #integration", function()
  local h, srv, health
  setup(function()
    h = D.start()
    health = H.health_server("fail:1")
    srv = H.start({ env = D.mrprov_env(h, { PROFILE = "mindroom", OPENROUTER_API_KEY = PROVIDER,
      HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. health.port .. "/{app}{path}" }) })
  end)
  teardown(function()
    if health then health.stop() end
    H.cleanup()
    D.stop_all()
  end)

  it("provisions MindRoom and Synapse as the contract says, and returns the API key once", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision", {
      subscription_id = "sub_mr1", account_id = "acc_1", tier = "starter",
    })
    assert.are.equal(202, code, cjson.encode(j))
    local app, api_key = j.app_name, j.api_key
    -- the homeserver always runs under this profile: its URL is in the first answer
    assert.are.equal("https://matrix." .. app .. ".mindroom.chat", j.matrix_url)
    assert.is_string(api_key)
    assert.are.equal(43, #api_key) -- base64url of 32 bytes
    local st = wait_job(srv, "sub_mr1", j.job_id)
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    -- running only once MindRoom's /api/ready answered (503 once, then 200)
    local _, view = H.request(srv, "GET", "/api/v1/status/sub_mr1")
    assert.are.equal("running", view.status, cjson.encode(view))
    assert.are.equal("healthy", view.health_state)
    local seen = health.requests()
    assert.is_true(#seen >= 2, #seen .. " checks")
    assert.are.equal("GET /" .. app .. "/api/ready HTTP/1.1", seen[1])

    local s = D.state(h)
    local objs = D.objects_of(s, app)
    assert.are.same({ app, app .. "-matrix" }, objs.apps)
    assert.are.same({}, objs.postgres)
    assert.are.same({}, objs.redis)

    local mr = s.apps[app]
    local dom = app .. ".mindroom.chat"
    assert.are.same({
      "CUSTOMER_ID", "HOME", "LOG_LEVEL", "MATRIX_HOMESERVER", "MATRIX_REGISTRATION_SHARED_SECRET",
      "MATRIX_SERVER_NAME", "MINDROOM_API_KEY", "MINDROOM_CONFIG_PATH", "MINDROOM_CREDENTIALS_ENCRYPTION_KEY",
      "MINDROOM_DESKTOP_MATRIX_HOMESERVER", "MINDROOM_MATRIX_HOMESERVER_STARTUP_TIMEOUT_SECONDS",
      "MINDROOM_PUBLIC_URL", "MINDROOM_STORAGE_PATH",
      "MRPROV_CONTEXT_SHA256", -- the deployed build context's digest (resources/lib/seed.lua)
      "OPENROUTER_API_KEY",
    }, keys(mr.env))
    assert.are.equal(api_key, mr.env.MINDROOM_API_KEY)
    assert.are.equal(PROVIDER, mr.env.OPENROUTER_API_KEY)
    assert.are.equal("/mindroom_data", mr.env.MINDROOM_STORAGE_PATH)
    assert.are.equal("/mindroom_data", mr.env.HOME)
    assert.are.equal("/mindroom_data/config/config.yaml", mr.env.MINDROOM_CONFIG_PATH)
    assert.are.equal("https://" .. dom, mr.env.MINDROOM_PUBLIC_URL)
    assert.are.equal("https://matrix." .. dom, mr.env.MATRIX_HOMESERVER)
    assert.are.equal(dom, mr.env.MATRIX_SERVER_NAME)
    assert.are.equal(app, mr.env.CUSTOMER_ID)
    assert.are.same({ "/var/lib/dokku/data/storage/" .. app .. ":/mindroom_data" }, mr.mounts)
    assert.are.equal("1000:1000", s.global.storage[app].owner)
    assert.are.same({ dom, "api." .. dom }, mr.domains)
    assert.is_truthy(table.concat(mr.ports.map, " "):find("http:80:8765", 1, true), cjson.encode(mr.ports))
    assert.is_true(mr.deploy.deployed)

    local hs = s.apps[app .. "-matrix"]
    assert.are.equal(dom, hs.env.SYNAPSE_SERVER_NAME)
    assert.are.equal(mr.env.MATRIX_REGISTRATION_SHARED_SECRET, hs.env.SYNAPSE_REGISTRATION_SHARED_SECRET)
    assert.are.same({ "/var/lib/dokku/data/storage/" .. app .. "-matrix:/data" }, hs.mounts)
    assert.are.same({ "matrix." .. dom }, hs.domains)
    assert.is_truthy(table.concat(hs.ports.map, " "):find("http:80:8008", 1, true), cjson.encode(hs.ports))
    assert.are.equal("https://matrix." .. dom, view.urls.matrix)

    -- no secret value in the step log or the service log
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local all = {}
    for _, stp in ipairs(job.steps) do
      all[#all + 1] = stp.command .. "\n" .. (stp.output ~= cjson.null and stp.output or "")
    end
    all = table.concat(all, "\n") .. "\n" .. H.log_text(srv)
    for name, v in pairs({ api_key = api_key, provider = PROVIDER,
                           registration = mr.env.MATRIX_REGISTRATION_SHARED_SECRET,
                           credentials = mr.env.MINDROOM_CREDENTIALS_ENCRYPTION_KEY }) do
      assert.is_nil(all:find(v, 1, true), name .. " leaked")
    end
    assert.is_truthy(all:find("MINDROOM_API_KEY=[REDACTED]", 1, true))
    assert.is_truthy(all:find("OPENROUTER_API_KEY=[REDACTED]", 1, true))

    -- once: a repeated provision answers without it, and so does the status view
    local code2, again = H.request(srv, "POST", "/api/v1/provision", {
      subscription_id = "sub_mr1", account_id = "acc_1", tier = "starter",
    })
    assert.are.equal(200, code2)
    assert.is_nil(again.api_key)
    local _, status = H.request(srv, "GET", "/api/v1/status/sub_mr1")
    assert.is_nil(cjson.encode(status):find(api_key, 1, true))
  end)

  it("runs Tuwunel with a registration token when the request asks for it", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision", {
      subscription_id = "sub_mr2", account_id = "acc_2", tier = "professional",
      enable_matrix = true, matrix_type = "tuwunel",
    })
    assert.are.equal(202, code, cjson.encode(j))
    local st = wait_job(srv, "sub_mr2", j.job_id)
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    local s = D.state(h)
    local app = j.app_name
    local mr, hs = s.apps[app], s.apps[app .. "-matrix"]
    assert.is_nil(mr.env.MATRIX_REGISTRATION_SHARED_SECRET)
    assert.is_string(mr.env.MATRIX_REGISTRATION_TOKEN)
    assert.are.equal(mr.env.MATRIX_REGISTRATION_TOKEN, hs.env.TUWUNEL_REGISTRATION_TOKEN)
    assert.are.equal(app .. ".mindroom.chat", hs.env.TUWUNEL_SERVER_NAME)
    assert.are.same({ "/var/lib/dokku/data/storage/" .. app .. "-matrix:/var/lib/tuwunel" }, hs.mounts)
  end)

  it("backs up /mindroom_data (the config.yaml MindRoom was seeded with) on a deprovision with backup", function()
    local _, st = H.request(srv, "GET", "/api/v1/status/sub_mr1")
    local app = st.app_name
    local code, j = H.request(srv, "DELETE", "/api/v1/deprovision",
      { subscription_id = "sub_mr1", app_name = app, backup_data = true }, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("deprovisioned", j.status, cjson.encode(j))
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local mine
    for _, f in ipairs(job.result.backup.files) do
      if f.service == app then mine = f end
    end
    assert.is_table(mine, cjson.encode(job.result.backup))
    assert.matches("%.tar%.gz$", mine.path)
    -- the archive holds what the converge script wrote at the first start
    local p = io.popen("tar -xzOf " .. H.sh_quote(mine.path) .. " ./config/config.yaml")
    local yaml = p:read("a")
    p:close()
    assert.is_truthy(yaml:find("router:", 1, true), yaml)
    assert.is_truthy(yaml:find("assistant:", 1, true), yaml)
  end)
end)
