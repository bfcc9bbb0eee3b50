-- Supabase test harness: a throwaway PostgreSQL cluster with docker/supabase/schema.sql
-- (tests/fixtures/pg-harness) behind the PostgREST-compatible gateway
-- (tests/fixtures/postgrest-gateway), in one temporary directory. Every process it
-- starts is stopped by stop(h) or, failing that, when the Lua state closes.
--
--   local sb = require "supabase_harness"
--   local h = sb.start()        -- { url=, key=, port=, dir=, pg = { port, socket_dir, db, user, pid, conninfo } }
--   sb.request(h, "POST", "/rest/v1/instances", { ... }, { Prefer = "return=representation" })
--   sb.rows(h, "instances", { subscription_id = "s1" })
--   sb.stop(h)
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"
local luasql = require "luasql.postgres"

local M = {}

M.root = os.getenv("MRPROV_ROOT") or os.getenv("PWD") or "."
M.fixtures = M.root .. "/tests/fixtures"
M.schema = M.root .. "/docker/supabase/schema.sql"
M.lua = os.getenv("LUA") or "lua5.4"

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.sh_quote = sh_quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs a shell command; returns ok, stdout.
local function run(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  return ok == true, out
end

-- When process `pid` started (harness.lua): with the pid it names one
-- process, so a signal never reaches another that reused the pid (pids wrap
-- within minutes under the suite's load).
local started_at = require("harness").started_at

local function alive(pid, start)
  if pid == nil or os.execute("kill -0 " .. math.tointeger(pid) .. " 2>/dev/null") ~= true then
    return false
  end
  return start == nil or started_at(pid) == start
end

-- TERM, then KILL after timeout, the process `pid` that started at `start`
-- (started_at), if it still runs.
local function kill_wait(pid, timeout, start)
  start = start or started_at(pid)
  if not alive(pid, start) then return end
  os.execute("kill -TERM " .. math.tointeger(pid) .. " 2>/dev/null")
  local deadline = socket.gettime() + (timeout or 5)
  while alive(pid) and socket.gettime() < deadline do socket.sleep(0.02) end
  if alive(pid) then
    os.execute("kill -KILL " .. math.tointeger(pid) .. " 2>/dev/null")
    deadline = socket.gettime() + 2
    while alive(pid) and socket.gettime() < deadline do socket.sleep(0.02) end
  end
end

-- Harnesses not yet stopped; the sentinel's __gc stops them when the state closes.
local active = {}
M._sentinel = setmetatable({}, {
  __gc = function()
    for h in pairs(active) do pcall(M.stop, h) end
  end,
})

local function random_token(n)
  local ok, out = run("openssl rand -hex " .. (n or 16) .. " 2>/dev/null")
  if ok and out:match("^%x+") then return out:match("^%x+") end
  return string.format("%x%x", os.time(), math.random(1 << 30))
end

-- Starts (or restarts, on h.port when given) the gateway process for h.
local function start_gateway(h, port)
  local out = h.dir .. "/gateway.out"
  os.remove(out)
  local cmd = table.concat({
    "exec", sh_quote(M.lua), sh_quote(M.fixtures .. "/postgrest-gateway"),
    "--port", tostring(port or 0), "--pg", sh_quote(h.pg.conninfo), "--service-key", sh_quote(h.key),
    h.tables and ("--tables " .. sh_quote(h.tables)) or "",
  }, " ")
  local p = io.popen("sh -c " .. sh_quote(cmd .. " >" .. sh_quote(out) .. " 2>>" .. sh_quote(h.dir .. "/gateway.log"))
    .. " </dev/null & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  h.gateway_pid, h.gateway_start = pid, started_at(pid)
  local deadline = socket.gettime() + 15
  while socket.gettime() < deadline do
    local got = (read_file(out) or ""):match("listening port=(%d+)")
    if got then
      h.port = tonumber(got)
      h.url = "http://127.0.0.1:" .. got
      return true
    end
    if not alive(pid) then break end
    socket.sleep(0.02)
  end
  kill_wait(pid)
  h.gateway_pid = nil
  return nil, "postgrest-gateway did not start:\n" .. (read_file(h.dir .. "/gateway.log") or "")
end

-- opts: key (service key), webhook_secret, webhook_url (the Vault stub's values),
-- tables (the tables the gateway exposes, comma-separated; default its own:
-- instances,events,backups; PostgREST itself exposes every table of the schema).
function M.start(opts)
  opts = opts or {}
  local _, tmp = run("mktemp -d /tmp/mrprov-supabase-XXXXXX")
  local dir = tmp:match("^(%S+)")
  assert(dir, "mktemp failed")
  local h = { dir = dir, key = opts.key or ("sb_secret_test_" .. random_token(12)), tables = opts.tables }
  active[h] = true
  h.webhook_secret = opts.webhook_secret or ("whsec_" .. (select(2, run("openssl rand -base64 32")):match("^(%S+)")))
  h.webhook_url = opts.webhook_url or "http://127.0.0.1:9/api/v1/webhooks/supabase"
  local cmd = table.concat({
    "env", sh_quote("WEBHOOK_SECRET_FOR_TEST=" .. h.webhook_secret),
    sh_quote("WEBHOOK_URL_FOR_TEST=" .. h.webhook_url),
    sh_quote(M.fixtures .. "/pg-harness"), "start", sh_quote(dir), "2>&1",
  }, " ")
  local ok, out = run(cmd)
  local line = out:match("(port=%d+ socket_dir=%S+ db=%S+ user=%S+ pid=%d+)")
  if not ok or not line then
    pcall(M.stop, h)
    error("pg-harness start failed:\n" .. out, 2)
  end
  h.pg = {
    port = tonumber(line:match("port=(%d+)")), socket_dir = line:match("socket_dir=(%S+)"),
    db = line:match("db=(%S+)"), user = line:match("user=(%S+)"), pid = tonumber(line:match("pid=(%d+)")),
  }
  h.pg.conninfo = string.format("host=%s port=%d dbname=%s user=%s", h.pg.socket_dir, h.pg.port, h.pg.db, h.pg.user)
  local started, err = start_gateway(h, 0)
  if not started then
    pcall(M.stop, h)
    error(err, 2)
  end
  return h
end

function M.stop_gateway(h)
  kill_wait(h.gateway_pid, nil, h.gateway_start)
  h.gateway_pid = nil
end

-- Stops the gateway and starts it again on the same port (outage tests).
function M.restart_gateway(h)
  M.stop_gateway(h)
  local ok, err
  for _ = 1, 20 do
    ok, err = start_gateway(h, h.port)
    if ok then return h end
    socket.sleep(0.1)
  end
  error(err, 2)
end

-- Stops everything and removes the directory (MRPROV_KEEP_TMP=1 keeps it).
function M.stop(h)
  if h.conn then pcall(h.conn.close, h.conn); h.conn = nil end
  M.stop_gateway(h)
  if h.dir then
    run(sh_quote(M.fixtures .. "/pg-harness") .. " stop " .. sh_quote(h.dir) .. " 2>&1")
    if os.getenv("MRPROV_KEEP_TMP") ~= "1" and h.dir:match("^/tmp/mrprov%-supabase%-") then
      os.execute("rm -rf " .. sh_quote(h.dir))
    end
  end
  active[h] = nil
end

---------------------------------------------------------------------------------------
-- SQL (as the cluster's superuser, so row-level security does not apply)
---------------------------------------------------------------------------------------

local env

local function conn(h)
  if h.conn then return h.conn end
  env = env or luasql.postgres()
  local c, err = env:connect(h.pg.conninfo)
  if not c then error("cannot connect to the test database: " .. tostring(err), 3) end
  c:execute("set timezone = 'UTC'")
  h.conn = c
  return c
end

-- Runs sql; returns the rows (a list of column-name tables; every value a string, NULLs
-- absent) or, for a command, the number of rows affected. Raises on an SQL error.
function M.query(h, sql)
  local cur, err = conn(h):execute(sql)
  if not cur then error(err, 2) end
  if type(cur) ~= "userdata" then return cur end
  local rows = {}
  local r = cur:fetch({}, "a")
  while r do
    rows[#rows + 1] = r
    r = cur:fetch({}, "a")
  end
  cur:close()
  return rows
end

-- Like query, but returns nil, message instead of raising.
function M.try_query(h, sql)
  local ok, res = pcall(M.query, h, sql)
  if ok then return res end
  return nil, tostring(res)
end

function M.literal(h, v)
  return "'" .. conn(h):escape(tostring(v)) .. "'"
end

local function ident(name)
  assert(type(name) == "string" and name:match("^[%a_][%w_]*$"), "bad identifier: " .. tostring(name))
  return '"' .. name .. '"'
end

-- Rows of public.<tbl>, oldest first. where: nil, an SQL condition, or { col = value }.
function M.rows(h, tbl, where)
  local cond = ""
  if type(where) == "string" then
    cond = " where " .. where
  elseif type(where) == "table" then
    local parts, cols = {}, {}
    for k in pairs(where) do cols[#cols + 1] = k end
    table.sort(cols)
    for _, k in ipairs(cols) do parts[#parts + 1] = ident(k) .. " = " .. M.literal(h, where[k]) end
    if #parts > 0 then cond = " where " .. table.concat(parts, " and ") end
  end
  return M.query(h, "select * from public." .. ident(tbl) .. cond .. " order by 1")
end

-- Applies docker/supabase/schema.sql again with psql (ON_ERROR_STOP); returns ok, output.
function M.apply_schema(h, path)
  return run(table.concat({
    "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", sh_quote(h.pg.socket_dir), "-p", tostring(h.pg.port),
    "-U", sh_quote(h.pg.user), "-d", sh_quote(h.pg.db), "-f", sh_quote(path or M.schema), "2>&1",
  }, " "))
end

-- What the subscriptions trigger would have sent through pg_net, oldest first:
-- { id, url, body (the exact text), headers (table), params (table), timeout_ms }.
function M.webhook_requests(h)
  local out = {}
  for _, r in ipairs(M.query(h, "select id, url, body, params::text as params, headers::text as headers,"
      .. " timeout_ms from net._requests order by id")) do
    out[#out + 1] = {
      id = tonumber(r.id), url = r.url, body = r.body, timeout_ms = tonumber(r.timeout_ms),
      headers = r.headers and cjson.decode(r.headers) or {}, params = r.params and cjson.decode(r.params) or {},
    }
  end
  return out
end

---------------------------------------------------------------------------------------
-- HTTP
---------------------------------------------------------------------------------------

-- The service key headers mrprov sends.
function M.auth(h, extra)
  local t = { apikey = h.key, Authorization = "Bearer " .. h.key }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- One HTTP request to the gateway (a fresh connection). body: a table (sent as JSON) or
-- a string. headers: exactly those given (use M.auth for the keys); a false value drops
-- a default. Returns status, decoded JSON (or nil), raw body, response headers.
function M.request(h, method, path, body, headers)
  local hd = {}
  for k, v in pairs(headers or {}) do hd[k:lower()] = v end
  local src
  if body ~= nil then
    if type(body) == "table" then body = cjson.encode(body) end
    if hd["content-type"] == nil then hd["content-type"] = "application/json" end
    hd["content-length"] = tostring(#body)
    src = ltn12.source.string(body)
  end
  for k, v in pairs(hd) do if v == false then hd[k] = nil end end
  local chunks = {}
  local saved = http.TIMEOUT
  http.TIMEOUT = 10 -- a stuck gateway fails the test instead of stalling it
  local _, status, rh = http.request({
    url = h.url .. path, method = method, headers = hd, source = src, sink = ltn12.sink.table(chunks),
  })
  http.TIMEOUT = saved
  local raw = table.concat(chunks)
  local ok, decoded = pcall(cjson.decode, raw)
  return status, ok and decoded or nil, raw, rh or {}
end

-- Sets the gateway's fault mode: "ok", "500" (or any status), "timeout" (held, not
-- carried out), "close", "lost" (carried out, the answer never sent); count:
-- how many /rest/v1 requests it applies to (nil: until set back to "ok"); match: a Lua
-- pattern on "METHOD /rest/v1/...?query" limiting it to those requests.
function M.fault(h, mode, count, match)
  local status, j, raw = M.request(h, "POST", "/_fault", { mode = mode, count = count, match = match })
  assert(status == 200, "fault: " .. tostring(status) .. " " .. tostring(raw))
  return j
end

-- The /rest/v1 requests the gateway received since start or the last reset:
-- { method, path, headers (keys redacted), body, apikey, apikey_ok, authorization_ok, status, fault, time }.
function M.requests(h)
  local status, j, raw = M.request(h, "GET", "/_requests")
  assert(status == 200 and type(j) == "table", "requests: " .. tostring(status) .. " " .. tostring(raw))
  return j
end

function M.reset_requests(h)
  local status = M.request(h, "DELETE", "/_requests")
  assert(status == 204, "reset_requests: " .. tostring(status))
end

return M
