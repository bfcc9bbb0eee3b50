-- Integration: graceful shutdown (SPEC §7 "Graceful"). The real binary
-- provisions through a real sshd whose forced command is the Dokku
-- simulator; SIGTERM arrives mid-job. Checks the exit code and time against
-- SHUTDOWN_TIMEOUT, the checkpoint in the log, the journal left behind, and
-- that the next start resumes the job to `running` without repeating a
-- mutating command that already succeeded and with one set of objects.
-- Also: a command that outlasts the bound, new connections refused while
-- draining, and the outbox's last delivery round before exit.
local H = require "harness"
local D = require "dokku_harness"
local SB = require "supabase_harness"
local cjson = require "cjson"
local socket = require "socket"

local q = H.sh_quote

local procs = {}

-- Starts `mrprov serve` in dir (same env as harness.start) so that its exit
-- code is recorded: {pid, dir, log, base, rc_file}.
local function start(dir, env)
  env = H.base_env(dir, env)
  local n = #procs + 1
  local s = { dir = dir, log = dir .. "/serve-" .. n .. ".log", rc_file = dir .. "/serve-" .. n .. ".rc",
              pid_file = dir .. "/serve-" .. n .. ".pid" }
  local parts = { "cd", q(dir), "&&", "env" }
  for k, v in pairs(env) do
    parts[#parts + 1] = q(k .. "=" .. v)
  end
  parts[#parts + 1] = q(H.bin)
  parts[#parts + 1] = "serve"
  local inner = table.concat(parts, " ") .. " 2>" .. q(s.log) .. " & echo $! >" .. q(s.pid_file) ..
    "; wait $!; echo $? >" .. q(s.rc_file)
  os.execute("sh -c " .. q(inner) .. " >/dev/null 2>&1 &")
  local deadline = socket.gettime() + 20
  while socket.gettime() < deadline do
    local text = H.read_file(s.log) or ""
    s.pid = s.pid or tonumber(H.read_file(s.pid_file) or "")
    local port = text:match('"msg":"listening".-"port":(%d+)')
    if port and s.pid then
      s.port = tonumber(port)
      s.base = "http://127.0.0.1:" .. port
      procs[#procs + 1] = s
      return s
    end
    if H.read_file(s.rc_file) then
      error("mrprov exited during start-up:\n" .. text)
    end
    socket.sleep(0.05)
  end
  error("mrprov did not start within 20 s:\n" .. (H.read_file(s.log) or ""))
end

-- Sends SIGTERM; waits for the exit; returns exit code, seconds taken.
local function terminate(s, limit)
  local t0 = socket.gettime()
  os.execute("kill -TERM " .. s.pid)
  local deadline = t0 + (limit or 60)
  while socket.gettime() < deadline do
    local rc = H.read_file(s.rc_file)
    if rc and rc:match("%d") then
      s.pid = nil
      return tonumber(rc:match("%d+")), socket.gettime() - t0
    end
    socket.sleep(0.02)
  end
  local lines = {}
  for line in (H.read_file(s.log) or ""):gmatch("[^\n]+") do
    if not line:find('"level":"DEBUG"', 1, true) then
      lines[#lines + 1] = line
    end
  end
  error("mrprov did not exit within " .. (limit or 60) .. " s; its log:\n" ..
    table.concat(lines, "\n", math.max(1, #lines - 30)))
end


local function wait_job(s, sub, job_id, timeout)
  return H.wait_for(s, "/api/v1/status/" .. sub, function(st)
    return st.job ~= cjson.null and st.job.id == job_id and (st.job.state == "succeeded" or st.job.state == "failed")
  end, timeout or 60)
end

local function joined(e)
  return table.concat(e.argv, " ")
end

-- Mutating commands of the log, from entry first on: the ones that exited 0
-- as a set, and all of them in order.
local function mutating(h, first)
  local ok, all = {}, {}
  for i, e in ipairs(D.log(h)) do
    if i >= (first or 1) and e.mutating and not D.idempotent_prep(joined(e)) then
      all[#all + 1] = joined(e)
      if e.exit == 0 then
        ok[joined(e)] = true
      end
    end
  end
  return ok, all
end

-- The apps and services the simulator holds: exactly one instance's set.
local function assert_one_set(h, app)
  local st = D.state(h)
  local apps = {}
  for name in pairs(st.apps) do
    apps[#apps + 1] = name
  end
  table.sort(apps)
  assert.are.same({ app, app .. "-backend", app .. "-frontend" }, apps)
  local pg, rd = {}, {}
  for name in pairs(st.services.postgres) do
    pg[#pg + 1] = name
  end
  for name in pairs(st.services.redis) do
    rd[#rd + 1] = name
  end
  assert.are.same({ app .. "-db" }, pg)
  assert.are.same({ app .. "-redis" }, rd)
end

local function cleanup()
  for _, s in ipairs(procs) do
    if s.pid then
      os.execute("kill -KILL " .. s.pid .. " 2>/dev/null")
    end
  end
  procs = {}
  H.cleanup()
  D.stop_all()
end

describe("graceful shutdown over SSH #integration", function()
  local h, dir, env
  setup(function()
    h = D.start()
    dir = H.tmpdir()
    env = D.mrprov_env(h, { SHUTDOWN_TIMEOUT = "10" })
  end)
  teardown(cleanup)

  it("stops a provision at a checkpoint, exits 0 at once, and the next start finishes it", function()
    -- every command takes 300 ms, so the job is surely mid-way
    D.set_faults(h, { { match = ".", action = "delay", ms = 300 } })
    local s = start(dir, env)
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_term1", account_id = "acc_1", tier = "professional" })
    assert.are.equal(202, code)
    H.eventually("three mutating commands", function()
      local n = 0
      for _ in pairs((mutating(h))) do
        n = n + 1
      end
      return n >= 3
    end)
    local rc, secs = terminate(s, 30)
    assert.are.equal(0, rc)
    -- one wave (at most a few 300 ms commands) finishes; nothing waits for the bound
    assert.is_true(secs < 5, "took " .. secs .. " s")
    local text = H.read_file(s.log)
    assert.matches('"msg":"job checkpointed for shutdown"', text)
    assert.is_nil(text:find("giving it up", 1, true))
    assert.matches('"msg":"stopped"', text)
    -- no command started after the stop request: nothing runs on the server now
    local n_at_exit = #D.log(h)
    socket.sleep(0.8)
    assert.are.equal(n_at_exit, #D.log(h), "a command ran after the exit")

    local db = dir .. "/data/mrprov.db"
    local job = H.sqlite_rows(db, "SELECT state, steps_done, waiting_for FROM jobs WHERE id = '" .. j.job_id .. "'")[1]
    assert.are.equal("queued", job.state)
    assert.is_true(job.steps_done >= 3)
    assert.matches("shutdown", job.waiting_for)
    local inst = H.sqlite_rows(db, "SELECT status FROM instances WHERE subscription_id = 'sub_term1'")[1]
    assert.are.equal("provisioning", inst.status)
    local done_before = mutating(h)
    local resume_from = #D.log(h) + 1

    D.set_faults(h, {})
    local t0 = socket.gettime()
    local s2 = start(dir, env)
    local st = wait_job(s2, "sub_term1", j.job_id, 60)
    local resume_s = socket.gettime() - t0
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    assert.are.equal("running", st.status)
    local _, after = mutating(h, resume_from)
    assert.is_true(#after > 0, "the resumed job sent nothing")
    for _, c in ipairs(after) do
      assert.is_nil(done_before[c], "repeated a mutating command that had succeeded: " .. c)
    end
    assert_one_set(h, j.app_name)
    print(string.format("# shutdown took %.2f s; resume to running took %.2f s", secs, resume_s))
    local rc2 = terminate(s2, 30)
    assert.are.equal(0, rc2)
  end)

  it("gives up a command that outlasts SHUTDOWN_TIMEOUT, exits 0 within it, and resumes", function()
    D.reset(h)
    local d2 = H.tmpdir()
    local e2 = D.mrprov_env(h, { SHUTDOWN_TIMEOUT = "3" })
    -- the deploy of the backend hangs until its SSH session goes away
    D.set_faults(h, { { match = "git:from%-image %S+%-backend", action = "hang" } })
    local s = start(d2, e2)
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_term2", account_id = "acc_1", tier = "starter" })
    assert.are.equal(202, code)
    H.eventually("the hanging deploy", function()
      for _, e in ipairs(D.log(h)) do
        if e.fault == "hang" then
          return true
        end
      end
    end)
    local rc, secs = terminate(s, 30)
    assert.are.equal(0, rc)
    assert.is_true(secs < 3 + 1, "took " .. secs .. " s with SHUTDOWN_TIMEOUT=3")
    assert.is_true(secs > 1.5, "did not wait for the command (" .. secs .. " s)")
    local text = H.read_file(s.log)
    assert.matches("giving it up", text)
    assert.matches('"msg":"dokku command given up for shutdown"', text)
    assert.matches('"msg":"job checkpointed for shutdown"', text)
    assert.is_nil(text:find("did not stop", 1, true))
    local db = d2 .. "/data/mrprov.db"
    local job = H.sqlite_rows(db, "SELECT state FROM jobs WHERE id = '" .. j.job_id .. "'")[1]
    assert.are.equal("queued", job.state)
    local ic = H.sqlite_rows(db, "PRAGMA integrity_check")[1]
    assert.are.equal("ok", ic.integrity_check)
    -- the given-up step stays 'running' (as after a crash) and is re-planned
    local running = H.sqlite_rows(db,
      "SELECT command FROM steps WHERE job_id = '" .. j.job_id .. "' AND state = 'running'")
    assert.are.equal(1, #running)
    assert.matches("git:from%-image", running[1].command)

    local done_before = mutating(h)
    local resume_from = #D.log(h) + 1
    D.set_faults(h, {})
    local s2 = start(d2, e2)
    local st = wait_job(s2, "sub_term2", j.job_id, 60)
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    assert.are.equal("running", st.status)
    local _, after = mutating(h, resume_from)
    for _, c in ipairs(after) do
      assert.is_nil(done_before[c], "repeated a mutating command that had succeeded: " .. c)
    end
    assert_one_set(h, j.app_name)
    assert.are.equal(0, (terminate(s2, 30)))
  end)

  it("refuses new connections while draining and answers the API with 503 on open ones", function()
    D.reset(h)
    local d3 = H.tmpdir()
    -- the deploy hangs 3 s (then "succeeds"): the drain lasts that long
    D.set_faults(h, { { match = "git:from%-image", action = "hang", ms = 3000, exit = 0 } })
    local s = start(d3, D.mrprov_env(h, { SHUTDOWN_TIMEOUT = "10" }))
    local code = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_term3", account_id = "acc_1", tier = "free" })
    assert.are.equal(202, code)
    H.eventually("the slow deploy", function()
      for _, e in ipairs(D.log(h)) do
        if e.fault == "hang" then
          return true
        end
      end
    end)
    -- an idle keep-alive connection opened before the signal
    local conn = assert(socket.connect("127.0.0.1", s.port))
    conn:settimeout(5)
    os.execute("kill -TERM " .. s.pid)
    H.eventually("the drain", function()
      return (H.read_file(s.log) or ""):find("shutting down", 1, true)
    end)
    socket.sleep(0.2)
    local c2 = socket.tcp()
    c2:settimeout(2)
    local ok, err = c2:connect("127.0.0.1", s.port)
    c2:close()
    assert.is_nil(ok, "a new connection was accepted while draining")
    assert.matches("refused", err)
    local body = cjson.encode({ subscription_id = "sub_term4", account_id = "acc_1", tier = "free" })
    conn:send("POST /api/v1/provision HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k-shutdown\r\n" ..
      "Content-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
    local status = conn:receive("*l")
    conn:close()
    assert.matches("^HTTP/1%.1 503", status or "")
    local rc = H.eventually("the exit", function()
      return H.read_file(s.rc_file)
    end, 20)
    assert.are.equal(0, tonumber(rc:match("%d+")))
    s.pid = nil
    local n = H.sqlite_rows(d3 .. "/data/mrprov.db",
      "SELECT count(*) AS n FROM jobs WHERE subscription_id = 'sub_term4'")
    assert.are.equal(0, n[1].n)
  end)
end)

describe("graceful shutdown and the Supabase outbox #integration", function()
  local sb
  setup(function()
    sb = SB.start()
  end)
  teardown(function()
    cleanup()
    if sb then
      SB.stop(sb)
    end
  end)

  it("gives pending outbox rows a last delivery before exit", function()
    local dir = H.tmpdir()
    local s = start(dir, { SUPABASE_URL = sb.url, SUPABASE_SERVICE_KEY = sb.key, SHUTDOWN_TIMEOUT = "8" })
    SB.fault(sb, "503") -- Supabase down: the rows wait in the outbox with backoff
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_term_sb", account_id = "acc_1", tier = "free" }, { Prefer = "wait=20" })
    assert.are.equal(200, code, cjson.encode(j))
    local db = dir .. "/data/mrprov.db"
    H.eventually("rows waiting", function()
      return H.sqlite_rows(db, "SELECT count(*) AS n FROM outbox WHERE state = 'pending' AND attempts > 0")[1].n > 0
    end, 20)
    SB.fault(sb, "ok")
    local rc, secs = terminate(s, 30)
    assert.are.equal(0, rc)
    assert.is_true(secs < 8)
    assert.are.equal(0, H.sqlite_rows(db, "SELECT count(*) AS n FROM outbox WHERE state = 'pending'")[1].n)
    assert.matches("none pending", H.read_file(s.log))
    local row = SB.rows(sb, "instances", { subscription_id = "sub_term_sb" })[1]
    assert.is_table(row)
    assert.are.equal("running", row.status)
  end)
end)
