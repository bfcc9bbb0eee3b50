-- Integration: the real binary provisioning through a real OpenSSH sshd on
-- loopback whose forced command is the Dokku simulator — the way real Dokku
-- is reached. Checks what lands on the (simulated) server, convergence,
-- parallelism, retries, rollback and backups.
local H = require "harness"
local D = require "dokku_harness"
local cjson = require "cjson"
local socket = require "socket"

local mrprov_env = D.mrprov_env

-- Registers setup/teardown for a describe block: a simulator behind sshd
-- and mrprov against it; use(h, srv) hands both to the block's locals.
local function simulated(use, extra)
  setup(function()
    local h = D.start()
    local env = mrprov_env(h, type(extra) == "function" and extra(h) or extra)
    use(h, H.start({ env = env }))
  end)
  teardown(function()
    H.cleanup()
    D.stop_all()
  end)
end

local mutating = D.mutating

-- The instance's objects on the server are exactly those of the free tier,
-- each listed once (no duplicate from a retried or resumed create).
local function assert_free_instance(h, app)
  local s = D.state(h)
  local function mine(list)
    local out = {}
    for _, n in ipairs(list or {}) do
      if n == app or n:sub(1, #app + 1) == app .. "-" then out[#out + 1] = n end
    end
    table.sort(out)
    return out
  end
  assert.are.same({ app, app .. "-backend", app .. "-frontend" }, mine(s.global.apps))
  assert.are.same({ app .. "-db" }, mine(s.global.services.postgres))
  assert.are.same({ app .. "-redis" }, mine(s.global.services.redis))
  assert.are.same({ app .. "-backend" }, s.services.postgres[app .. "-db"].links)
  assert.are.same({ app .. "-backend" }, s.services.redis[app .. "-redis"].links)
  assert.are.same({ app .. ".mindroom.chat" }, s.apps[app .. "-frontend"].domains)
  assert.are.same({ "api." .. app .. ".mindroom.chat" }, s.apps[app .. "-backend"].domains)
  for _, a in ipairs({ app .. "-backend", app .. "-frontend" }) do
    assert.is_true(s.apps[a].deploy.deployed, a .. " not deployed")
  end
end

local function wait_job(srv, sub, job_id, timeout)
  return H.wait_for(srv, "/api/v1/status/" .. sub, function(s)
    return s.job ~= cjson.null and s.job.id == job_id and (s.job.state == "succeeded" or s.job.state == "failed")
  end, timeout or 60)
end

describe("provisioning over SSH #integration", function()
  local h, srv

  simulated(function(hh, ss) h, srv = hh, ss end)

  local app, password, first_job

  it("is ready once Dokku answered, and records the host key on first use", function()
    local code, r = H.request(srv, "GET", "/ready")
    assert.are.equal(200, code, cjson.encode(r))
    assert.are.equal("ok", r.checks.dokku)
    -- the original service's /health field says the same
    local _, hh = H.request(srv, "GET", "/health")
    assert.is_true(hh.dokku_connected)
    local kh = H.read_file(h.dir .. "/mrprov_known_hosts")
    assert.matches("%[127%.0%.0%.1%]:" .. h.port .. " ssh%-ed25519 ", kh)
  end)

  it("provisions every object of SPEC §4 with the values decoded correctly", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision", {
      subscription_id = "sub_ssh1", account_id = "acc_1", tier = "professional", enable_matrix = true,
    })
    assert.are.equal(202, code)
    app, password, first_job = j.app_name, j.admin_password, j.job_id
    local st = wait_job(srv, "sub_ssh1", first_job)
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    assert.are.equal("running", st.status)
    assert.is_false(st.dry_run)

    local s = D.state(h)
    for _, a in ipairs({ app, app .. "-backend", app .. "-frontend", app .. "-matrix" }) do
      assert.is_table(s.apps[a], "missing app " .. a)
    end
    assert.is_table(s.services.postgres[app .. "-db"])
    assert.is_table(s.services.redis[app .. "-redis"])
    local be = s.apps[app .. "-backend"]
    assert.are.equal("professional", be.env.MINDROOM_TIER)
    assert.are.equal(password, be.env.MINDROOM_ADMIN_PASSWORD)
    assert.are.equal("acc_1", be.env.MINDROOM_ACCOUNT_ID)
    assert.matches("^agents:", be.env.MINDROOM_CONFIG_YAML)
    assert.matches("^postgres://", be.env.DATABASE_URL)
    assert.matches("^redis://", be.env.REDIS_URL)
    assert.are.same({ "api." .. app .. ".mindroom.chat" }, be.domains)
    local step_log = select(2, H.request(srv, "GET", "/api/v1/jobs/" .. first_job))
    local all = {}
    for _, stp in ipairs(step_log.steps) do
      all[#all + 1] = stp.command .. "\n" .. (stp.output ~= cjson.null and stp.output or "")
    end
    all = table.concat(all, "\n")
    assert.is_nil(all:find(password, 1, true), "the password leaked into the step log")
    assert.is_nil(H.log_text(srv):find(password, 1, true), "the password leaked into the log")
  end)

  it("sends no mutating command when nothing changed", function()
    local before = #D.log(h)
    local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_ssh1", app_name = app })
    assert.are.equal(202, code)
    local st = wait_job(srv, "sub_ssh1", j.job_id)
    assert.are.equal("succeeded", st.job.state)
    assert.are.same({}, mutating(h, before))
    assert.is_true(#D.log(h) > before, "the update probed the server")
  end)

  it("sends only the differences of a tier upgrade and restarts each changed app once", function()
    local before = #D.log(h)
    local code, j = H.request(srv, "PUT", "/api/v1/update",
      { subscription_id = "sub_ssh1", app_name = app, tier = "enterprise" })
    assert.are.equal(202, code)
    local st = wait_job(srv, "sub_ssh1", j.job_id)
    assert.are.equal("succeeded", st.job.state)
    local m = mutating(h, before)
    local kinds = {}
    for _, line in ipairs(m) do
      local cmd = line:match("^%-%-quiet (%S+)") or line:match("^(%S+)")
      kinds[cmd] = (kinds[cmd] or 0) + 1
      assert.is_nil(line:find("apps:create", 1, true))
    end
    assert.are.equal(2, kinds["resource:limit"], cjson.encode(m))
    assert.are.equal(2, kinds["ps:restart"], cjson.encode(m))
    assert.is_truthy(kinds["config:set"])
    local s = D.state(h)
    assert.are.equal("enterprise", s.apps[app .. "-backend"].env.MINDROOM_TIER)
    assert.are.equal(password, s.apps[app .. "-backend"].env.MINDROOM_ADMIN_PASSWORD)
  end)

  it("deprovisions: backups streamed to BACKUP_DIR first, then unlink, destroy services, destroy apps", function()
    local before = #D.log(h)
    local code, j = H.request(srv, "DELETE", "/api/v1/deprovision",
      { subscription_id = "sub_ssh1", app_name = app, backup_data = true }, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("deprovisioned", j.status)
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local files = job.result.backup.files
    -- the two services' exports and a gzipped tar of each app's storage
    -- directory (the backend's data; the Matrix server's)
    local by_ext = {}
    for _, f in ipairs(files) do
      assert.is_true(f.size > 0)
      local data = assert(H.read_file(f.path))
      assert.are.equal(f.size, #data)
      local ext = f.path:match("%.(tar%.gz)$") or f.path:match("%.(dump)$")
      by_ext[ext] = (by_ext[ext] or 0) + 1
      if ext == "tar.gz" then
        local p = io.popen("tar -tzf " .. H.sh_quote(f.path) .. " >/dev/null 2>&1 && echo ok")
        assert.are.equal("ok\n", p:read("a"), f.path .. " is a readable tar.gz")
        p:close()
      end
    end
    assert.are.same({ dump = 2, ["tar.gz"] = 2 }, by_ext)
    local order = {}
    for i, e in ipairs(D.log(h)) do
      if i > before and e.mutating ~= nil then
        order[#order + 1] = table.concat(e.argv, " ")
      end
    end
    local joined = table.concat(order, "\n")
    local function pos(p)
      return assert(joined:find(p, 1, true), "missing " .. p .. " in\n" .. joined)
    end
    assert.is_true(pos("postgres:export") < pos("postgres:unlink"))
    assert.is_true(pos("redis:export") < pos("redis:unlink"))
    assert.is_true(pos("postgres:unlink") < pos("postgres:destroy"))
    assert.is_true(pos("redis:destroy") < pos("apps:destroy --force " .. app .. "-backend"))
    -- the backend is stopped, then its data directory read, before anything is removed
    assert.is_true(pos("ps:stop " .. app .. "-backend") < pos("run --no-tty " .. app .. "-backend tar"))
    assert.is_true(pos("run --no-tty " .. app .. "-backend tar -C /app/data -czf - .") < pos("postgres:unlink"))
    local s = D.state(h)
    assert.is_nil(s.apps[app .. "-backend"])
    assert.is_nil(s.services.postgres[app .. "-db"])
  end)
end)

-- issue 12 items 17 and 18, against the simulator modelling Dokku v0.38.27
-- (godotenv v1.5.1 ENV files) behind a real sshd (whose kernel refuses an
-- SSH_ORIGINAL_COMMAND over 128 KiB).
describe("large and Dokku 0.38 environments over SSH #integration", function()
  local h, srv
  setup(function()
    h = D.start({ settings = { version = "current" } })
    local hooks_dir = H.tmpdir()
    -- hook files are named `subscription.<id>.lua` where the shipped
    -- examples are (a tree with kind-prefixed names), else `<id>.lua`
    local prefixed = H.read_file(H.root .. "/hooks/examples/account.acc_acme.lua") ~= nil
    local f = assert(io.open(hooks_dir .. "/" .. (prefixed and "subscription." or "") .. "sub_hook1.lua", "w"))
    f:write([[return { after = function(dokku, ctx)
      dokku.run({ "config:set", "--no-restart", ctx.app_name .. "-backend", "HOOK_PIN=0042" })
    end }]])
    f:close()
    srv = H.start({ env = mrprov_env(h, { HOOKS_DIR = hooks_dir }) })
  end)
  teardown(function()
    H.cleanup()
    D.stop_all()
  end)

  local app
  -- n distinct values of 15000 bytes (20000 in base64): four fit one request body
  local function values(prefix, n)
    local t = {}
    for i = 1, n do
      t[prefix .. i] = string.rep(string.char(64 + #prefix * 4 + i), 15000)
    end
    return t
  end

  local function update(cu)
    local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_big1", app_name = app,
                                                              config_updates = cu })
    assert.are.equal(202, code, cjson.encode(j))
    return wait_job(srv, "sub_big1", j.job_id)
  end

  it("splits a change over the SSH and kernel limits into config:set commands of 32 KiB, one restart", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_big1", account_id = "007", tier = "free" }, { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("running", j.status)
    app = j.app_name
    -- four values whose config:set fails (so they stay pending), then four
    -- more: the next run sets all eight, 160 KB of base64
    D.set_faults(h, { { match = "config:set .*%-backend", action = "fail", exit = 1, stderr = " !     held" } })
    assert.are.equal("failed", update(values("A", 4)).job.state)
    D.set_faults(h, {})
    local before = #D.log(h)
    local st = update(values("B", 4))
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    local sets, restarts, last_set, restart_at = 0, 0, 0, 0
    for i, line in ipairs(mutating(h, before)) do
      if line:find("config:set", 1, true) then
        sets = sets + 1
        last_set = i
        assert.is_true(#("dokku " .. line) <= 32 * 1024, #line .. " bytes in one command")
      elseif line:find("ps:restart " .. app .. "-backend", 1, true) then
        restarts = restarts + 1
        restart_at = i
      end
    end
    assert.is_true(sets >= 5, sets .. " config:set commands")
    assert.are.equal(1, restarts)
    assert.is_true(restart_at > last_set, "the restart comes after the last config:set")
    local env = D.state(h).apps[app .. "-backend"].env
    for k, v in pairs(values("A", 4)) do
      assert.are.equal(v, env[k], k)
    end
    for k, v in pairs(values("B", 4)) do
      assert.are.equal(v, env[k], k)
    end
  end)

  it("sends nothing on a repeat although Dokku 0.38 stored the account id 007 as 7", function()
    assert.are.equal("7", D.state(h).apps[app .. "-backend"].env.MINDROOM_ACCOUNT_ID)
    local before = #D.log(h)
    local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_big1", app_name = app },
      { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("running", j.status)
    assert.are.same({}, mutating(h, before))
  end)

  it("refuses values Dokku 0.38 would change, naming the key, and caps the instance's config_updates", function()
    local before = #D.log(h)
    for k, v in pairs({ PIN = "0042", OFFSET = "+5", WINDOWS_DIR = "C:\\", QUOTED = '"x"' }) do
      local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_big1", app_name = app,
                                                                config_updates = { [k] = v } })
      assert.are.equal(422, code, k)
      assert.are.equal("config_updates." .. k, j.error.field)
      assert.matches("Dokku 0%.38", j.error.message)
    end
    assert.are.equal(before, #D.log(h), "nothing reached Dokku")
    -- 8 * 15000 bytes are set; 8 more are within 256 KiB, 2 after that are not
    assert.are.equal("succeeded", update(values("CC", 4)).job.state)
    assert.are.equal("succeeded", update(values("DD", 4)).job.state)
    local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_big1", app_name = app,
                                                              config_updates = values("EE", 2) })
    assert.are.equal(422, code, cjson.encode(j))
    assert.are.equal("config_updates", j.error.field)
    assert.matches("at most 262144 %(256 KiB%) in all", j.error.message)
    local _, inst = H.request(srv, "GET", "/api/v1/status/sub_big1")
    assert.are.equal("running", inst.status, "a refused update changes nothing")
  end)

  it("refuses the same values in a hook's after() config:set, naming the key", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_hook1", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code, cjson.encode(j))
    assert.are.equal("failed", j.status)
    assert.matches("after%(%): .*dokku%.run refused: config:set: HOOK_PIN: would be stored changed by Dokku 0%.38",
      j.error)
    for _, e in ipairs(D.log(h)) do
      assert.is_nil(table.concat(e.argv, " "):find("HOOK_PIN", 1, true), "the command reached Dokku")
    end
  end)
end)

describe("failures over SSH #integration", function()
  local h, srv

  simulated(function(hh, ss) h, srv = hh, ss end)

  it("runs independent apps in parallel, never two commands on one app at once", function()
    D.set_faults(h, { { match = "apps:create", action = "delay", ms = 300 } })
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_par", account_id = "acc_1", tier = "starter", enable_matrix = true },
      { Prefer = "wait=60" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status)
    D.set_faults(h, {})
    local spans = {}
    for _, e in ipairs(D.log(h)) do
      local name = e.argv[#e.argv]
      if e.argv[2] == "apps:create" or e.argv[1] == "apps:create" then
        spans[#spans + 1] = { e.t, e.t + e.ms / 1000 }
      end
      assert(name)
    end
    assert.is_true(#spans >= 4)
    local overlap = false
    for a = 1, #spans do
      for b = a + 1, #spans do
        if spans[a][1] < spans[b][2] and spans[b][1] < spans[a][2] then
          overlap = true
        end
      end
    end
    assert.is_true(overlap, "apps:create ran strictly one after another")
    -- per app, no two commands overlap
    local by_app = {}
    for _, e in ipairs(D.log(h)) do
      for _, a in ipairs(e.argv) do
        if a:match("^mr%-") and e.mutating then
          by_app[a] = by_app[a] or {}
          table.insert(by_app[a], { e.t, e.t + e.ms / 1000 })
        end
      end
    end
    for name, list in pairs(by_app) do
      table.sort(list, function(x, y) return x[1] < y[1] end)
      for i = 2, #list do
        assert.is_true(list[i][1] >= list[i - 1][2] - 0.005, "overlapping commands on " .. name)
      end
    end
  end)

  it("retries a transient failure (Dokku's deploy lock) and says what it waits for", function()
    D.set_faults(h, { { match = "git:from%-image %S+%-frontend", action = "fail", exit = 1, times = 1,
                        stderr = " !     mr-x-frontend currently has a deploy lock in place. Exiting..." } })
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_retry", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status, cjson.encode(j))
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local failed = 0
    for _, s in ipairs(job.steps) do
      if s.state == "failed" then
        failed = failed + 1
        assert.matches("deploy lock", s.error)
      end
    end
    assert.are.equal(1, failed)
    assert.matches("job waiting", H.log_text(srv))
  end)

  it("rolls back what a failed provision created and records the cause", function()
    D.set_faults(h, { { match = "git:from%-image %S+%-backend", action = "fail", exit = 1,
                        stderr = " !     Image pull failed: manifest unknown" } })
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_fail", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code)
    assert.are.equal("failed", j.status)
    assert.is_false(j.success)
    local _, st = H.request(srv, "GET", "/api/v1/status/sub_fail")
    assert.are.equal("failed", st.status)
    assert.matches("manifest unknown", st.error)
    local s = D.state(h)
    for name in pairs(s.apps) do
      assert.is_nil(name:find(j.app_name, 1, true), "left behind: " .. name)
    end
    assert.is_nil(s.services.postgres[j.app_name .. "-db"])
    assert.is_nil(s.services.redis[j.app_name .. "-redis"])
    D.set_faults(h, {})
    -- a repeat resumes the same instance
    local code2, j2 = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_fail", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code2)
    assert.are.equal(j.app_name, j2.app_name)
    assert.are.equal("running", j2.status)
  end)

  it("refuses a host whose key does not match known_hosts", function()
    local kh = h.dir .. "/wrong_known_hosts"
    local f = assert(io.open(kh, "w"))
    f:write("[127.0.0.1]:" .. h.port
      .. " ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ5Y2xvbmVkLWtleS1mb3ItdGVzdHMtMDAwMDAwMDA=\n")
    f:close()
    local s2 = H.start({ env = mrprov_env(h, { DOKKU_KNOWN_HOSTS = kh }) })
    local code, r = H.request(s2, "GET", "/ready")
    assert.are.equal(503, code)
    assert.matches("does not match", table.concat(r.reasons, " "))
    H.stop(s2)
  end)

  it("refuses a host with no known_hosts entry unless DOKKU_HOST_KEY_TOFU is set, and says what to do", function()
    local kh = h.dir .. "/empty_known_hosts"
    local s2 = H.start({ env = mrprov_env(h, { DOKKU_KNOWN_HOSTS = kh, DOKKU_HOST_KEY_TOFU = "false" }) })
    local code, r = H.request(s2, "GET", "/ready")
    assert.are.equal(503, code)
    local why = table.concat(r.reasons, " ")
    assert.matches("no key recorded for 127%.0%.0%.1:" .. h.port, why)
    assert.matches("ssh%-keyscan", why)
    assert.matches("DOKKU_HOST_KEY_TOFU=true", why)
    assert.matches("ssh%-ed25519 SHA256:", why)
    assert.is_nil(H.read_file(kh))
    H.stop(s2)
  end)

  it("connects with a recorded ed25519 key, without TOFU, although the server also offers ECDSA", function()
    local kh = h.dir .. "/ed25519_known_hosts"
    local recorded = H.read_file(h.known_hosts)
    local f = assert(io.open(kh, "w"))
    f:write(recorded)
    f:close()
    local s2 = H.start({ env = mrprov_env(h, { DOKKU_KNOWN_HOSTS = kh, DOKKU_HOST_KEY_TOFU = "false" }) })
    local code, r = H.request(s2, "GET", "/ready")
    assert.are.equal(200, code, cjson.encode(r))
    assert.are.equal(recorded, H.read_file(kh))
    H.stop(s2)
  end)
end)

describe("the connection under stress #integration", function()
  local h, srv

  simulated(function(hh, ss) h, srv = hh, ss end, { DOKKU_COMMAND_TIMEOUT = "2" })

  it("times out a command that never returns, retries, and completes", function()
    D.set_faults(h, { { match = "domains:set %S+%-frontend", action = "hang", times = 1 } })
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_hang", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=90" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status, cjson.encode(j))
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local timed_out
    for _, s in ipairs(job.steps) do
      if s.state == "failed" then
        timed_out = s
      end
    end
    assert.is_table(timed_out)
    assert.matches("domains:set", timed_out.command)
    assert.matches("timed out after 2 s", timed_out.error)
    -- the end state is whole: the hung command's effect is there, once
    assert.are.equal("succeeded", job.state)
    assert_free_instance(h, j.app_name)
  end)
end)

-- Its own server: the deploy below is held longer than the 2 s command
-- timeout above (the default DOKKU_COMMAND_TIMEOUT applies here).
describe("the connection lost mid-deploy #integration", function()
  local h, srv

  simulated(function(hh, ss) h, srv = hh, ss end)

  it("completes a job when sshd is stopped mid-job and restarted", function()
    -- The first deploy is held 60 s, so stopping sshd surely cuts it
    -- however slow this machine is. The simulator logs a command only when
    -- it ends, so its log cannot show a deploy in progress; the app's
    -- recorded deploy lock, taken before the build, does.
    D.set_faults(h, { { match = "git:from%-image", action = "delay", ms = 60000, times = 1 } })
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_sshd", account_id = "acc_1", tier = "free" })
    assert.are.equal(202, code)
    local locked = H.eventually("a deploy in progress", function()
      for name, a in pairs(D.state(h).apps) do
        if (name == j.app_name or name:sub(1, #j.app_name + 1) == j.app_name .. "-") and a.deploy_lock then
          return name
        end
      end
    end, 30)
    D.stop_sshd(h) -- ends the sessions and the simulator's held deploy with them
    socket.sleep(1.5) -- an outage, not a wait for something
    D.start_sshd(h)
    D.set_faults(h, {})
    local st = H.wait_for(srv, "/api/v1/status/sub_sshd", function(s)
      return s.job ~= cjson.null and s.job.id == j.job_id and s.job.state ~= "running"
    end, 90)
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    assert.are.equal("running", st.status)
    assert.matches("connection", H.log_text(srv))
    -- the held deploy is the step that was cut, and the job went on
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local cut
    for _, s in ipairs(job.steps) do
      if s.state == "failed" and s.command:find("git:from-image " .. locked, 1, true) then
        cut = s
      end
    end
    assert.is_table(cut, cjson.encode(job.steps))
    -- the end state is whole: every object once, the interrupted deploy
    -- done, its app's deploy lock (held by the killed build) gone
    assert_free_instance(h, j.app_name)
    local app = D.state(h).apps[locked]
    assert.is_true(app.deploy.deployed)
    assert.is_nil(app.deploy_lock)
  end)
end)

describe("reload under load #integration", function()
  local h, srv, tiers

  simulated(function(hh, ss) h, srv = hh, ss end, function()
    tiers = H.tmpdir()
    os.execute("cp " .. H.root .. "/tiers/*.lua " .. tiers .. "/")
    return { TIERS_DIR = tiers }
  end)

  it("finishes a running job on its old generation; new jobs use the new one", function()
    D.set_faults(h, { { match = "git:from%-image", action = "delay", ms = 1500 } })
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_gen", account_id = "acc_1", tier = "free" })
    assert.are.equal(202, code)
    H.wait_for(srv, "/api/v1/status/sub_gen", function(s) return s.job.state == "running" end, 20)
    -- free tier gets more memory in the new generation
    local path = tiers .. "/free.lua"
    local src = H.read_file(path)
    local f = assert(io.open(path, "w"))
    f:write((src:gsub("memory_mb = 256", "memory_mb = 320")))
    f:close()
    os.execute("kill -HUP " .. srv.pid)
    H.wait_for(srv, "/health", function(x) return x.config_generation == 2 end, 10)
    local st = H.wait_for(srv, "/api/v1/status/sub_gen", function(s) return s.job.state == "succeeded" end, 60)
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    assert.are.equal(1, job.generation)
    assert.are.equal(256, st.limits.memory_mb)
    D.set_faults(h, {})
    local code2, j2 = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "sub_gen", app_name = j.app_name },
      { Prefer = "wait=60" })
    assert.are.equal(200, code2)
    local _, job2 = H.request(srv, "GET", "/api/v1/jobs/" .. j2.job_id)
    assert.are.equal(2, job2.generation)
    local s = D.state(h)
    assert.are.equal("320m", s.apps[j.app_name .. "-backend"].resources["_default_.limit.memory"])
  end)

  it("fails no request while reloading repeatedly", function()
    local out = H.tmpdir() .. "/codes"
    local loop = "for i in $(seq 300); do curl -s -o /dev/null -w '%{http_code}\\n' " .. srv.base
      .. "/api/v1/tiers; done > " .. out .. " 2>&1 &"
    os.execute("sh -c " .. H.sh_quote(loop))
    for _ = 1, 8 do
      os.execute("kill -HUP " .. srv.pid)
      socket.sleep(0.15)
    end
    local deadline = socket.gettime() + 60
    local codes
    repeat
      socket.sleep(0.2)
      codes = H.read_file(out) or ""
    until select(2, codes:gsub("\n", "")) >= 300 or socket.gettime() > deadline
    local n, bad = 0, {}
    for c in codes:gmatch("%d+") do
      n = n + 1
      if c ~= "200" then
        bad[#bad + 1] = c
      end
    end
    assert.are.equal(300, n)
    assert.are.same({}, bad)
    local _, hh = H.request(srv, "GET", "/health")
    assert.is_true(hh.config_generation >= 9)
  end)
end)

-- Run against both modelled Dokku releases (they differ in ports:report,
-- letsencrypt/ports triggers and the storage plugin's implementation).
for _, version in ipairs({ "0.35.20", "current" }) do
  describe("issue 12: what an update leaves on Dokku " .. version .. " #integration", function()
    local h, srv, tiers
    local IMG = { backend = "mindroom/backend:7", frontend = "mindroom/frontend:7",
                  tuwunel = "ghcr.io/tulir/tuwunel:7", synapse = "matrixdotorg/synapse:7" }

    -- the simulator's settings for this release, plus extra
    local function settings(extra)
      local t = { version = version }
      for k, v in pairs(extra or {}) do t[k] = v end
      D.settings(h, t)
    end

    simulated(function(hh, ss) h, srv = hh, ss; settings() end, function()
      tiers = H.tmpdir()
      os.execute("cp " .. H.root .. "/tiers/*.lua " .. tiers .. "/")
      return { TIERS_DIR = tiers, MINDROOM_BACKEND_IMAGE = IMG.backend, MINDROOM_FRONTEND_IMAGE = IMG.frontend,
               TUWUNEL_IMAGE = IMG.tuwunel, SYNAPSE_IMAGE = IMG.synapse }
    end)

    -- A request answered once its job is done.
    local function sync(method, body)
      local path = method == "POST" and "/api/v1/provision" or "/api/v1/update"
      local code, j = H.request(srv, method, path, body, { Prefer = "wait=60" })
      assert.are.equal(200, code, cjson.encode(j))
      assert.are.equal("running", j.status, cjson.encode(j))
      return j
    end

    -- mrprov's commands (sent with --quiet) logged after entry since.
    local function sent(since)
      local out = {}
      for i, e in ipairs(D.log(h)) do
        if i > since and e.argv[1] == "--quiet" then
          out[#out + 1] = { line = table.concat(e.argv, " ", 2), exit = e.exit, mutating = e.mutating }
        end
      end
      return out
    end

    -- A name in a Lua pattern.
    local function esc(name)
      return (name:gsub("%p", "%%%0"))
    end

    local function first_at(list, pattern)
      for i, c in ipairs(list) do
        if c.line:find(pattern) then
          return i
        end
      end
    end

    -- The mutating lines of a command list, for failure messages.
    local function shown(list)
      local out = {}
      for _, c in ipairs(list) do
        if c.mutating then out[#out + 1] = c.line:sub(1, 120) .. " -> " .. tostring(c.exit) end
      end
      return table.concat(out, "\n")
    end

    it("a deploy the ps:rebuild fallback made is not made again by the next update (item 15)", function()
      local j = sync("POST", { subscription_id = "sub_lock", account_id = "acc_1", tier = "free" })
      local fe = j.app_name .. "-frontend"
      -- an operator deploys another image by hand ...
      local code, _, err = D.ssh(h, "git:from-image " .. fe .. " mindroom/frontend:hotfix")
      assert.are.equal(0, code, err)
      -- ... and starts a rebuild that holds the app's deploy lock for a while
      settings({ deploy_ms = 1500 })
      os.execute(D.ssh_argv(h) .. " -- " .. D.quote("ps:rebuild " .. fe) .. " </dev/null >/dev/null 2>&1 &")
      H.eventually("the rebuild to hold the deploy lock", function()
        return D.state(h).apps[fe].deploy_lock ~= nil
      end, 15)
      settings()
      local before = #D.log(h)
      sync("PUT", { subscription_id = "sub_lock", app_name = j.app_name })
      local cmds = sent(before)
      -- Dokku's sequence: git:from-image committed the image, then found the
      -- deploy lock taken; the retry said "No changes detected" and the
      -- fallback ps:rebuild deployed it
      local lost = first_at(cmds, "^git:from%-image " .. esc(fe) .. " " .. esc(IMG.frontend))
      assert.is_truthy(lost, shown(cmds))
      assert.are.equal(1, cmds[lost].exit)
      local rebuilt
      for i, c in ipairs(cmds) do
        if c.line == "ps:rebuild " .. fe and c.exit == 0 then rebuilt = i end
      end
      assert.is_truthy(rebuilt, shown(cmds))
      local app = D.state(h).apps[fe]
      assert.are.equal(IMG.frontend, app.git_image)
      assert.are.equal("mindroom/frontend:hotfix", app.deploy.source_metadata, "Dokku's deploy source is stale")
      -- the next update deploys nothing
      local before2 = #D.log(h)
      sync("PUT", { subscription_id = "sub_lock", app_name = j.app_name })
      for _, c in ipairs(sent(before2)) do
        assert.is_nil(c.line:find("git:from-image", 1, true), c.line)
        assert.is_nil(c.line:find("ps:rebuild", 1, true), c.line)
        assert.is_false(c.mutating, c.line)
      end
    end)

    it("maps port 80 to the Matrix and backend servers' ports (item 22)", function()
      -- the images EXPOSE their ports: Dokku detects http:P:P, nothing on 80
      settings({ exposed_ports = { [IMG.tuwunel] = { 8008 }, [IMG.synapse] = { 8008 },
                                        [IMG.backend] = { 8765 } } })
      local j = sync("POST", { subscription_id = "sub_mx", account_id = "acc_1", tier = "professional",
                               enable_matrix = true, matrix_type = "tuwunel" })
      local mx, be = j.app_name .. "-matrix", j.app_name .. "-backend"
      local _, detected = D.ssh(h, "ports:report " .. mx .. " --ports-map-detected")
      assert.are.equal("http:8008:8008\n", detected)
      local cmds = sent(0)
      local set = first_at(cmds, "^ports:set " .. esc(mx) .. " http:80:8008$")
      assert.is_truthy(set, shown(cmds))
      assert.is_true(set < first_at(cmds, "^letsencrypt:enable " .. esc(mx)))
      -- and the certificate added https:443 next to it (TriggerPostCertsUpdate)
      local code, map = D.ssh(h, "ports:report " .. mx .. " --ports-map")
      assert.are.equal(0, code)
      assert.are.equal("http:80:8008 https:443:8008\n", map)
      assert.are.equal("http:80:8765 https:443:8765\n", select(2, D.ssh(h, "ports:report " .. be .. " --ports-map")))
      -- converged: no further ports:set
      local before = #D.log(h)
      sync("PUT", { subscription_id = "sub_mx", app_name = j.app_name })
      for _, c in ipairs(sent(before)) do
        assert.is_false(c.mutating, c.line)
      end
    end)

    it("switching Matrix from tuwunel to synapse, then off, leaves nothing of the old server (item 20)", function()
      local app = "mr-sub_mx"
      for a in pairs(D.state(h).apps) do
        if a:find("-matrix$") then app = a:sub(1, -8) end
      end
      local mx = app .. "-matrix"
      local base = "/var/lib/dokku/data/storage/" .. mx
      local s = D.state(h).apps[mx]
      assert.are.same({ base .. ":/var/lib/tuwunel" }, s.mounts)
      assert.is_string(s.env.TUWUNEL_SERVER_NAME)
      sync("PUT", { subscription_id = "sub_mx", app_name = app, matrix_type = "synapse" })
      s = D.state(h).apps[mx]
      assert.are.same({ base .. ":/data" }, s.mounts)
      for k in pairs(s.env) do
        assert.is_nil(k:find("^TUWUNEL_"), k)
      end
      assert.are.equal("matrix." .. app .. ".mindroom.chat", s.env.SYNAPSE_SERVER_NAME)
      assert.are.equal(IMG.synapse, s.git_image)
      assert.are.equal("http:80:8008 https:443:8008\n", select(2, D.ssh(h, "ports:report " .. mx .. " --ports-map")))
      -- and back: the synapse variables go
      sync("PUT", { subscription_id = "sub_mx", app_name = app, matrix_type = "tuwunel" })
      s = D.state(h).apps[mx]
      assert.are.same({ base .. ":/var/lib/tuwunel" }, s.mounts)
      for k in pairs(s.env) do
        assert.is_nil(k:find("^SYNAPSE_"), k)
      end
      -- off: the app goes with its mounts and environment; the data directory stays
      sync("PUT", { subscription_id = "sub_mx", app_name = app, enable_matrix = false })
      local st = D.state(h)
      assert.is_nil(st.apps[mx])
      assert.is_table(st.global.storage[mx])
      assert.are.equal("", st.apps[app .. "-backend"].env.MINDROOM_MATRIX_URL)
    end)

    it("requests a certificate for a changed domain after domains:set (item 16)", function()
      local j = sync("POST", { subscription_id = "sub_tls", account_id = "acc_1", tier = "enterprise",
                               custom_domain = "old.example.org" })
      local fe = j.app_name .. "-frontend"
      assert.are.equal("true\n", select(2, D.ssh(h, "letsencrypt:active " .. fe)))
      local before = #D.log(h)
      sync("PUT", { subscription_id = "sub_tls", app_name = j.app_name, custom_domain = "new.example.org" })
      local cmds = sent(before)
      local set = first_at(cmds, "^domains:set " .. esc(fe) .. " new%.example%.org$")
      local enable = first_at(cmds, "^letsencrypt:enable " .. esc(fe) .. "$")
      assert.is_truthy(set, shown(cmds))
      assert.is_truthy(enable, shown(cmds))
      assert.is_true(set < enable)
      assert.is_true(first_at(cmds, "^domains:set " .. esc(j.app_name) .. "%-backend api%.new%.example%.org$")
        < first_at(cmds, "^letsencrypt:enable " .. esc(j.app_name) .. "%-backend$"))
      local app = D.state(h).apps[fe]
      assert.are.same({ "new.example.org" }, app.letsencrypt.cert_domains)
      assert.are.equal("true\n", select(2, D.ssh(h, "letsencrypt:active " .. fe)))
    end)

    it("refuses a cpu_limit Dokku would get as 0 (item 19)", function()
      local code, j = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = "sub_tiny", account_id = "acc_1", tier = "enterprise", limits = { cpu_limit = 1e-300 } })
      assert.are.equal(422, code, cjson.encode(j))
      assert.are.equal("limits.cpu_limit", j.error.field)
    end)

    it("mounts no directory Dokku did not create (item 21)", function()
      -- Dokku's DOKKU_LIB_ROOT is not the root INSTANCE_DATA_BASE names
      settings({ lib_root = "/opt/dokku" })
      local code, j = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = "sub_root", account_id = "acc_1", tier = "free" },
        { Prefer = "wait=60" })
      settings()
      assert.are.equal(200, code, cjson.encode(j))
      local _, st = H.request(srv, "GET", "/api/v1/status/sub_root")
      assert.are.equal("failed", st.job.state, cjson.encode(st))
      local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. st.job.id)
      local failed
      for _, stp in ipairs(job.steps) do
        if stp.state == "failed" then failed = stp end
      end
      assert.matches("storage:ensure%-directory", failed.command)
      assert.matches("did not create /var/lib/dokku/data/storage/" .. esc(j.app_name)
        .. " %(INSTANCE_DATA_BASE must be", failed.error)
      for _, e in ipairs(D.log(h)) do
        assert.is_nil(table.concat(e.argv, " "):find("storage:mount " .. j.app_name, 1, true))
      end
    end)

    -- last: it changes the free tier for the rest of this block
    it("clears limits the tier no longer sets (item 19)", function()
      local j = sync("POST", { subscription_id = "sub_lim", account_id = "acc_1", tier = "free" })
      local be = j.app_name .. "-backend"
      assert.are.equal("256m", D.state(h).apps[be].resources["_default_.limit.memory"])
      local path = tiers .. "/free.lua"
      local src = H.read_file(path)
      local f = assert(io.open(path, "w"))
      f:write((src:gsub("memory_mb = 256, cpu = 0%.25, ", "")))
      f:close()
      local gen = select(2, H.request(srv, "GET", "/health")).config_generation
      os.execute("kill -HUP " .. srv.pid)
      H.wait_for(srv, "/health", function(x) return x.config_generation == gen + 1 end, 10)
      local before = #D.log(h)
      sync("PUT", { subscription_id = "sub_lim", app_name = j.app_name })
      local cmds = sent(before)
      assert.is_truthy(first_at(cmds, "^resource:limit %-%-memory clear %-%-cpu clear " .. esc(be) .. "$"),
        shown(cmds))
      local code, out = D.ssh(h, "resource:report " .. be .. " --format json")
      assert.are.equal(0, code)
      assert.are.equal("{}\n", out)
    end)
  end)
end
