-- Integration: per-customer hooks in the real binary, with the real sandbox
-- (instruction budget, memory cap, allowlisted environment).
local H = require "harness"
local cjson = require "cjson"

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
  sub_other = "not one of this instance's apps",
  sub_backtrack = { "instruction budget", "time limit" }, sub_gsub = { "instruction budget", "time limit" },
  sub_rep = "rep gave 0 bytes", sub_move = { "instruction budget", "time limit" },
  sub_upper = "time limit of 5 seconds exceeded", sub_dump = "field 'dump'",
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

  setup(function()
    dir = H.tmpdir()
    os.execute("cp " .. H.root .. "/hooks/examples/*.lua " .. dir .. "/")
    for id, src in pairs(EVIL) do
      local f = assert(io.open(dir .. "/" .. id .. ".lua", "w"))
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
    assert.matches("hooks %(17%)", out)
    assert.matches("sub_worker1%s+%S+ desired%(%) after%(%)", out)
  end)

  it("shows a hook in the plan", function()
    local code, out = H.run({ "plan", "--tier", "starter", "--subscription", "sub_worker1" },
      { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua", HOOKS_DIR = dir })
    assert.are.equal(0, code)
    assert.matches("# hook [^\n]*sub_worker1%.lua: desired%(%)", out)
    assert.matches("apps:create mr%-subwork%-[a-z0-9]+%-worker", out)
    assert.matches("resource:limit %-%-memory 512m %-%-cpu 0%.5 mr%-subwork%-[a-z0-9]+%-worker", out)
    assert.matches("after%(%) runs", out)
  end)

  it("provisions an extra worker app and runs after() as journaled steps", function()
    local code, j = H.request(srv, "POST", "/api/v1/provision", { subscription_id = "sub_worker1", tier = "starter" },
      { Prefer = "wait=30" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status, cjson.encode(j))
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
    local last = job.steps[#job.steps]
    assert.are.equal("hook", last.resource)
    assert.are.equal("dokku --quiet config:set --no-restart " .. j.app_name .. "-worker WORKER_BOOTSTRAPPED=1",
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
      local code = H.request(srv, "POST", "/api/v1/provision", { subscription_id = id, tier = "free" })
      assert.are.equal(202, code)
    end
    -- a well-behaved provision at the same time
    local code, ok = H.request(srv, "POST", "/api/v1/provision", { subscription_id = "sub_fine", tier = "free" },
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

  it("refuses a hook file whose top level stalls: at start, and on SIGHUP keeping the old one", function()
    local bad = H.tmpdir()
    write(bad .. "/sub_stall.lua", STALL .. "return {}\n")
    local code, out = run_bounded({ "check" }, { TIERS_DIR = H.root .. "/tiers", LUA_DIR = H.root .. "/lua",
                                                HOOKS_DIR = bad })
    assert.are.equal(1, code, out)
    assert.matches("sub_stall%.lua:1: instruction budget of %d+ exceeded", out)
    code, out = run_bounded({ "serve" }, H.base_env(H.tmpdir(), { HOOKS_DIR = bad }))
    assert.are.equal(1, code, out)
    assert.matches("mrprov: [^\n]*sub_stall%.lua:1: instruction budget of %d+ exceeded", out)

    write(dir .. "/sub_stall.lua", STALL .. "return {}\n")
    os.execute("kill -HUP " .. srv.pid)
    local r = H.wait_for(srv, "/ready", function(x) return x.checks.config_error ~= nil end, 60)
    assert.matches("sub_stall%.lua:1: instruction budget of %d+ exceeded", r.checks.config_error)
    assert.are.equal(1, r.checks.config_generation)
    os.remove(dir .. "/sub_stall.lua")
    local c2, j = H.request(srv, "POST", "/api/v1/provision", { subscription_id = "sub_after_hup", tier = "free" },
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
