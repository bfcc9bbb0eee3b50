-- Integration harness: starts the real mrprov binary on a random loopback
-- port with its own state directory, talks HTTP to it with LuaSocket, and
-- stops it. Every process it starts is stopped by stop() or at exit.
local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local cjson = require "cjson"

local M = {}

M.root = os.getenv("MRPROV_ROOT") or os.getenv("PWD") or "."
M.bin = os.getenv("MRPROV_BIN") or "build/mrprov"
-- A command put in front of the binary by start() (tests/valgrind: memcheck).
M.wrap = os.getenv("MRPROV_WRAP")
if M.bin:sub(1, 1) ~= "/" then
  M.bin = M.root .. "/" .. M.bin
end
http.TIMEOUT = 30

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.sh_quote = sh_quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end
M.read_file = read_file

function M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local dirs = {}

-- A fresh temporary directory, removed by cleanup().
function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/mrprov-it-XXXXXX")
  local dir = p:read("l")
  p:close()
  dirs[#dirs + 1] = dir
  return dir
end

-- Runs the binary with args and env; returns exit code, stdout, stderr.
function M.run(args, env, cwd)
  local dir = M.tmpdir()
  local parts = { "cd", sh_quote(cwd or dir), "&&", "env" }
  -- run from a temporary directory: the checkout's profiles unless told otherwise
  env = env or {}
  if env.PROFILES_DIR == nil then
    parts[#parts + 1] = sh_quote("PROFILES_DIR=" .. M.root .. "/profiles")
  end
  -- the specs written for the split layout run under it; a spec of the
  -- mindroom profile (the service's default) sets PROFILE itself
  if env.PROFILE == nil then
    parts[#parts + 1] = sh_quote("PROFILE=split")
  end
  for k, v in pairs(env) do
    parts[#parts + 1] = sh_quote(k .. "=" .. v)
  end
  parts[#parts + 1] = sh_quote(M.bin)
  for _, a in ipairs(args) do
    parts[#parts + 1] = sh_quote(a)
  end
  local cmd = table.concat(parts, " ") .. " >" .. dir .. "/out 2>" .. dir .. "/err; echo $?"
  local p = io.popen(cmd)
  local code = tonumber(p:read("l"))
  p:close()
  local out, err = read_file(dir .. "/out"), read_file(dir .. "/err")
  os.execute("rm -rf " .. sh_quote(dir))
  return code, out, err
end

-- The environment every test server starts with, plus overrides.
function M.base_env(dir, extra)
  local env = {
    HOST = "127.0.0.1", PORT = "0", LOG_LEVEL = "DEBUG",
    STATE_DB = dir .. "/data/mrprov.db", BACKUP_DIR = dir .. "/data/backups",
    TIERS_DIR = M.root .. "/tiers", PROFILES_DIR = M.root .. "/profiles", HOOKS_DIR = M.root .. "/hooks",
    LUA_DIR = M.root .. "/lua", PROFILE = "split", -- see M.run
    WORKERS = "2", SHUTDOWN_TIMEOUT = "5", -- tests stop servers with SIGTERM
  }
  for k, v in pairs(extra or {}) do
    env[k] = v
  end
  return env
end

local servers = {}

-- Starts `mrprov serve`; waits for its "listening" log line.
-- A server started by M.start is known by its pid and the time it started
-- (field 22 of /proc/<pid>/stat): a pid reused by another process after the
-- server exited (pids wrap within minutes under the suite's load) is not
-- this server, and M.stop never signals it.
local function stat_of(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then
    return nil
  end
  local stat = f:read("a") or ""
  f:close()
  local state, rest = stat:match("^%d+ %(.*%) (%a) (.*)$")
  local n, started = 4, nil
  for w in (rest or ""):gmatch("%S+") do
    if n == 22 then
      started = w
      break
    end
    n = n + 1
  end
  return state, started
end

-- When process pid started (clock ticks since boot), or nil: with the pid
-- it names one process (supabase_harness uses it too).
function M.started_at(pid)
  return select(2, stat_of(pid))
end

function M.start(opts)
  opts = opts or {}
  local dir = opts.dir or M.tmpdir()
  local env = M.base_env(dir, opts.env)
  local parts = { "cd", sh_quote(dir), "&&", "exec", "env" }
  for k, v in pairs(env) do
    parts[#parts + 1] = sh_quote(k .. "=" .. v)
  end
  if opts.wrap or M.wrap then
    parts[#parts + 1] = opts.wrap or M.wrap -- a shell fragment, as given
  end
  parts[#parts + 1] = sh_quote(M.bin)
  parts[#parts + 1] = "serve"
  local log = dir .. "/server-" .. os.time() .. "-" .. math.random(1e6) .. ".log"
  local cmd = "sh -c " .. sh_quote(table.concat(parts, " ") .. " 2>" .. log) .. " >/dev/null & echo $!"
  local p = io.popen(cmd)
  local pid = tonumber(p:read("l"))
  p:close()
  local s = { pid = pid, dir = dir, log = log, env = env }
  s.started = M.started_at(pid)
  servers[#servers + 1] = s
  local deadline = socket.gettime() + (opts.start_timeout or 20)
  while socket.gettime() < deadline do
    local text = read_file(log) or ""
    local port = text:match('"msg":"listening".-"port":(%d+)')
    if port then
      s.port = tonumber(port)
      s.base = "http://127.0.0.1:" .. port
      return s
    end
    if not M.alive(s) then
      error("mrprov exited during start-up:\n" .. text)
    end
    socket.sleep(0.05)
  end
  M.stop(s, "KILL")
  error("mrprov did not start in time:\n" .. (read_file(log) or ""))
end

-- A zombie (exited, not yet reaped: the reaper of orphans may take seconds)
-- is not alive.
function M.alive(s)
  local state, started = stat_of(s.pid)
  if state then
    return state ~= "Z" and (s.started == nil or started == s.started)
  end
  return os.execute("kill -0 " .. s.pid .. " 2>/dev/null") == true
end

-- Sends sig (TERM by default) and waits for the process to exit.
function M.stop(s, sig)
  if not s.pid then
    return
  end
  if not M.alive(s) then
    s.pid = nil
    return true
  end
  os.execute("kill -" .. (sig or "TERM") .. " " .. s.pid .. " 2>/dev/null")
  local deadline = socket.gettime() + 40
  while M.alive(s) and socket.gettime() < deadline do
    socket.sleep(0.05)
  end
  local stopped = not M.alive(s)
  if not stopped then
    os.execute("kill -KILL " .. s.pid .. " 2>/dev/null")
  end
  s.pid = nil
  return stopped
end

function M.log_text(s)
  return read_file(s.log) or ""
end

-- HTTP request; body may be a table (sent as JSON) or a string.
-- Returns status, decoded JSON (or nil), raw body, response headers.
function M.request(s, method, path, body, headers)
  headers = headers or {}
  local h = {}
  for k, v in pairs(headers) do
    h[k:lower()] = v
  end
  local src
  if body ~= nil then
    if type(body) == "table" then
      body = cjson.encode(body)
    end
    if h["content-type"] == nil then
      h["content-type"] = "application/json"
    end
    if h["content-type"] == false then
      h["content-type"] = nil
    end
    if h["content-length"] == false then
      h["content-length"] = nil -- LuaSocket then sends the body chunked
    else
      h["content-length"] = tostring(#body)
    end
    src = ltn12.source.string(body)
  end
  local chunks = {}
  local _, status, rh = http.request({
    url = s.base .. path, method = method, headers = h, source = src, sink = ltn12.sink.table(chunks),
  })
  local raw = table.concat(chunks)
  local ok, decoded = pcall(cjson.decode, raw)
  return status, ok and decoded or nil, raw, rh or {}
end

-- The rows of a query on the SQLite file db (sqlite3's JSON output; a 5 s
-- busy timeout beside a running server).
function M.sqlite_rows(db, sql)
  local p = io.popen("sqlite3 -json -cmd '.timeout 5000' " .. sh_quote(db) .. " " .. sh_quote(sql) .. " 2>&1")
  local out = p:read("a")
  p:close()
  if out:match("^%s*$") then
    return {}
  end
  local ok, rows = pcall(cjson.decode, out)
  assert(ok, "sqlite3: " .. out)
  return rows
end

-- Polls pred() every `interval` s (default 0.05) until it returns a true
-- value, which it returns; pred's second result says why not yet, for the
-- error when `timeout` s (default 30) pass first.
function M.eventually(what, pred, timeout, interval)
  local deadline = socket.gettime() + (timeout or 30)
  local last
  while socket.gettime() < deadline do
    local v, why = pred()
    if v then
      return v
    end
    last = why
    socket.sleep(interval or 0.05)
  end
  error("timed out waiting for " .. what .. (last and (": " .. tostring(last)) or ""), 2)
end

-- Polls until pred(status_json) is true or the timeout passes.
function M.wait_for(s, path, pred, timeout, headers)
  local deadline = socket.gettime() + (timeout or 20)
  local last
  while socket.gettime() < deadline do
    local code, j = M.request(s, "GET", path, nil, headers)
    last = j
    if code == 200 and pred(j) then
      return j
    end
    socket.sleep(0.05)
  end
  error("timed out waiting on " .. path .. "; last answer: " .. cjson.encode(last or {}))
end

-- A Standard Webhooks signature ("v1,<base64 HMAC-SHA256>") over id.ts.body,
-- computed with openssl; key_hex is the base64-decoded secret, in hex.
function M.sign_webhook(key_hex, id, ts, body)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(id .. "." .. ts .. "." .. body)
  f:close()
  local p = io.popen("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. key_hex .. " -binary " .. path
    .. " | openssl base64 -A")
  local sig = p:read("a")
  p:close()
  os.remove(path)
  return "v1," .. sig
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding (what `config:set --encoded` carries).
function M.base64(s)
  return ((s:gsub(".", function(c)
    local b, r = c:byte(), ""
    for i = 8, 1, -1 do
      r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0")
    end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then
      return ""
    end
    local c = 0
    for i = 1, 6 do
      c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0)
    end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

-- Servers get SIGTERM (so a sanitized build runs its leak check at exit),
-- then SIGKILL if they are not gone within M.stop's bound.
-- The instance health endpoint stand-in (tests/fixtures/health-server, one
-- process on a loopback port): { dir, port, mode(m), requests(), stop() };
-- mode as that file says (ok, fail, fail:N, ...), read at each request.
-- opts.sim_state: the simulator's state directory, for the mode
-- fail-image:IMAGE (tests/fixtures/health-server).
function M.health_server(mode, opts)
  local dir = M.tmpdir()
  local function put(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
  end
  put(dir .. "/mode", mode)
  if opts and opts.sim_state then
    put(dir .. "/sim_state", opts.sim_state)
  end
  os.execute("lua5.4 " .. M.sh_quote(M.root .. "/tests/fixtures/health-server") .. " " .. M.sh_quote(dir)
    .. " >/dev/null 2>&1 &")
  local port = M.eventually("the health server's port", function()
    return tonumber(M.read_file(dir .. "/port") or "")
  end, 10)
  return {
    dir = dir, port = port,
    mode = function(m) put(dir .. "/mode", m) end,
    requests = function()
      local out = {}
      for line in (M.read_file(dir .. "/requests") or ""):gmatch("[^\n]+") do out[#out + 1] = line end
      return out
    end,
    stop = function() put(dir .. "/stop", "") end,
  }
end

function M.cleanup()
  for _, s in ipairs(servers) do
    if s.pid then
      M.stop(s, "TERM")
    end
  end
  servers = {}
  if os.getenv("MRPROV_KEEP_TMP") then
    return
  end
  for _, d in ipairs(dirs) do
    os.execute("rm -rf " .. sh_quote(d))
  end
  dirs = {}
end

return M
