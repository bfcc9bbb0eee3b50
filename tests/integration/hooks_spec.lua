-- Integration: per-customer hooks in the real binary, with the real sandbox
-- (instruction budget, memory cap, allowlisted environment).
local H = require "harness"
local D = require "dokku_harness"
local cjson = require "cjson"
local socket = require "socket"

local EVIL = {
  sub_loop = "return { desired = function() while true do end end }",
  sub_pcallloop = [[return { desired = function()
    while true do pcall(function() while true do end end) end
  end }]],
  sub_alloc = [[return { desired = function()
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end
  end }]],
  sub_exec = "return { desired = function() os.execute('touch /tmp/mrprov-hook-escaped') end }",
  sub_io = "return { desired = function() return io.open('/etc/passwd') end }",
  sub_require = "return { desired = function() return require('os') end }",
  sub_global = "return { desired = function() _G = nil end }",
  sub_strlib = "return { desired = function() string.rep = nil end }",
  sub_other = [[return { after = function(dokku)
    dokku.run({ "apps:destroy", "--force", "mr-victim-12345678" })
  end }]],
  -- one string.find that backtracks for ever, in C where no count hook fires
  sub_backtrack = [[return { desired = function()
    return string.rep("a", 5000):find(string.rep("a*", 30) .. "b")
  end }]],
  sub_gsub = [[return { desired = function()
    while true do pcall(string.gsub, ("a"):rep(3000), ("a-"):rep(20) .. "b", "") end
  end }]],
  -- C loops that allocate nothing: empty copies, nil moves
  sub_rep = [[return { desired = function()
    local s = ("").rep("", 2^60)
    error("rep gave " .. #s .. " bytes")
  end }]],
  sub_move = "return { desired = function() table.move({}, 1, 1e15, 1, {}) end }",
  -- few instructions, each a lot of work in C: the wall clock stops it
  sub_upper = [[return { desired = function()
    local s = ("x"):rep(2000000)
    while true do s = s:lower():upper() end
  end }]],
  sub_dump = "return { desired = function() return ('').dump(function() end) end }",
}

local WANT = {
  sub_loop = "instruction budget", sub_pcallloop = "instruction budget", sub_alloc = "memory limit",
  sub_exec = "execute", sub_io = "io", sub_require = "require", sub_global = "cannot set globals",
  sub_strlib = "read%-only",
  sub_other = "apps:destroy is not allowed in a hook",
  sub_leak = "leak %[secret:MINDROOM_ADMIN_PASSWORD%]",
  sub_steal = "must not be under mindroom%.chat other than",
  sub_backtrack = { "instruction budget", "time limit" }, sub_gsub = { "instruction budget", "time limit" },
  sub_rep = "rep gave 0 bytes", sub_move = { "instruction budget", "time limit" },
  sub_upper = "time limit of 5 seconds exceeded", sub_dump = "field 'dump'",
}

-- Hooks for issue 12: the admin password put into an error (item 3), a
-- domain of another instance under BASE_DOMAIN (item 9).
EVIL.sub_leak = [[return { desired = function(state)
  for _, a in ipairs(state.apps) do
    if a.env and a.env.MINDROOM_ADMIN_PASSWORD then
      error("leak " .. a.env.MINDROOM_ADMIN_PASSWORD .. " " .. a.env.MINDROOM_ADMIN_PASSWORD:upper())
    end
  end
end }]]
EVIL.sub_steal = [[return { desired = function(state)
  state.apps[3].domains = { "mr-victim-12345678.mindroom.chat" }
end }]]

-- The same domain from an account's hook for each of its subscriptions, and
-- a hook for account "shared1" (a subscription of that id must not get it).
local OTHERS = {
  ["account.acc_dup"] = [[return { desired = function(state)
    state.apps[3].domains = { "ai.dup.example" }
  end }]],
  ["account.shared1"] = [[return { desired = function(state)
    state.apps[3].domains = { "shared1.example" }
  end }]],
}

-- mrprov with a time limit of its own (a hook that stalls it must not stall the spec).
local function run_bounded(args, env)
  local parts = { "timeout", "120", "env" }
  for k, v in pairs(env) do
    parts[#parts + 1] = H.sh_quote(k .. "=" .. v)
  end
  parts[#parts + 1] = H.sh_quote(H.bin)
  for _, a in ipairs(args) do
    parts[#parts + 1] = H.sh_quote(a)
  end
  local p = io.popen(table.concat(parts, " ") .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")), out
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- top-level code of a hook or tier file that backtracks for ever
local STALL = 'local _ = ("a"):rep(5000):find(("a*"):rep(30) .. "b")\n'

describe("hooks #integration", function()
  local srv, dir
  local passwords = {}

  setup(function()
    dir = H.tmpdir()
    os.execute("cp " .. H.root .. "/hooks/examples/*.lua " .. dir .. "/")
    for id, src in pairs(EVIL) do
      local f = assert(io.open(dir .. "/subscription." .. id .. ".lua", "w"))
      f:write(src)
      f:close()
    end
    for name, src in pairs(OTHERS) do
      local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
      f:write(src)
      f:close()
    end
    srv = H.start({ env = { HOOKS_DIR = dir, WORKERS = "3" } })
  end)

  teardown(function()
    H.cleanup()
  end)

  it("lists the hooks in mrprov check", function()
    local code, out = H.run({ "check" }, { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua",
                                           HOOKS_DIR = dir })
    assert.are.equal(0, code)
    assert.matches("hooks %(21%)", out)
    assert.matches("subscription%.sub_worker1%s+%S+ desired%(%) after%(%)", out)
    assert.matches("account%.acc_acme%s+%S+ desired%(%)", out)
  end)

  -- issue 12 item 11
  it("refuses a hook file named in the old, ambiguous form, saying how to name it", function()
    local old = H.tmpdir()
    local f = assert(io.open(old .. "/acc_acme.lua", "w"))
    f:write("return {}")
    f:close()
    local code, out, err = H.run({ "check" }, { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua",
                                                HOOKS_DIR = old })
    assert.are_not.equal(0, code, out)
    assert.matches("acc_acme.lua:1: a hook file is named subscription.<id>.lua or account.<id>.lua; rename this "
      .. "one to subscription.acc_acme.lua or account.acc_acme.lua", err, 1, true)
  end)

  it("does not give a subscription the hook of an account with the same id", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "shared1", account_id = "acc_plain", tier = "starter" }, { Prefer = "wait=30" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status, cjson.encode(j))
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    for _, s in ipairs(job.steps) do
      assert.is_nil(s.command:find("shared1.example", 1, true), s.command)
    end
    -- while the account's own subscriptions get it
    code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_of_shared1", account_id = "shared1", tier = "starter" }, { Prefer = "wait=30" })
    assert.are.equal(200, code)
    local _, job2 = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local all = {}
    for _, s in ipairs(job2.steps) do
      all[#all + 1] = s.command
    end
    assert.matches("domains:set " .. j.app_name .. "-frontend shared1.example", table.concat(all, "\n"), 1, true)
  end)

  it("shows a hook in the plan", function()
    local code, out = H.run({ "plan", "--tier", "starter", "--subscription", "sub_worker1" },
      { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua", HOOKS_DIR = dir })
    assert.are.equal(0, code)
    assert.matches("# hook [^\n]*subscription%.sub_worker1%.lua: desired%(%)", out)
    assert.matches("apps:create mr%-subwork%-[a-z0-9]+%-worker", out)
    assert.matches("resource:limit %-%-memory 512m %-%-cpu 0%.5 mr%-subwork%-[a-z0-9]+%-worker", out)
    assert.matches("after%(%) runs", out)
  end)

  it("provisions an extra worker app and runs after() as journaled steps", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_worker1", account_id = "acc_1", tier = "starter" },
      { Prefer = "wait=30" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status, cjson.encode(j))
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local last = job.steps[#job.steps]
    assert.are.equal("hook", last.resource)
    assert.are.equal("dokku --quiet config:set --no-restart " .. j.app_name .. "-worker WORKER_BOOTSTRAPPED=[set]",
      last.command)
    local found = false
    for _, s in ipairs(job.steps) do
      found = found or s.command == "dokku --quiet apps:create " .. j.app_name .. "-worker"
    end
    assert.is_true(found)
  end)

  it("applies an account's hook: custom domain and extra environment", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_acme1", account_id = "acc_acme", tier = "enterprise" }, { Prefer = "wait=30" })
    assert.are.equal(200, code)
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local all = {}
    for _, s in ipairs(job.steps) do
      all[#all + 1] = s.command
    end
    all = table.concat(all, "\n")
    assert.is_truthy(all:find("domains:set " .. j.app_name .. "-frontend ai.acme.example", 1, true), all)
    assert.is_truthy(all:find("ACME_SSO_ISSUER=", 1, true))
  end)

  it("contains every hostile hook with a clear error; the service and other jobs carry on", function()
    local ids = {}
    for id in pairs(EVIL) do
      ids[#ids + 1] = id
      local code, j = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = id, account_id = "acc_1", tier = "free" })
      assert.are.equal(202, code)
      passwords[id] = j.admin_password
    end
    -- a well-behaved provision at the same time
    local code, ok = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_fine", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, code)
    assert.are.equal("running", ok.status)
    for _, id in ipairs(ids) do
      local st = H.wait_for(srv, "/api/v1/status/" .. id, function(s)
        return s.status == "failed" or s.status == "running"
      end, 60)
      assert.are.equal("failed", st.status, id)
      local want, found = WANT[id], false
      for _, w in ipairs(type(want) == "table" and want or { want }) do
        found = found or st.error:find(w) ~= nil
      end
      assert.is_true(found, id .. ": " .. st.error)
      assert.matches("%.lua", st.error)
    end
    assert.is_nil(io.open("/tmp/mrprov-hook-escaped"))
    assert.are.equal(200, (H.request(srv, "GET", "/health")))
    local _, r = H.request(srv, "GET", "/ready")
    assert.is_true(r.ready)
  end)

  -- issue 12 item 3: the hook saw a placeholder, so neither the password nor
  -- a transformed copy of it (upper-cased: no redaction by value catches it)
  -- is anywhere.
  it("leaves no trace of the admin password when a hook raises it in an error", function()
    local pw = assert(passwords.sub_leak)
    local secrets = { pw, pw:upper(), H.base64(pw), H.base64(pw:upper()) }
    local texts = { log = H.log_text(srv) }
    local _, st, raw = H.request(srv, "GET", "/api/v1/status/sub_leak")
    texts.status = raw
    assert.matches("leak [secret:MINDROOM_ADMIN_PASSWORD] [SECRET:MINDROOM_ADMIN_PASSWORD]", st.error, 1, true)
    texts.job = select(3, H.request(srv, "GET", "/api/v1/jobs/" .. st.job.id))
    local p = io.popen("sqlite3 -cmd '.timeout 5000' " .. H.sh_quote(srv.dir .. "/data/mrprov.db") .. " .dump")
    texts.store = p:read("a")
    p:close()
    assert.matches("INSERT INTO", texts.store)
    for where, text in pairs(texts) do
      for _, secret in ipairs(secrets) do
        assert.is_nil(text:find(secret, 1, true), "the admin password (or a form of it) in the " .. where)
      end
    end
  end)

  -- issue 12 item 9: custom domains and hook domains are unique across
  -- instances (same name, parent or subdomain), also for two jobs at once.
  it("gives a domain to one instance only", function()
    local function provision(sub, extra)
      local body = { subscription_id = sub, account_id = "acc_1", tier = "enterprise" }
      for k, v in pairs(extra or {}) do
        body[k] = v
      end
      return H.request(srv, "POST", "/api/v1/provision", body)
    end
    assert.are.equal(202, (provision("sub_dom1", { custom_domain = "shop.acme-one.example" })))
    for _, d in ipairs({ "shop.acme-one.example", "api.shop.acme-one.example", "acme-one.example",
                         "SHOP.ACME-ONE.EXAMPLE" }) do
      local c2, e = provision("sub_dom2", { custom_domain = d })
      assert.are.equal(409, c2, d)
      assert.are.equal("custom_domain", e.error.field)
      assert.matches("served by another instance", e.error.message)
    end
    -- an update cannot take it either; a free domain is fine
    local c3, j3 = provision("sub_dom2", { custom_domain = "acme-two.example" })
    assert.are.equal(202, c3)
    H.wait_for(srv, "/api/v1/status/sub_dom2", function(st) return st.status == "running" end, 30)
    local c4, e4 = H.request(srv, "PUT", "/api/v1/update",
      { subscription_id = "sub_dom2", app_name = j3.app_name, custom_domain = "x.shop.acme-one.example" })
    assert.are.equal(409, c4)
    assert.are.equal("custom_domain", e4.error.field)
    H.wait_for(srv, "/api/v1/status/sub_dom1", function(st) return st.status == "running" end, 30)
    -- two jobs at once whose hook sets the same domain: one gets it
    assert.are.equal(202, (H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_dup1", account_id = "acc_dup", tier = "starter" })))
    assert.are.equal(202, (H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_dup2", account_id = "acc_dup", tier = "starter" })))
    local states, errors = {}, {}
    for _, sub in ipairs({ "sub_dup1", "sub_dup2" }) do
      local st = H.wait_for(srv, "/api/v1/status/" .. sub, function(s)
        return s.status == "failed" or s.status == "running"
      end, 60)
      states[#states + 1] = st.status
      errors[#errors + 1] = st.error
    end
    table.sort(states)
    assert.are.same({ "failed", "running" }, states)
    local err = errors[1] ~= cjson.null and errors[1] or errors[2]
    assert.matches("domain ai.dup.example is already served by another instance", err, 1, true)
  end)

  it("refuses a hook file whose top level stalls: at start, and on SIGHUP keeping the old one", function()
    local bad = H.tmpdir()
    write(bad .. "/subscription.sub_stall.lua", STALL .. "return {}\n")
    local code, out = run_bounded({ "check" }, { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua",
                                                HOOKS_DIR = bad })
    assert.are.equal(1, code, out)
    assert.matches("subscription%.sub_stall%.lua:1: instruction budget of %d+ exceeded", out)
    code, out = run_bounded({ "serve" }, H.base_env(H.tmpdir(), { HOOKS_DIR = bad }))
    assert.are.equal(1, code, out)
    assert.matches("mrprov: [^\n]*subscription%.sub_stall%.lua:1: instruction budget of %d+ exceeded", out)

    write(dir .. "/subscription.sub_stall.lua", STALL .. "return {}\n")
    os.execute("kill -HUP " .. srv.pid)
    local r = H.wait_for(srv, "/ready", function(x) return x.checks.config_error ~= nil end, 60)
    assert.matches("subscription%.sub_stall%.lua:1: instruction budget of %d+ exceeded", r.checks.config_error)
    assert.are.equal(1, r.checks.config_generation)
    os.remove(dir .. "/subscription.sub_stall.lua")
    local c2, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_after_hup", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=60" })
    assert.are.equal(200, c2)
    assert.are.equal("running", j.status)
  end)

  it("refuses a tier file whose top level stalls", function()
    local tiers = H.tmpdir()
    os.execute("cp " .. H.root .. "/tiers/*.lua " .. tiers .. "/")
    write(tiers .. "/stall.lua", STALL .. 'return { name = "stall", display_name = "Stall", extends = "free" }\n')
    local code, out = run_bounded({ "check" }, { TIERS_DIR = tiers, LUA_DIR = H.root .. "/lua", HOOKS_DIR = dir })
    assert.are.equal(1, code, out)
    assert.matches("stall%.lua:1: instruction budget of %d+ exceeded", out)
  end)
end)

-- issue 12 item 8, through sshd and the Dokku simulator: every refusal class
-- is refused before anything reaches Dokku, and the allowed commands run.
local SCOPE_HOOK = [[
return { after = function(dokku, ctx)
  local b = ctx.app_name .. "-backend"
  local other = "mr-other-12345678"
  local own = dokku.storage()[1]
  local refused = {
    { "storage:mount", b, "/:/host" },
    { "storage:mount", b, own:gsub("[^/]+$", other) .. ":/data" },
    { "storage:mount", b, own .. "/../" .. other .. ":/data" },
    { "docker-options:add", b, "deploy,run", "--privileged" },
    { "docker-options:add", b, "deploy,run", "-v", "/var/run/docker.sock:/var/run/docker.sock" },
    { "apps:clone", b, b .. "2" },
    { "nginx:stop", b },
    { "domains:set-global", b },
    { "letsencrypt:cron-job", b, "--remove" },
    { "config:set", b, "--app", other .. "-backend", "X=1" },
    { "ps:restart", "--app", other .. "-backend", b },
    { "ps:restart", "--trace", b },
    { "ps:stop", b, "--force" },
    { "config:set", b, "MINDROOM_ADMIN_PASSWORD=mine" },
    { "postgres:info", ctx.app_name .. "-db" },
  }
  for _, argv in ipairs(refused) do
    local ok, err = pcall(dokku.run, argv)
    if ok then
      error("allowed: " .. table.concat(argv, " "))
    end
    if not tostring(err):find("dokku.run refused: " .. argv[1], 1, true) then
      error("an unclear refusal: " .. tostring(err))
    end
  end
  local r = dokku.run({ "config:set", "--no-restart", b, "HOOK_REFUSED=" .. #refused })
  assert(r.exit == 0, r.error)
  r = dokku.run({ "storage:mount", b, own .. "/hook:/app/hook" })
  assert(r.exit == 0, r.error)
  r = dokku.run({ "ps:restart", b })
  assert(r.exit == 0, r.error)
end }
]]

describe("the hooks' Dokku handle against the simulator #integration", function()
  local h, srv

  setup(function()
    h = D.start()
    local dir = H.tmpdir()
    local f = assert(io.open(dir .. "/subscription.sub_scope.lua", "w"))
    f:write(SCOPE_HOOK)
    f:close()
    srv = H.start({ env = D.mrprov_env(h, { HOOKS_DIR = dir }) })
  end)

  teardown(function()
    H.cleanup()
    D.stop_all()
  end)

  it("refuses each class of command before it reaches Dokku and runs the allowed ones", function()
    local since = #D.log(h)
    local code, j = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_scope", account_id = "acc_1", tier = "free" })
    assert.are.equal(202, code)
    local deadline = socket.gettime() + 60
    local st
    repeat
      socket.sleep(0.1)
      st = select(2, H.request(srv, "GET", "/api/v1/status/sub_scope"))
    until st.status == "running" or st.status == "failed" or socket.gettime() > deadline
    assert.are.equal("running", st.status, tostring(st.error))
    local b = j.app_name .. "-backend"
    local sent = {}
    for i, e in ipairs(D.log(h)) do
      if i > since then
        sent[#sent + 1] = table.concat(e.argv, " ")
      end
    end
    local all = table.concat(sent, "\n")
    assert.matches("config:set --no-restart " .. b .. " HOOK_REFUSED=15", all, 1, true)
    assert.matches("storage:mount " .. b .. " /var/lib/dokku/data/storage/" .. j.app_name .. "/hook:/app/hook", all,
      1, true)
    assert.matches("ps:restart " .. b, all, 1, true)
    for _, never in ipairs({ "/:/host", "mr-other-12345678", "docker-options", "apps:clone", "nginx:", "set-global",
                             "cron-job", "--app ", "--trace", "--force", "postgres:info", "=mine" }) do
      local at = all:find(never, 1, true)
      assert.is_nil(at, never .. " reached Dokku: " .. all:sub(at or 1, (at or 1) + 80))
    end
    -- and on the server: the hook's mount is there, and no other
    local s = D.state(h)
    local mounts = {}
    for _, o in ipairs(s.apps[b].docker_options.deploy) do
      if o:match("^%-v ") then
        mounts[#mounts + 1] = o
      end
    end
    assert.are.same({ "-v /var/lib/dokku/data/storage/" .. j.app_name .. ":/app/data",
                      "-v /var/lib/dokku/data/storage/" .. j.app_name .. "/hook:/app/hook" }, mounts)
  end)
end)
