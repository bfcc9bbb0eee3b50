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
}

local WANT = {
  sub_loop = "instruction budget", sub_pcallloop = "instruction budget", sub_alloc = "memory limit",
  sub_exec = "execute", sub_io = "io", sub_require = "require", sub_global = "cannot set globals",
  sub_strlib = "read%-only",
  sub_other = "not one of this instance's apps",
}

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
    assert.matches("hooks %(11%)", out)
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
      assert.matches(WANT[id], st.error, nil, false)
      assert.matches("%.lua", st.error)
    end
    assert.is_nil(io.open("/tmp/mrprov-hook-escaped"))
    assert.are.equal(200, (H.request(srv, "GET", "/health")))
    local _, r = H.request(srv, "GET", "/ready")
    assert.is_true(r.ready)
  end)
end)
