-- Integration: the real binary, started on a random loopback port, driven
-- over HTTP through every route (dry-run transport: DOKKU_HOST unset).
local H = require "harness"
local cjson = require "cjson"

local function commands(steps)
  local out = {}
  for _, s in ipairs(steps) do
    out[#out + 1] = s.command
  end
  return table.concat(out, "\n")
end

describe("mrprov serve (dry-run) #integration", function()
  local srv

  setup(function()
    srv = H.start()
  end)

  teardown(function()
    H.cleanup()
  end)

  describe("operational endpoints", function()
    it("answers /health with version, uptime and generation", function()
      local code, j = H.request(srv, "GET", "/health")
      assert.are.equal(200, code)
      assert.are.equal("healthy", j.status)
      assert.is_string(j.version)
      assert.is_number(j.uptime_s)
      assert.are.equal(1, j.config_generation)
    end)

    it("answers /health with the original service's fields too", function()
      local _, j, raw = H.request(srv, "GET", "/health")
      -- dry-run: no Dokku is connected; Supabase is not configured
      assert.is_false(j.dokku_connected)
      assert.is_false(j.supabase_connected)
      assert.matches('"uptime_seconds":%d+[,}]', raw) -- an integer
      assert.is_true(j.uptime_seconds >= 0 and j.uptime_seconds <= j.uptime_s)
    end)

    it("answers /live with alive and an ISO 8601 UTC timestamp", function()
      local code, j = H.request(srv, "GET", "/live")
      assert.are.equal(200, code)
      assert.are.equal("alive", j.status)
      assert.is_true(j.alive)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.?%d*Z$", j.timestamp)
      assert.are.equal(os.date("!%Y-%m-%d", os.time()), j.timestamp:sub(1, 10))
    end)

    it("answers /live and /ready", function()
      assert.are.equal(200, (H.request(srv, "GET", "/live")))
      local code, j = H.request(srv, "GET", "/ready")
      assert.are.equal(200, code)
      assert.is_true(j.ready)
      assert.are.equal("ok", j.checks.store)
      assert.are.equal("ok", j.checks.lua)
    end)

    it("serves an OpenAPI 3.1 document listing every route", function()
      local code, j = H.request(srv, "GET", "/openapi.json")
      assert.are.equal(200, code)
      assert.matches("^3%.1", j.openapi)
      for _, p in ipairs({ "/health", "/live", "/ready", "/metrics", "/openapi.json", "/api/v1/provision",
                           "/api/v1/deprovision", "/api/v1/update", "/api/v1/status/{subscription_id}",
                           "/api/v1/jobs/{job_id}", "/api/v1/tiers", "/api/v1/plan", "/api/v1/webhooks/supabase",
                           "/api/v1/instances/{subscription_id}/stop", "/api/v1/instances/{subscription_id}/start",
                           "/api/v1/instances/{subscription_id}/restart", "/api/v1/reconcile",
                           "/api/v1/subscriptions/sync", "/docs", "/api/v1/instances", "/api/v1/jobs",
                           "/api/v1/jobs/{job_id}/retry", "/api/v1/system", "/api/v1/reload" }) do
        assert.is_table(j.paths[p], "missing path " .. p)
      end
    end)

    it("serves every operation the OpenAPI document lists, and no other", function()
      local _, doc = H.request(srv, "GET", "/openapi.json")
      local n = 0
      for path, ops in pairs(doc.paths) do
        for method in pairs(ops) do
          if method:match("^%a+$") and method ~= "parameters" then
            n = n + 1
            local url = path:gsub("{[%w_]+}", "x")
            local body = (method ~= "get") and "{}" or nil
            local code, j = H.request(srv, method:upper(), url, body)
            assert.is_true(code ~= 405, method .. " " .. path .. " is not served")
            assert.is_false(code == 404 and j and j.error and j.error.message == "no such route",
              method .. " " .. path .. " is not served")
          end
        end
      end
      assert.are.equal(39, n, "operations in openapi.json")
      -- the server's routes are the paths listed above (checked one by one in the previous test)
    end)

    it("404s an unknown route and 405s a wrong method with Allow", function()
      local code, j = H.request(srv, "GET", "/nope")
      assert.are.equal(404, code)
      assert.are.equal("not_found", j.error.code)
      local code2, j2, _, h = H.request(srv, "GET", "/api/v1/provision")
      assert.are.equal(405, code2)
      assert.are.equal("method_not_allowed", j2.error.code)
      assert.are.equal("POST", h.allow)
    end)
  end)

  describe("request checks", function()
    it("refuses a body that is not JSON by content type with 415", function()
      local code, j = H.request(srv, "POST", "/api/v1/provision", "{}", { ["Content-Type"] = "text/plain" })
      assert.are.equal(415, code)
      assert.are.equal("unsupported_media_type", j.error.code)
    end)

    it("refuses malformed JSON with 400", function()
      local code, j = H.request(srv, "POST", "/api/v1/provision", "{\"subscription_id\": ")
      assert.are.equal(400, code)
      assert.is_string(j.error.message)
    end)

    it("refuses a body over 64 KiB with 413, declared or chunked", function()
      local big = '{"subscription_id":"sub_big","tier":"free","pad":"' .. string.rep("x", 70 * 1024) .. '"}'
      -- Content-Length over the limit: answered before the body is read.
      local path = H.tmpdir() .. "/big.json"
      local f = assert(io.open(path, "wb"))
      f:write(big)
      f:close()
      local p = io.popen("curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"
        .. path .. " " .. srv.base .. "/api/v1/provision")
      assert.are.equal("413", p:read("a"))
      p:close()
      -- Chunked, no length: counted while it arrives.
      local code, j = H.request(srv, "POST", "/api/v1/provision", big, { ["Content-Length"] = false })
      assert.are.equal(413, code)
      assert.are.equal("payload_too_large", j.error.code)
      assert.are.equal(404, (H.request(srv, "GET", "/api/v1/status/sub_big")))
    end)

    it("refuses an unknown tier with 422 naming the field", function()
      local code, j = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = "sub_x", account_id = "acc_x", tier = "gold" })
      assert.are.equal(422, code)
      assert.are.equal("tier", j.error.field)
    end)

    it("refuses shell metacharacters in the subscription id with 422", function()
      for _, bad in ipairs({ "a;rm -rf /", "$(id)", "`id`", "a b", "x\ny", "--force" }) do
        local code, j = H.request(srv, "POST", "/api/v1/provision",
          { subscription_id = bad, account_id = "acc_x", tier = "free" })
        assert.are.equal(422, code, bad)
        assert.are.equal("subscription_id", j.error.field)
      end
    end)

    it("refuses a custom domain outside the enterprise tier", function()
      local code, j = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = "sub_cd", account_id = "acc_x", tier = "starter", custom_domain = "ai.example.com" })
      assert.are.equal(422, code)
      assert.are.equal("custom_domain", j.error.field)
    end)

    it("refuses a provision without account_id, or with null, with 422 naming it (as the original)", function()
      for _, body in ipairs({ '{"subscription_id":"sub_acc","tier":"free"}',
                              '{"subscription_id":"sub_acc","account_id":null,"tier":"free"}' }) do
        local code, j = H.request(srv, "POST", "/api/v1/provision", body)
        assert.are.equal(422, code, body)
        assert.are.equal("account_id", j.error.field)
      end
      assert.are.equal(404, (H.request(srv, "GET", "/api/v1/status/sub_acc")))
    end)

    it("refuses requested limits below the original's minimums (128 MB, 0.1 CPU) with 422 naming the field", function()
      for field, v in pairs({ memory_mb = 64, cpu_limit = 0.05 }) do
        local code, j = H.request(srv, "POST", "/api/v1/provision",
          { subscription_id = "sub_min", account_id = "acc_x", tier = "enterprise", limits = { [field] = v } })
        assert.are.equal(422, code, field)
        assert.are.equal("limits." .. field, j.error.field)
      end
      assert.are.equal(404, (H.request(srv, "GET", "/api/v1/status/sub_min")))
    end)

    it("lists the loaded tiers", function()
      local code, j = H.request(srv, "GET", "/api/v1/tiers")
      assert.are.equal(200, code)
      local names = {}
      for _, t in ipairs(j.tiers) do
        names[#names + 1] = t.name
      end
      table.sort(names)
      assert.are.same({ "enterprise", "free", "professional", "starter" }, names)
    end)
  end)

  describe("provision → update → deprovision", function()
    local first, app

    it("accepts a provision with 202 and the SPEC fields", function()
      local code, j = H.request(srv, "POST", "/api/v1/provision", {
        subscription_id = "sub_123", account_id = "acc_456", tier = "professional",
        enable_matrix = true, matrix_type = "tuwunel",
      })
      assert.are.equal(202, code)
      first = j
      app = j.app_name
      assert.matches("^mr%-sub123%-[a-z0-9]+$", app)
      assert.are.equal(8, #app:match("%-([a-z0-9]+)$"))
      assert.are.equal("provisioning", j.status)
      assert.are.equal("https://" .. app .. ".mindroom.chat", j.frontend_url)
      assert.are.equal("https://api." .. app .. ".mindroom.chat", j.backend_url)
      assert.are.equal("https://matrix." .. app .. ".mindroom.chat", j.matrix_url)
      assert.is_string(j.admin_password)
      assert.is_true(#j.admin_password >= 24)
      assert.is_true(j.success)
      assert.are.equal(app .. ".mindroom.chat", j.subdomain) -- the instance's domain (the original's)
      assert.matches("^job_", j.job_id)
    end)

    it("reaches running with the planned commands in the job's step log", function()
      local st = H.wait_for(srv, "/api/v1/status/sub_123", function(s) return s.status == "running" end)
      assert.are.equal(app, st.app_name)
      assert.are.equal("professional", st.tier)
      assert.is_true(st.dry_run)
      assert.are.equal("succeeded", st.job.state)
      assert.are.equal(st.job.steps_total, st.job.steps_done)
      assert.are.equal(2048, st.limits.memory_mb)
      -- the original service's InstanceInfo fields, beside mrprov's own
      assert.are.equal(1.0, st.limits.cpu)
      assert.are.equal(1.0, st.limits.cpu_limit)
      assert.are.equal(first.frontend_url, st.frontend_url)
      assert.are.equal(first.backend_url, st.backend_url)
      assert.are.equal(first.matrix_url, st.matrix_url)
      assert.are.equal(app .. ".mindroom.chat", st.subdomain)
      assert.are.equal(cjson.null, st.last_health_check)

      local code, job = H.request(srv, "GET", "/api/v1/jobs/" .. first.job_id)
      assert.are.equal(200, code)
      assert.are.equal("succeeded", job.state)
      local all = commands(job.steps)
      for _, want in ipairs({
        "dokku --quiet apps:create " .. app .. "\n",
        "apps:create " .. app .. "-backend", "apps:create " .. app .. "-frontend",
        "apps:create " .. app .. "-matrix", "postgres:create " .. app .. "-db",
        "redis:create " .. app .. "-redis", "postgres:link " .. app .. "-db " .. app .. "-backend --no-restart",
        "config:set --encoded --no-restart " .. app .. "-backend", "resource:limit --memory 2048m --cpu 1 "
          .. app .. "-backend", "storage:mount " .. app .. "-backend /var/lib/dokku/data/storage/" .. app
          .. ":/app/data", "domains:set " .. app .. "-frontend " .. app .. ".mindroom.chat",
        "git:from-image " .. app .. "-backend mindroom/backend:latest",
        "letsencrypt:enable " .. app .. "-backend",
      }) do
        assert.is_truthy(all:find(want, 1, true), "missing " .. want .. " in\n" .. all)
      end
      for _, s in ipairs(job.steps) do
        assert.are.equal("done", s.state)
        assert.are.equal(0, s.exit_code)
      end
      -- The password never appears in the step log, in any encoding.
      local b64 = H.base64(first.admin_password)
      assert.is_nil(all:find(first.admin_password, 1, true))
      assert.is_nil(all:find(b64, 1, true))
      assert.is_truthy(all:find("MINDROOM_ADMIN_PASSWORD=[REDACTED]", 1, true))
    end)

    it("answers a repeat provision with 200, the same app and no new job", function()
      local code, j = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = "sub_123", account_id = "acc_456", tier = "professional" })
      assert.are.equal(200, code)
      assert.are.equal(app, j.app_name)
      assert.are.equal(first.job_id, j.job_id)
      assert.is_nil(j.admin_password)
      local _, st = H.request(srv, "GET", "/api/v1/status/sub_123")
      assert.are.equal(first.job_id, st.job.id)
    end)

    it("refuses an update for another subscription's app with 409", function()
      local code, j = H.request(srv, "PUT", "/api/v1/update",
        { subscription_id = "sub_123", app_name = "mr-other-abcdefgh", tier = "enterprise" })
      assert.are.equal(409, code)
      assert.are.equal("app_name", j.error.field)
    end)

    it("refuses update limits on a tier without custom_limits with 422 naming the tier", function()
      local code, j = H.request(srv, "PUT", "/api/v1/update",
        { subscription_id = "sub_123", app_name = app, limits = { memory_mb = 1024, cpu_limit = 0.75 } })
      assert.are.equal(422, code)
      assert.are.equal("limits", j.error.field)
      assert.matches("professional tier", j.error.message)
      local _, st = H.request(srv, "GET", "/api/v1/status/sub_123")
      assert.are.equal(first.job_id, st.job.id) -- no job
    end)

    it("answers restart_required false for an update that restarts nothing, waited for or not", function()
      local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_123", app_name = app })
      assert.are.equal(202, code)
      assert.is_false(j.restart_required)
      assert.are.equal(app .. ".mindroom.chat", j.subdomain)
      H.wait_for(srv, "/api/v1/status/sub_123", function(s) return s.status == "running" and s.job.id == j.job_id end)
      local wcode, w = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_123", app_name = app },
        { Prefer = "wait=20" })
      assert.are.equal(200, wcode)
      assert.is_false(w.restart_required)
    end)

    it("updates the tier by sending only the differences, with one restart per app", function()
      local code, j = H.request(srv, "PUT", "/api/v1/update",
        { subscription_id = "sub_123", app_name = app, tier = "enterprise" })
      assert.are.equal(202, code)
      assert.are.equal("updating", j.status)
      assert.is_true(j.restart_required) -- its plan restarts the apps whose limits and environment change
      local st = H.wait_for(srv, "/api/v1/status/sub_123",
        function(s) return s.status == "running" and s.job.id == j.job_id end)
      assert.are.equal("enterprise", st.tier)
      assert.are.equal(8192, st.limits.memory_mb)
      local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
      local all = commands(job.steps)
      assert.is_nil(all:find("apps:create", 1, true), all)
      assert.is_nil(all:find("postgres:create", 1, true), all)
      assert.is_truthy(all:find("resource:limit --memory 8192m --cpu 4 " .. app .. "-backend", 1, true), all)
      assert.is_truthy(all:find("MINDROOM_TIER=", 1, true), all)
      assert.is_nil(all:find("MINDROOM_ADMIN_PASSWORD", 1, true), all)
      local _, n = all:gsub(("ps:restart " .. app .. "-backend"):gsub("%p", "%%%0"), "")
      assert.are.equal(1, n)
    end)

    it("waits for the result with Prefer: wait", function()
      local code, j, _, h = H.request(srv, "PUT", "/api/v1/update",
        { subscription_id = "sub_123", app_name = app, enable_matrix = false }, { Prefer = "wait=20" })
      assert.are.equal(200, code)
      assert.are.equal("running", j.status)
      assert.are.equal("wait=20", h["preference-applied"])
      assert.is_true(j.restart_required) -- the backend's environment lost its Matrix values: restarted
      local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
      assert.is_truthy(commands(job.steps):find("apps:destroy --force " .. app .. "-matrix", 1, true))
    end)

    it("shows the plan of an existing instance as its differences only", function()
      local code, j = H.request(srv, "POST", "/api/v1/plan",
        { subscription_id = "sub_123", account_id = "acc_456", tier = "enterprise" })
      assert.are.equal(200, code)
      assert.are.equal(app, j.app_name)
      assert.are.same({}, j.commands)
    end)

    it("refuses a deprovision naming another app with 409", function()
      local code = H.request(srv, "DELETE", "/api/v1/deprovision",
        { subscription_id = "sub_123", app_name = "mr-sub123-zzzzzzzz" })
      assert.are.equal(409, code)
    end)

    it("deprovisions with backup first, then unlink, destroy services, destroy apps", function()
      local code, j = H.request(srv, "DELETE", "/api/v1/deprovision",
        { subscription_id = "sub_123", app_name = app, backup_data = true })
      assert.are.equal(202, code)
      assert.are.equal(app .. ".mindroom.chat", j.subdomain)
      local st = H.wait_for(srv, "/api/v1/status/sub_123", function(s) return s.status == "deprovisioned" end)
      assert.are.equal("succeeded", st.job.state)
      local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
      local all = commands(job.steps)
      local function pos(p)
        return assert(all:find(p, 1, true), "missing " .. p .. " in\n" .. all)
      end
      assert.is_true(pos("postgres:export " .. app .. "-db") < pos("postgres:unlink"))
      assert.is_true(pos("postgres:unlink") < pos("postgres:destroy " .. app .. "-db -f"))
      assert.is_true(pos("redis:destroy") < pos("apps:destroy --force " .. app .. "-backend"))
      assert.is_nil(all:find("apps:destroy --force " .. app .. "-matrix", 1, true)) -- already gone
    end)

    it("answers 404 for unknown subscriptions and jobs", function()
      assert.are.equal(404, (H.request(srv, "GET", "/api/v1/status/sub_nobody")))
      assert.are.equal(404, (H.request(srv, "GET", "/api/v1/jobs/job_0000")))
      assert.are.equal(404, (H.request(srv, "GET", "/api/v1/jobs/..%2f..%2fetc")))
    end)

    it("counts jobs and requests in /metrics", function()
      local code, _, raw = H.request(srv, "GET", "/metrics")
      assert.are.equal(200, code)
      assert.matches('mrprov_jobs_total{operation="provision",outcome="succeeded"} 1', raw, 1, true)
      assert.matches('mrprov_http_requests_total{route="provision",status="202"}', raw, 1, true)
      assert.matches("# TYPE mrprov_provision_duration_seconds histogram", raw, 1, true)
      assert.matches('mrprov_active_instances{tier="enterprise"} 0', raw, 1, true)
    end)

    it("never logs the admin password", function()
      local text = H.log_text(srv)
      assert.is_nil(text:find(first.admin_password, 1, true))
      assert.is_nil(text:find(H.base64(first.admin_password), 1, true))
    end)
  end)

  describe("restart", function()
    it("keeps state across a restart and exits 0 on SIGTERM", function()
      local s = H.start()
      local code, j = H.request(s, "POST", "/api/v1/provision",
        { subscription_id = "sub_keep", account_id = "acc_keep", tier = "free" },
        { Prefer = "wait=20" })
      assert.are.equal(200, code)
      assert.are.equal("running", j.status)
      assert.is_true(H.stop(s, "TERM"))
      assert.matches('"msg":"stopped"', H.log_text(s))
      local s2 = H.start({ dir = s.dir })
      local code2, st = H.request(s2, "GET", "/api/v1/status/sub_keep")
      assert.are.equal(200, code2)
      assert.are.equal("running", st.status)
      assert.are.equal(j.app_name, st.app_name)
      H.stop(s2)
    end)
  end)
end)

describe("API keys #integration", function()
  local srv
  local k1, k2 = "key-one-0123456789abcdef", "key-two-0123456789abcdef"

  setup(function()
    srv = H.start({ env = { PROVISIONER_API_KEYS = k1 .. "," .. k2 } })
  end)

  teardown(function()
    H.cleanup()
  end)

  it("refuses a missing or wrong key with 401", function()
    local code, j, _, h = H.request(srv, "GET", "/api/v1/tiers")
    assert.are.equal(401, code)
    assert.are.equal("unauthorized", j.error.code)
    assert.are.equal("Bearer", h["www-authenticate"])
    assert.are.equal(401, (H.request(srv, "GET", "/api/v1/tiers", nil, { Authorization = "Bearer " .. k1 .. "x" })))
    assert.are.equal(401, (H.request(srv, "GET", "/api/v1/tiers", nil, { Authorization = "Bearer " })))
  end)

  it("accepts every configured key, as Bearer or X-API-Key", function()
    assert.are.equal(200, (H.request(srv, "GET", "/api/v1/tiers", nil, { Authorization = "Bearer " .. k1 })))
    assert.are.equal(200, (H.request(srv, "GET", "/api/v1/tiers", nil, { Authorization = "Bearer " .. k2 })))
    assert.are.equal(200, (H.request(srv, "GET", "/api/v1/tiers", nil, { ["X-API-Key"] = k2 })))
  end)

  it("leaves the operational endpoints open", function()
    assert.are.equal(200, (H.request(srv, "GET", "/health")))
    assert.are.equal(200, (H.request(srv, "GET", "/metrics")))
  end)
end)

describe("command line #integration", function()
  it("prints the full plan with no secret", function()
    local code, out, err = H.run({ "plan", "--tier", "professional", "--subscription", "sub_123", "--matrix",
      "tuwunel" }, { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua", LOG_LEVEL = "ERROR" })
    assert.are.equal(0, code, err)
    local app = out:match("apps:create (mr%-sub123%-[a-z0-9]+)\n")
    assert.is_string(app, out)
    for _, want in ipairs({ "postgres:create " .. app .. "-db", "redis:create " .. app .. "-redis",
                            "apps:create " .. app .. "-matrix", "git:from-image " .. app .. "-matrix "
                              .. "ghcr.io/tulir/tuwunel:latest", "MINDROOM_ADMIN_PASSWORD=[REDACTED]" }) do
      assert.is_truthy(out:find(want, 1, true), want)
    end
    for line in out:gmatch("[^\n]+") do
      assert.is_truthy(line:match("^dokku %-%-quiet ") or line:match("^#"), line)
    end
  end)

  it("exits 2 on usage errors and 0 on --help", function()
    assert.are.equal(2, (H.run({ "plan", "--subscription", "sub_1" })))
    assert.are.equal(2, (H.run({ "frobnicate" })))
    assert.are.equal(2, (H.run({ "plan", "--tier", "free", "--subscription", "bad;id" },
      { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua" })))
    for _, c in ipairs({ "serve", "plan", "check", "tiers", "render", "version" }) do
      local code, out = H.run({ c, "--help" })
      assert.are.equal(0, code, c)
      assert.matches("usage: mrprov", out)
    end
    local code, out = H.run({ "--help" })
    assert.are.equal(0, code)
    assert.matches("commands:", out)
  end)

  it("parses each command's options once, in main.c's command table, before loading anything", function()
    -- LUA_DIR missing: anything that got as far as Lua would exit 1, not 2.
    local broken = { LUA_DIR = "/nonexistent" }
    for _, args in ipairs({ { "plan", "--tier", "free" }, { "plan", "--tier", "free", "--subscription" },
                            { "plan", "--tier=free", "--subscription=s", "--bogus" }, { "plan", "stray" },
                            { "plan", "--tier", "free", "--subscription", "s", "--json=yes" },
                            { "tiers", "--bogus" }, { "check", "x" }, { "serve", "x" }, { "version", "x" } }) do
      local code, _, err = H.run(args, broken)
      assert.are.equal(2, code, table.concat(args, " "))
      assert.matches("usage: mrprov " .. args[1], err)
    end
    local _, _, err = H.run({ "plan", "--tier", "free" }, broken)
    assert.matches("mrprov: %-%-subscription is required", err)
    -- --name=value and --name value are the same option; the flag is a flag.
    local env = { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua", LOG_LEVEL = "ERROR" }
    local code, out, err2 = H.run({ "plan", "--tier=starter", "--subscription=sub_eq", "--json" }, env)
    assert.are.equal(0, code, err2)
    local p = cjson.decode(out)
    assert.are.equal("starter", p.tier)
    assert.are.equal("sub_eq", p.subscription_id)
  end)

  it("prints versions", function()
    local code, out = H.run({ "version" })
    assert.are.equal(0, code)
    for _, lib in ipairs({ "mrprov", "lua", "libmicrohttpd", "libssh2", "libcurl", "sqlite" }) do
      assert.matches("\n?" .. lib .. " %d", out)
    end
  end)

  it("checks and lists the tiers", function()
    local env = { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua" }
    local code, out = H.run({ "check" }, env)
    assert.are.equal(0, code)
    assert.matches("tiers %(4%)", out)
    local code2, out2 = H.run({ "tiers", "--json" }, env)
    assert.are.equal(0, code2)
    assert.are.equal(4, #cjson.decode(out2))
  end)

  it("reports a broken tier file as file:line and exits 1", function()
    local dir = H.tmpdir()
    os.execute("cp " .. H.root .. "/tiers/*.lua " .. dir .. "/")
    local f = io.open(dir .. "/broken.lua", "w")
    f:write("return {\n  name = 'broken',\n  limits = { memory_mb = 512 \n")
    f:close()
    local code, _, err = H.run({ "check" }, { TIERS_DIR = dir, LUA_DIR = H.root .. "/lua" })
    assert.are.equal(1, code)
    assert.matches("broken%.lua:%d+:", err)
  end)

  it("renders the config.yaml of a tier: the same text a provision delivers (issue 14 item 3)", function()
    local lyaml = require "lyaml"
    local env = { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua", PROFILES_DIR = H.root .. "/profiles",
                  LOG_LEVEL = "ERROR" }
    local code, out, err = H.run({ "render", "--tier", "enterprise" }, env)
    assert.are.equal(0, code, err)
    local doc = lyaml.load(out)
    assert.is_table(doc.agents.orchestrator)
    assert.same({ "lobby", "research", "dev", "writing", "analysis", "planning" }, doc.agents.orchestrator.rooms)
    assert.are.equal("anthropic/claude-opus-4.1", doc.models[doc.router.model].id)
    assert.are.equal("openai/gpt-4.1", doc.models.gpt4.id)
    assert.are.equal("file", doc.memory.backend)
    assert.is_nil(doc.instance)
    -- Matrix variant and profile do not change it; --tier=... works too
    for _, args in ipairs({ { "render", "--tier", "enterprise", "--matrix", "synapse" },
                            { "render", "--tier=enterprise", "--matrix=tuwunel", "--profile=split" } }) do
      local c2, out2, err2 = H.run(args, env)
      assert.are.equal(0, c2, err2)
      assert.are.equal(out, out2)
    end
    -- clear errors: unknown tier, profile, Matrix server; --tier required
    local c3, _, e3 = H.run({ "render", "--tier", "gold" }, env)
    assert.are.equal(2, c3)
    assert.matches("unknown tier 'gold'; known tiers: enterprise, free, professional, starter", e3, 1, true)
    local c4, _, e4 = H.run({ "render", "--tier", "free", "--profile", "k8s" }, env)
    assert.are.equal(2, c4)
    assert.matches("unknown profile 'k8s'; known profiles: ", e4, 1, true)
    local c5, _, e5 = H.run({ "render", "--tier", "free", "--matrix", "dendrite" }, env)
    assert.are.equal(2, c5)
    assert.matches("--matrix: must be synapse or tuwunel", e5, 1, true)
    local c6, _, e6 = H.run({ "render" }, env)
    assert.are.equal(2, c6)
    assert.matches("--tier is required", e6, 1, true)
  end)

  it("refuses a tier naming a tool MindRoom does not have, at its file:line", function()
    local dir = H.tmpdir()
    os.execute("cp " .. H.root .. "/tiers/*.lua " .. dir .. "/")
    local f = assert(io.open(dir .. "/starter.lua", "r"))
    local src = f:read("a")
    f:close()
    f = assert(io.open(dir .. "/starter.lua", "w"))
    f:write((src:gsub('add_tools = { "duckduckgo"', 'add_tools = { "web_search"')))
    f:close()
    local code, _, err = H.run({ "check" }, { TIERS_DIR = dir, LUA_DIR = H.root .. "/lua" })
    assert.are.equal(1, code)
    assert.matches("starter%.lua:%d+: add_tools: unknown tool 'web_search'", err)
  end)

  it("stops on a bad setting with one line naming the variable", function()
    for var, value in pairs({ PORT = "80x", LOG_LEVEL = "LOUD", HOST = "0.0.0.0", BASE_DOMAIN = "bad domain;",
                              MINDROOM_BACKEND_IMAGE = "Bad Image" }) do
      local code, _, err = H.run({ "serve" }, { [var] = value, TIERS_DIR = H.root .. "/tiers",
                                                LUA_DIR = H.root .. "/lua", PORT = var == "PORT" and value or "0" })
      assert.are.equal(1, code, var)
      assert.matches(var == "HOST" and "PROVISIONER_API_KEYS" or var, err)
      local lines = select(2, err:gsub("\n", ""))
      assert.is_true(lines <= 2, err)
    end
  end)
end)

describe("SIGHUP reload #integration", function()
  teardown(function()
    H.cleanup()
  end)

  it("adds a dropped-in tier and refuses a broken one, keeping the old generation", function()
    local tiers = H.tmpdir()
    os.execute("cp " .. H.root .. "/tiers/*.lua " .. tiers .. "/")
    local s = H.start({ env = { TIERS_DIR = tiers } })
    local f = assert(io.open(tiers .. "/team.lua", "w"))
    f:write('return { name = "team", display_name = "Team", extends = "starter",\n'
      .. '  limits = { memory_mb = 1024, cpu = 0.75, storage_gb = 20, agents = 3, messages_per_day = 1000 } }\n')
    f:close()
    os.execute("kill -HUP " .. s.pid)
    local h = H.wait_for(s, "/health", function(j) return j.config_generation == 2 end)
    assert.are.equal(2, h.config_generation)
    local _, list = H.request(s, "GET", "/api/v1/tiers")
    local names = {}
    for _, t in ipairs(list.tiers) do
      names[t.name] = true
    end
    assert.is_true(names.team)
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_team", account_id = "acc_t", tier = "team" }, { Prefer = "wait=20" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status)

    f = assert(io.open(tiers .. "/team.lua", "w"))
    f:write('return { name = "team", display_name = "Team",\n  limits = { memory_mb = "lots" }\n')
    f:close()
    os.execute("kill -HUP " .. s.pid)
    local r = H.wait_for(s, "/ready", function(x) return x.checks.config_error ~= nil end)
    assert.matches("team%.lua:%d+:", r.checks.config_error)
    assert.are.equal(2, r.checks.config_generation)
    local _, again = H.request(s, "GET", "/api/v1/tiers")
    assert.are.equal(5, #again.tiers)
    local _, _, raw = H.request(s, "GET", "/metrics")
    assert.matches('mrprov_config_reloads_total{outcome="failure"} 1', raw, 1, true)
    assert.matches('mrprov_config_reloads_total{outcome="success"} 1', raw, 1, true)

    -- the reload runs mrprov check's refusals: a tool MindRoom does not have
    f = assert(io.open(tiers .. "/team.lua", "w"))
    f:write('return { name = "team", display_name = "Team", extends = "starter",\n  add_tools = { "calendar" } }\n')
    f:close()
    os.execute("kill -HUP " .. s.pid)
    r = H.wait_for(s, "/ready", function(x) return (x.checks.config_error or ""):find("calendar") ~= nil end)
    assert.matches("team%.lua:2: add_tools: unknown tool 'calendar'", r.checks.config_error)
    H.stop(s)
  end)

  it("builds a late worker state from the files of its generation, not from files edited since", function()
    -- Workers build their Lua state before their first job; files edited on
    -- disk without SIGHUP must not reach that state.
    local dir = H.tmpdir()
    os.execute("mkdir -p " .. dir .. "/tiers && cp " .. H.root .. "/tiers/*.lua " .. dir .. "/tiers/ && cp -r "
      .. H.root .. "/lua " .. dir .. "/lua")
    local s = H.start({ env = { TIERS_DIR = dir .. "/tiers", LUA_DIR = dir .. "/lua" } })
    for _, path in ipairs({ dir .. "/tiers/free.lua", dir .. "/lua/worker.lua", dir .. "/lua/engine.lua" }) do
      local f = assert(io.open(path, "a"))
      f:write("\nthis is not Lua (\n")
      f:close()
    end
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_late", account_id = "acc_l", tier = "free" }, { Prefer = "wait=20" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status)
    -- the edits are real: a reload reads them and is refused
    os.execute("kill -HUP " .. s.pid)
    local r = H.wait_for(s, "/ready", function(x) return x.checks.config_error ~= nil end)
    assert.matches("%.lua:%d+:", r.checks.config_error)
    assert.are.equal(1, r.checks.config_generation)
    H.stop(s)
  end)
end)
