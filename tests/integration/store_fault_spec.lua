-- Integration: the durable store (STATE_DB, SQLite) on a file system that
-- refuses writes. Root bypasses file modes, so the store is made read-only
-- with a read-only bind mount inside an unprivileged user + mount namespace
-- (`unshare -rm`); a full disk is a size-limited tmpfs in such a namespace.
local H = require "harness"
local D = require "dokku_harness"
local cjson = require "cjson"
local socket = require "socket"

local q = H.sh_quote


local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, (out:gsub("rc=%d+%s*$", ""))
end

-- `env K=V ... mrprov serve` for dir, as a shell word list.
local function serve_cmd(dir, extra)
  local parts = { "env" }
  for k, v in pairs(H.base_env(dir, extra)) do
    parts[#parts + 1] = q(k .. "=" .. v)
  end
  parts[#parts + 1] = q(H.bin)
  parts[#parts + 1] = "serve"
  return table.concat(parts, " ")
end

-- sha256 of every file under dir/data, as one string.
local function fingerprint(dir)
  local _, out = sh("cd " .. q(dir .. "/data") .. " && find . -type f | sort | xargs sha256sum")
  return out
end

local function integrity(db)
  local _, out = sh("sqlite3 -cmd '.timeout 5000' " .. q(db) .. " 'PRAGMA integrity_check'")
  return (out:gsub("%s+$", ""))
end

local function namespaces_work()
  local rc = sh("unshare -rm sh -c 'mount -t tmpfs none /mnt'")
  return rc == 0
end

describe("a read-only store #integration", function()
  local dir, job_id
  setup(function()
    assert(namespaces_work(), "unshare -rm with mount is needed for this spec")
    dir = H.tmpdir()
    -- a store from an earlier run, with a finished job in it
    local s = H.start({ dir = dir })
    local code, j = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_ro1", account_id = "acc_1", tier = "free" }, { Prefer = "wait=20" })
    assert.are.equal(200, code, cjson.encode(j))
    job_id = j.job_id
    assert.is_true(H.stop(s))
  end)
  teardown(H.cleanup)

  local function refused(mount)
    local before = fingerprint(dir)
    local inner = mount .. " && cd " .. q(dir) .. " && exec " .. serve_cmd(dir)
    local t0 = socket.gettime()
    local rc, out = sh("timeout 20 unshare -rm sh -c " .. q(inner))
    assert.is_true(socket.gettime() - t0 < 10, "start-up did not stop at once")
    assert.are.equal(1, rc, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do
      lines[#lines + 1] = l
    end
    assert.are.equal(1, #lines, "expected one line, got:\n" .. out)
    assert.are.equal(before, fingerprint(dir), "the store changed")
    assert.are.equal("ok", integrity(dir .. "/data/mrprov.db"))
    return lines[1]
  end

  it("refuses to start on a read-only directory with one line naming the file and the cause", function()
    local data = q(dir .. "/data")
    local line = refused("mount --bind -o ro " .. data .. " " .. data)
    assert.matches("^mrprov: STATE_DB: ", line)
    assert.truthy(line:find(dir .. "/data/mrprov.db", 1, true), line)
    assert.matches("Read%-only file system", line)
  end)

  it("refuses to start when only the database file is read-only", function()
    local db = q(dir .. "/data/mrprov.db")
    local line = refused("mount --bind -o ro " .. db .. " " .. db)
    assert.matches("^mrprov: STATE_DB: ", line)
    assert.matches("the file is not writable", line)
    assert.matches("Read%-only file system", line)
  end)

  it("starts normally on the same store afterwards, with its history", function()
    local s = H.start({ dir = dir })
    local code, st = H.request(s, "GET", "/api/v1/status/sub_ro1")
    assert.are.equal(200, code)
    assert.are.equal("running", st.status)
    assert.are.equal(job_id, st.job.id)
    assert.is_true(H.stop(s))
    assert.are.equal("ok", integrity(dir .. "/data/mrprov.db"))
  end)
end)

describe("a store directory other users can read #integration", function()
  teardown(H.cleanup)

  local function mode(path)
    local _, out = sh("stat -c %a " .. q(path))
    return (out:gsub("%s+$", ""))
  end

  it("refuses to start with one line naming the directory and the fix", function()
    local dir = H.tmpdir()
    os.execute("mkdir -m 755 " .. q(dir .. "/data"))
    local rc, out = sh("cd " .. q(dir) .. " && timeout 20 " .. serve_cmd(dir))
    assert.are.equal(1, rc, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do
      lines[#lines + 1] = l
    end
    assert.are.equal(1, #lines, "expected one line, got:\n" .. out)
    assert.matches("^mrprov: STATE_DB: ", lines[1])
    assert.truthy(lines[1]:find("chmod 700 " .. dir .. "/data", 1, true), lines[1])
    assert.is_nil(io.open(dir .. "/data/mrprov.db"))
  end)

  it("creates the store and its -wal and -shm for its own user only", function()
    local dir = H.tmpdir()
    os.execute("mkdir -m 700 " .. q(dir .. "/data"))
    local s = H.start({ dir = dir })
    local code = H.request(s, "POST", "/api/v1/provision",
      { subscription_id = "sub_mode1", account_id = "acc_1", tier = "free" },
      { Prefer = "wait=20" })
    assert.are.equal(200, code)
    for _, f in ipairs({ "mrprov.db", "mrprov.db-wal", "mrprov.db-shm" }) do
      assert.are.equal("600", mode(dir .. "/data/" .. f), f)
    end
    assert.is_true(H.stop(s))
  end)
end)

describe("a store whose disk fills up mid-job #integration", function()
  local h, dir, pid, log, base
  local data

  -- mrprov in its own mount namespace with data/ on a 2 MiB tmpfs.
  local function start_on_tmpfs()
    log = dir .. "/serve-" .. math.random(1e6) .. ".log"
    local env = D.mrprov_env(h, { PROVISIONER_SECRET = "store-fault-secret-0123456789" })
    local inner = "mount -t tmpfs -o size=2m,mode=700 none " .. q(data) .. " && cd " .. q(dir) .. " && exec " ..
      serve_cmd(dir, env) .. " 2>" .. q(log)
    local p = io.popen("sh -c " .. q("exec unshare -rm sh -c " .. q(inner)) .. " >/dev/null 2>&1 & echo $!")
    pid = tonumber(p:read("l"))
    p:close()
    local deadline = socket.gettime() + 20
    while socket.gettime() < deadline do
      local port = (H.read_file(log) or ""):match('"msg":"listening".-"port":(%d+)')
      if port then
        base = { base = "http://127.0.0.1:" .. port }
        return
      end
      socket.sleep(0.05)
    end
    error("mrprov did not start:\n" .. (H.read_file(log) or ""))
  end

  local function stop()
    os.execute("kill -TERM " .. pid)
    local deadline = socket.gettime() + 20
    while os.execute("kill -0 " .. pid .. " 2>/dev/null") == true and socket.gettime() < deadline do
      socket.sleep(0.05)
    end
  end

  -- the mrprov process's view of its tmpfs
  local function inside(path)
    return "/proc/" .. pid .. "/root" .. data .. "/" .. path
  end

  -- sqlite3 on the store in mrprov's namespaces (not through inside():
  -- SQLite resolves the link /proc/<pid>/root to / and would open the
  -- directory under the tmpfs, an empty database).
  local function store_sql(sql)
    local _, out = sh("nsenter -t " .. pid .. " -U -m --preserve-credentials sqlite3 -cmd '.timeout 5000' "
      .. q(data .. "/mrprov.db") .. " " .. q(sql))
    return (out:gsub("%s+$", ""))
  end

  setup(function()
    h = D.start()
    dir = H.tmpdir()
    data = dir .. "/data"
    os.execute("mkdir -p " .. q(data))
  end)
  teardown(function()
    if pid then
      os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    end
    H.cleanup()
    D.stop_all()
  end)

  it("holds the job while nothing can be journaled, stays live and says why, then completes", function()
    start_on_tmpfs()
    -- the backend's deploy takes 2 s; the disk fills up meanwhile
    D.set_faults(h, { { match = "git:from%-image %S+%-backend", action = "delay", ms = 2000, times = 1 } })
    local code, j = H.request(base, "POST", "/api/v1/provision",
      { subscription_id = "sub_full1", account_id = "acc_1", tier = "starter" })
    assert.are.equal(202, code)
    local deadline = socket.gettime() + 20
    local seen
    repeat
      for _, e in ipairs(D.log(h)) do
        seen = seen or table.concat(e.argv, " "):find("git:from-image", 1, true)
      end
      socket.sleep(0.02)
    until seen or socket.gettime() > deadline
    assert.truthy(seen, "no deploy started")
    -- The disk is full once the filler takes what is free. That is not yet
    -- "nothing can be journaled": a commit that fits in the WAL file's
    -- present size still succeeds once a checkpoint (mrprov's checkpointer,
    -- every second) has copied the WAL back, as SQLite then restarts it from
    -- its start; the job may journal on and even finish. A TRUNCATE
    -- checkpoint takes that room away: it fails (the database file cannot
    -- grow, so the WAL can never restart) or it empties the WAL, whose space
    -- the filler then takes too. Busy, or mrprov wrote again between the
    -- two: once more.
    local function fill()
      os.execute("dd if=/dev/zero of=" .. q(inside("filler")) .. " bs=4k oflag=append conv=notrunc 2>/dev/null")
    end
    fill()
    H.eventually("no room left in the WAL", function()
      local out = store_sql("PRAGMA wal_checkpoint(TRUNCATE)")
      if out:find("disk is full", 1, true) then
        return true
      end
      fill()
      local f = io.open(inside("mrprov.db-wal"), "rb")
      local size = f and f:seek("end")
      if f then
        f:close()
      end
      return out:match("^0|") and size == 0, out .. " wal " .. tostring(size)
    end, 20, 0.2)
    do
      local _, st = H.request(base, "GET", "/api/v1/status/sub_full1")
      assert.are.equal("running", st.job.state, "the job ended before the disk was full: " .. cjson.encode(st))
    end
    -- the job cannot journal: /ready says so, /health answers, no Dokku command runs
    local r
    local ready_deadline = socket.gettime() + 20
    repeat
      socket.sleep(0.2)
      local _, rr = H.request(base, "GET", "/ready")
      r = rr
    until (r and r.checks and r.checks.store == "unwritable") or socket.gettime() > ready_deadline
    assert.are.equal("unwritable", r.checks.store, cjson.encode(r))
    assert.matches("disk is full", cjson.encode(r.reasons))
    assert.are.equal(200, (H.request(base, "GET", "/health")))
    socket.sleep(1.5)
    -- while it waits, nothing is sent (a small journal write may still fit
    -- in the WAL; a command runs only once its step is journaled)
    local function mutations()
      local n = 0
      for _, e in ipairs(D.log(h)) do
        n = n + (e.mutating and 1 or 0)
      end
      return n
    end
    local quiet_from = mutations()
    socket.sleep(1.5)
    assert.are.equal(quiet_from, mutations(), "changes were sent while the job waited for the store")
    assert.matches("state store cannot be written", H.read_file(log))
    -- space comes back: the job goes on by itself and completes
    os.remove(inside("filler"))
    local okw, st = pcall(H.wait_for, base, "/api/v1/status/sub_full1", function(x)
      return x.job ~= cjson.null and x.job.id == j.job_id and (x.job.state == "succeeded" or x.job.state == "failed")
    end, 90)
    if not okw then
      local problems = {}
      for line in (H.read_file(log) or ""):gmatch("[^\n]+") do
        if not line:find('"level":"DEBUG"', 1, true) then
          problems[#problems + 1] = line
        end
      end
      error(tostring(st) .. "\nserver log:\n" .. table.concat(problems, "\n", math.max(1, #problems - 40)))
    end
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    assert.are.equal("running", st.status)
    local _, rr = H.request(base, "GET", "/ready")
    assert.are.equal("ok", rr.checks.store)
    -- no mutating command that succeeded was sent twice; one set of objects
    local sent = {}
    for _, e in ipairs(D.log(h)) do
      local c = table.concat(e.argv, " ")
      if e.mutating and e.exit == 0 and not D.idempotent_prep(c) then
        assert.is_nil(sent[c], "sent twice: " .. c)
        sent[c] = true
      end
    end
    local apps = {}
    for name in pairs(D.state(h).apps) do
      apps[#apps + 1] = name
    end
    table.sort(apps)
    assert.are.same({ j.app_name, j.app_name .. "-backend", j.app_name .. "-frontend" }, apps)
    -- the database is sound, read while mrprov still runs
    assert.are.equal("ok", store_sql("PRAGMA integrity_check"))
    assert.are.equal(j.job_id, store_sql("SELECT id FROM jobs WHERE state = 'succeeded'"))
    stop()
  end)
end)
