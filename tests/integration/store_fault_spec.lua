-- Integration: the durable store (STATE_DB, SQLite) on a file system that
-- refuses writes. Root bypasses file modes, so the store is made read-only
-- with a read-only bind mount inside an unprivileged user + mount namespace
-- (`unshare -rm`); a full disk is a size-limited tmpfs in such a namespace.
local H = require "harness"
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
  local _, out = sh("sqlite3 " .. q(db) .. " 'PRAGMA integrity_check'")
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
