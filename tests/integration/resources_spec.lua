-- Integration (issue 13 item 1): adding a resource is one file. A module
-- dropped into LUA_DIR/resources/ of a running server is planned after
-- SIGHUP, with no other file edited; one that does not keep the contract is
-- refused at reload. And a resumed job learns what its journaled steps did
-- to their apps from the journal's columns, not from the command text.
-- Dry-run transport (DOKKU_HOST unset).
local H = require "harness"

local function index_of(list, text)
  for i, l in ipairs(list) do
    if l == text then
      return i
    end
  end
end

local function copy_lua(dir)
  assert(os.execute("cp -r " .. H.sh_quote(H.root .. "/lua") .. " " .. H.sh_quote(dir .. "/lua")))
  return dir .. "/lua"
end

local function sql(db, text)
  assert(os.execute("sqlite3 -cmd '.timeout 5000' " .. H.sh_quote(db) .. " " .. H.sh_quote(text)))
end

describe("resource modules dropped in #integration", function()
  teardown(function()
    H.cleanup()
  end)

  it("plans a resource module added to LUA_DIR/resources/ after SIGHUP, and refuses a broken one", function()
    local dir = H.tmpdir()
    local lua_dir = copy_lua(dir)
    local s = H.start({ env = { LUA_DIR = lua_dir } })
    local req = { subscription_id = "sub_dropin", account_id = "acc_1", tier = "professional" }
    local code, p = H.request(s, "POST", "/api/v1/plan", req)
    assert.are.equal(200, code)
    for _, c in ipairs(p.commands) do
      assert.is_nil(c:find("checks:", 1, true), c)
    end

    -- one new file, nothing else edited
    assert(os.execute("cp " .. H.sh_quote(H.root .. "/tests/fixtures/resources/checks.lua") .. " "
      .. H.sh_quote(lua_dir .. "/resources/checks.lua")))
    os.execute("kill -HUP " .. s.pid)
    H.wait_for(s, "/health", function(j) return j.config_generation == 2 end)
    local code2, p2 = H.request(s, "POST", "/api/v1/plan", req)
    assert.are.equal(200, code2)
    local app = p2.app_name
    for _, role in ipairs({ "backend", "frontend" }) do
      local a = app .. "-" .. role
      local set = index_of(p2.commands, "dokku --quiet checks:set " .. a .. " wait-to-retire 60")
      assert.is_number(set, table.concat(p2.commands, "\n"))
      -- where its phase and order put it: before the app's deploy
      assert.is_true(set < index_of(p2.commands, "dokku --quiet git:from-image " .. a .. " mindroom/" .. role
        .. ":latest"))
      assert.are.same({ resource = "checks", target = a, command = p2.commands[set] }, p2.steps[set])
    end
    assert.are.equal(#p.commands + 2, #p2.commands)
    -- `mrprov check` lists it among the resources
    local ccode, out = H.run({ "check" }, { TIERS_DIR = H.root .. "/tiers", LUA_DIR = lua_dir })
    assert.are.equal(0, ccode)
    -- 12 shipped (issue 14 added zero_downtime, issue 15 processes) and the drop-in
    assert.matches("resources %(13%) from [^\n]*/resources:\n", out)
    assert.matches("\n  checks +phase 30, order 55\n", out)

    -- a job runs it, and the instance is then converged with it
    local pcode, j = H.request(s, "POST", "/api/v1/provision", req, { Prefer = "wait=20" })
    assert.are.equal(200, pcode)
    assert.are.equal("running", j.status)
    local _, again = H.request(s, "POST", "/api/v1/plan", req)
    assert.are.same({}, again.commands)

    -- a module that does not keep the contract: the reload is refused, the
    -- generation with checks.lua stays
    local src = H.read_file(H.root .. "/tests/fixtures/resources/checks.lua")
    src = src:gsub('type = "checks"', 'type = "broken"'):gsub("\nfunction M%.locks%(spec%)\n.-\nend\n", "\n")
    assert.is_nil(src:find("M.locks", 1, true))
    local f = assert(io.open(lua_dir .. "/resources/broken.lua", "w"))
    f:write(src)
    f:close()
    os.execute("kill -HUP " .. s.pid)
    local r = H.wait_for(s, "/ready", function(x) return x.checks.config_error ~= nil end)
    assert.matches("resources/broken.lua: M.locks must be a function", r.checks.config_error, 1, true)
    assert.are.equal(2, r.checks.config_generation)
    local _, still = H.request(s, "POST", "/api/v1/plan", { subscription_id = "sub_other", tier = "free" })
    assert.is_number(index_of(still.commands, "dokku --quiet checks:set " .. still.app_name
      .. "-backend wait-to-retire 60"))
    H.stop(s)
  end)

  it("resumes a job from what its journal says each step did to its app", function()
    local dir = H.tmpdir()
    local s = H.start({ dir = dir })
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_resume", account_id = "acc_1", tier = "professional" }, { Prefer = "wait=20" })
    assert.are.equal(200, code)
    assert.are.equal("running", j.status)
    local app = j.app_name
    H.stop(s)
    -- An update a crash cut short: its journal says the backend's step needs
    -- a restart and the frontend's does not, whatever the commands' text
    -- (a domains:set needs none; a config:set --no-restart would).
    local db = dir .. "/data/mrprov.db"
    sql(db, "INSERT INTO jobs (id, subscription_id, operation, state, request, created_at, started_at) VALUES "
      .. "('job_00c0ffee', 'sub_resume', 'update', 'running', '{}', '2026-01-01T00:00:00.000Z', "
      .. "'2026-01-01T00:00:00.000Z');"
      .. "INSERT INTO steps (job_id, seq, resource, target, command, state, restart, deploys) VALUES "
      .. "('job_00c0ffee', 1, 'domains', '" .. app .. "-backend', 'dokku --quiet domains:set " .. app
      .. "-backend api." .. app .. ".mindroom.chat', 'done', 1, 0),"
      .. "('job_00c0ffee', 2, 'config', '" .. app .. "-frontend', 'dokku --quiet config:set --encoded --no-restart "
      .. app .. "-frontend X=[set]', 'done', 0, 0);")
    s = H.start({ dir = dir })
    local job = H.wait_for(s, "/api/v1/jobs/job_00c0ffee", function(x) return x.state ~= "running"
      and x.state ~= "queued" end)
    assert.are.equal("succeeded", job.state)
    local cmds = {}
    for _, st in ipairs(job.steps) do
      cmds[#cmds + 1] = st.command
    end
    assert.are.same({ "dokku --quiet domains:set " .. app .. "-backend api." .. app .. ".mindroom.chat",
                      "dokku --quiet config:set --encoded --no-restart " .. app .. "-frontend X=[set]",
                      "dokku --quiet ps:restart " .. app .. "-backend" }, cmds)
    -- the restart is journaled as a start: a later round owes nothing
    local rows = H.sqlite_rows(db, "SELECT restart, deploys FROM steps WHERE job_id = 'job_00c0ffee' AND seq = 3")
    assert.are.same({ { restart = 0, deploys = 1 } }, rows)
    H.stop(s)
  end)
end)
