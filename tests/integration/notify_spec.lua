-- Integration: the real binary tells a service manager when it is ready
-- (systemd's sd_notify protocol, packaging/mrprov.service Type=notify). The
-- spec binds the datagram socket NOTIFY_SOCKET names, as systemd does, and
-- checks: READY=1 arrives once, and only when the port answers (/live) and
-- the first configuration generation is loaded; SIGHUP brings RELOADING=1
-- with MONOTONIC_USEC then READY=1; SIGTERM brings STOPPING=1 before the
-- exit. A NOTIFY_SOCKET nobody listens on changes nothing but a warning.
local H = require "harness"
local unix = require "socket.unix"

local q = H.sh_quote

-- Starts `mrprov serve` in dir with env (over harness.base_env) without
-- waiting for anything: the spec itself decides when it is up.
local function launch(dir, env)
  env = H.base_env(dir, env)
  local parts = { "cd", q(dir), "&&", "exec", "env" }
  for k, v in pairs(env) do
    parts[#parts + 1] = q(k .. "=" .. v)
  end
  parts[#parts + 1] = q(H.bin)
  parts[#parts + 1] = "serve"
  local s = { dir = dir, log = dir .. "/serve.log", rc_file = dir .. "/serve.rc", pid_file = dir .. "/serve.pid" }
  local inner = table.concat(parts, " ") .. " 2>" .. q(s.log) .. " & echo $! >" .. q(s.pid_file) ..
    "; wait $!; echo $? >" .. q(s.rc_file)
  os.execute("sh -c " .. q(inner) .. " >/dev/null 2>&1 &")
  s.pid = H.eventually("the server's pid", function()
    return tonumber(H.read_file(s.pid_file) or "")
  end, 10)
  s.started = H.started_at(s.pid)
  return s
end

-- The next datagram on sock within 20 s (bounded: the server may be slow
-- under the suite's load), or an error naming what was awaited.
local function next_datagram(sock, what, s)
  sock:settimeout(20)
  local msg, err = sock:receive()
  if not msg then
    error("no datagram (" .. what .. "): " .. tostring(err) .. "\n" .. (H.read_file(s.log) or ""))
  end
  return msg
end

local function lines(msg)
  local t = {}
  for l in msg:gmatch("[^\n]+") do
    local k, v = l:match("^([A-Z_]+)=(.*)$")
    assert.is_truthy(k, "not NAME=value: " .. l)
    t[k] = v
  end
  return t
end

describe("sd_notify (NOTIFY_SOCKET)", function()
  teardown(function()
    H.cleanup()
  end)

  it("READY=1 once the port answers, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM", function()
    local dir = H.tmpdir()
    local path = dir .. "/notify.sock"
    local sock = assert(unix.dgram())
    assert(sock:bind(path))
    local s = launch(dir, { NOTIFY_SOCKET = path })

    local ready = lines(next_datagram(sock, "READY=1", s))
    assert.are.equal("1", ready.READY)
    assert.matches("^serving configuration generation 1$", ready.STATUS)
    -- At the moment READY=1 arrived the server already listened: the port
    -- is in the log and /live answers without waiting.
    local port = (H.read_file(s.log) or ""):match('"msg":"listening".-"port":(%d+)')
    assert.is_truthy(port, "READY=1 before the listening line")
    s.base = "http://127.0.0.1:" .. port
    local code = H.request(s, "GET", "/live")
    assert.are.equal(200, code)
    -- Nothing more while it just serves.
    sock:settimeout(0.2)
    assert.is_nil((sock:receive()))

    os.execute("kill -HUP " .. s.pid)
    local reloading = lines(next_datagram(sock, "RELOADING=1", s))
    assert.are.equal("1", reloading.RELOADING)
    assert.matches("^[1-9]%d*$", reloading.MONOTONIC_USEC)
    local again = lines(next_datagram(sock, "READY=1 after the reload", s))
    assert.are.equal("1", again.READY)
    assert.matches("generation 2", again.STATUS)

    os.execute("kill -TERM " .. s.pid)
    local stopping = lines(next_datagram(sock, "STOPPING=1", s))
    assert.are.equal("1", stopping.STOPPING)
    local rc = H.eventually("the exit code", function()
      return H.read_file(s.rc_file)
    end, 30)
    assert.are.equal("0", rc:match("%d+"))
    sock:close()
  end)

  it("a refused reload still ends with READY=1, saying the generation kept", function()
    local dir = H.tmpdir()
    local tiers = dir .. "/tiers"
    os.execute("cp -r " .. q(H.root .. "/tiers") .. " " .. q(tiers))
    local path = dir .. "/notify.sock"
    local sock = assert(unix.dgram())
    assert(sock:bind(path))
    local s = launch(dir, { NOTIFY_SOCKET = path, TIERS_DIR = tiers })
    assert.are.equal("1", lines(next_datagram(sock, "READY=1", s)).READY)
    local f = assert(io.open(tiers .. "/broken.lua", "w"))
    f:write("return {{{\n")
    f:close()
    os.execute("kill -HUP " .. s.pid)
    assert.are.equal("1", lines(next_datagram(sock, "RELOADING=1", s)).RELOADING)
    local after = lines(next_datagram(sock, "READY=1 after the refused reload", s))
    assert.are.equal("1", after.READY)
    assert.matches("generation 1 %(last reload refused%)", after.STATUS)
    H.stop(s)
    sock:close()
  end)

  it("with NOTIFY_SOCKET naming no listener the server serves as before, and says so once", function()
    local dir = H.tmpdir()
    local s = H.start({ dir = dir, env = { NOTIFY_SOCKET = dir .. "/nobody.sock" } })
    local code = H.request(s, "GET", "/live")
    assert.are.equal(200, code)
    local log = H.log_text(s)
    local _, n = log:gsub("cannot notify the service manager", "")
    assert.are.equal(1, n)
    assert.is_true(H.stop(s))
  end)
end)
