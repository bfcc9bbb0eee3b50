-- Test access to a simulated Dokku server: a real OpenSSH sshd on a random
-- loopback port (tests/fixtures/sshd-harness) whose forced command is the
-- simulator (tests/fixtures/dokku-sim), plus helpers to read the simulator's
-- state and command log and to inject faults.
--
--   local D = require "dokku_harness"
--   local h = D.start()            -- {port, user, key, known_hosts, pid, state, dir}
--   local code, out, err = D.ssh(h, "--quiet apps:exists x")
--   D.set_faults(h, { { match = "^git:from%-image", action = "fail", exit = 1, times = 1 } })
--   D.log(h), D.mutating_count(h, since), D.state(h), D.reset(h)
--   D.stop(h)
local cjson = require "cjson"

local M = {}

local function script_dir()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    return src:sub(2):match("^(.*)/[^/]*$")
  end
  return nil
end

local function abs(p)
  if p:sub(1, 1) == "/" then
    return p
  end
  return (os.getenv("PWD") or ".") .. "/" .. p
end

M.root = os.getenv("MRPROV_ROOT")
if not M.root then
  local d = script_dir()
  M.root = d and abs(d .. "/../..") or (os.getenv("PWD") or ".")
end
M.harness = M.root .. "/tests/fixtures/sshd-harness"
M.sim = M.root .. "/tests/fixtures/dokku-sim-run"

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = q

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end

local function write_atomic(path, data)
  local tmp = path .. ".tmp.harness"
  local f = assert(io.open(tmp, "wb"))
  f:write(data)
  f:close()
  assert(os.rename(tmp, path))
end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, (out:gsub("rc=%d+%s*$", ""))
end

local started = {}

local function parse_line(line)
  local h = {}
  for k, v in line:gmatch("([%w_]+)=(%S+)") do
    h[k] = v
  end
  h.port = tonumber(h.port)
  h.pid = tonumber(h.pid)
  return h
end

-- Starts sshd + simulator in a fresh temp dir (or opts.dir).
function M.start(opts)
  opts = opts or {}
  local dir = opts.dir
  if not dir then
    local p = io.popen("mktemp -d /tmp/mrprov-dokku-XXXXXX")
    dir = p:read("l")
    p:close()
  end
  local rc, out = sh(q(M.harness) .. " start " .. q(dir))
  if rc ~= 0 then
    error("sshd-harness start failed (" .. tostring(rc) .. "): " .. out, 2)
  end
  local line = out:match("(port=%d+[^\n]*)")
  if not line then
    error("sshd-harness printed no port line: " .. out, 2)
  end
  local h = parse_line(line)
  h.dir = dir
  h.own_dir = opts.dir == nil
  started[dir] = h
  if opts.settings then
    M.settings(h, opts.settings)
  end
  return h
end

-- Stops sshd (and every session it runs); the directory stays, so
-- start_sshd(h) brings it back on the same port with the same keys.
function M.stop_sshd(h)
  local rc, out = sh(q(M.harness) .. " stop " .. q(h.dir))
  if rc ~= 0 then
    error("sshd-harness stop failed: " .. out, 2)
  end
end

function M.start_sshd(h)
  local rc, out = sh(q(M.harness) .. " start " .. q(h.dir))
  if rc ~= 0 then
    error("sshd-harness start failed: " .. out, 2)
  end
  local n = parse_line(out:match("(port=%d+[^\n]*)"))
  h.pid = n.pid
  return h
end

function M.restart(h)
  M.stop_sshd(h)
  return M.start_sshd(h)
end

function M.stop(h)
  if not h then
    return
  end
  if h.mux then
    os.execute("ssh -o ControlPath=" .. q(h.dir .. "/cm") .. " -O exit x >/dev/null 2>&1")
  end
  sh(q(M.harness) .. " stop " .. q(h.dir))
  if h.own_dir and not os.getenv("MRPROV_KEEP_TEST_DIRS") then
    os.execute("rm -rf " .. q(h.dir))
  end
  started[h.dir] = nil
end

-- The names of the objects of instance app (and nothing else) in the
-- simulator's state s (D.state): apps, postgres, redis, storage; each sorted.
function M.objects_of(s, app)
  local n = { apps = {}, postgres = {}, redis = {}, storage = {} }
  local function mine(name)
    return name == app or name:sub(1, #app + 1) == app .. "-"
  end
  for _, a in ipairs(s.global.apps or {}) do
    if mine(a) then n.apps[#n.apps + 1] = a end
  end
  for _, kind in ipairs({ "postgres", "redis" }) do
    for _, x in ipairs((s.global.services or {})[kind] or {}) do
      if mine(x) then n[kind][#n[kind] + 1] = x end
    end
  end
  for k in pairs(s.global.storage or {}) do
    if mine(k) then n.storage[#n.storage + 1] = k end
  end
  for _, l in pairs(n) do
    table.sort(l)
  end
  return n
end

-- The idempotent first command of a two-command resource whose probe only
-- sees the second's effect: re-sent (harmlessly) when a job was cut off
-- between its completion and its journal entry, because the resource had
-- not converged. Every other mutating command is guarded by a probe.
function M.idempotent_prep(c)
  return c:find("letsencrypt:set %S+ email ") or c:find("storage:ensure%-directory ")
end

-- The environment that points mrprov (tests/integration/harness.lua) at h.
-- Its known_hosts starts empty and mrprov records the key on first use
-- (DOKKU_HOST_KEY_TOFU; extra can turn that off, or point DOKKU_KNOWN_HOSTS
-- at h.known_hosts, which records the server's ed25519 key).
function M.mrprov_env(h, extra)
  local env = {
    DOKKU_HOST = "127.0.0.1", DOKKU_PORT = tostring(h.port), DOKKU_USER = h.user,
    DOKKU_SSH_KEY_PATH = h.key, DOKKU_KNOWN_HOSTS = h.dir .. "/mrprov_known_hosts", DOKKU_HOST_KEY_TOFU = "true",
    LETSENCRYPT_EMAIL = "ops@example.com", DOKKU_POOL_SIZE = "2",
  }
  for k, v in pairs(extra or {}) do
    env[k] = v
  end
  return env
end

function M.stop_all()
  for _, h in pairs(started) do
    M.stop(h)
  end
end

-- Whatever a failing spec left running is stopped when the Lua state closes
-- (busted exits with os.exit(code, true)).
M._sentinel = setmetatable({}, {
  __gc = function()
    pcall(M.stop_all)
  end,
})

-- The ssh client command line (without the remote command).
function M.ssh_argv(h, opts)
  opts = opts or {}
  local parts = {
    "ssh", "-i", q(h.key), "-o", q("UserKnownHostsFile=" .. h.known_hosts), "-o", "StrictHostKeyChecking=yes",
    "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
  }
  if opts.mux then
    h.mux = true
    for _, o in ipairs({ "ControlMaster=auto", "ControlPath=" .. h.dir .. "/cm", "ControlPersist=60" }) do
      parts[#parts + 1] = "-o"
      parts[#parts + 1] = q(o)
    end
  end
  parts[#parts + 1] = "-p"
  parts[#parts + 1] = tostring(h.port)
  parts[#parts + 1] = q(h.user .. "@127.0.0.1")
  return table.concat(parts, " ")
end

-- Runs one remote command. cmdline is the exact SSH command string (what
-- Dokku sees in SSH_ORIGINAL_COMMAND). opts: stdin (string; default
-- /dev/null), timeout (seconds, the client is killed after it), mux (reuse a
-- ControlMaster connection: much faster, but a killed client does not end the
-- remote command). Returns exit code, stdout, stderr.
function M.ssh(h, cmdline, opts)
  opts = opts or {}
  local p = io.popen("mktemp -d /tmp/mrprov-ssh-XXXXXX")
  local tmp = p:read("l")
  p:close()
  local stdin = "/dev/null"
  if opts.stdin then
    stdin = tmp .. "/in"
    local f = assert(io.open(stdin, "wb"))
    f:write(opts.stdin)
    f:close()
  end
  local prefix = ""
  if opts.timeout then
    prefix = "timeout -s KILL " .. tostring(opts.timeout) .. " "
  end
  local cmd = prefix .. M.ssh_argv(h, opts) .. " -- " .. q(cmdline) .. " <" .. q(stdin) .. " >" .. q(tmp .. "/out") ..
    " 2>" .. q(tmp .. "/err") .. "; echo $?"
  local pp = io.popen(cmd)
  local code = tonumber(pp:read("l"))
  pp:close()
  local out, err = read_file(tmp .. "/out") or "", read_file(tmp .. "/err") or ""
  os.execute("rm -rf " .. q(tmp))
  return code, out, err
end

-- The text of a host file (HOSTS_DIR, issue 16) for the sshd of harness h;
-- `fields`: further lines of its table (capacity, labels, draining, ...).
function M.host_file(h, fields)
  local lines = {
    "-- a Dokku host of the test suite",
    "return {",
    "  host = \"127.0.0.1\",",
    ("  port = %d,"):format(h.port),
    ("  user = %q,"):format(h.user),
    ("  key_path = %q,"):format(h.key),
    ("  known_hosts = %q,"):format(h.dir .. "/mrprov_known_hosts"),
  }
  for _, l in ipairs(fields or {}) do
    lines[#lines + 1] = "  " .. l
  end
  lines[#lines + 1] = "}"
  lines[#lines + 1] = ""
  return table.concat(lines, "\n")
end

-- Runs the simulator directly (no SSH), with argv as given.
function M.run_local(h, argv, opts)
  opts = opts or {}
  local p = io.popen("mktemp -d /tmp/mrprov-sim-XXXXXX")
  local tmp = p:read("l")
  p:close()
  local words = {}
  for _, a in ipairs(argv) do
    words[#words + 1] = q(a)
  end
  local env = "env -u SSH_ORIGINAL_COMMAND DOKKU_SIM_STATE=" .. q(h.state)
  if opts.ssh_original_command then
    env = "env DOKKU_SIM_STATE=" .. q(h.state) .. " SSH_ORIGINAL_COMMAND=" .. q(opts.ssh_original_command)
  end
  local cmd = env .. " " .. q(M.sim) .. " " .. table.concat(words, " ") .. " </dev/null >" .. q(tmp .. "/out") ..
    " 2>" .. q(tmp .. "/err") .. "; echo $?"
  local pp = io.popen(cmd)
  local code = tonumber(pp:read("l"))
  pp:close()
  local out, err = read_file(tmp .. "/out") or "", read_file(tmp .. "/err") or ""
  os.execute("rm -rf " .. q(tmp))
  return code, out, err
end

-- The command log: one entry per invocation, oldest first:
-- {t = epoch seconds, argv = {...}, mutating = bool, exit = N, ms = N, fault = "fail"|"hang"|"delay"|nil}
function M.log(h)
  local entries = {}
  local s = read_file(h.state .. "/log.jsonl")
  if not s then
    return entries
  end
  for line in s:gmatch("[^\n]+") do
    local ok, e = pcall(cjson.decode, line)
    if ok then
      entries[#entries + 1] = e
    end
  end
  return entries
end

-- The mutating commands the simulator logged after entry `since`, as text,
-- oldest first.
function M.mutating(h, since)
  local out = {}
  for i, e in ipairs(M.log(h)) do
    if i > since and e.mutating then
      out[#out + 1] = table.concat(e.argv, " ")
    end
  end
  return out
end

-- Number of mutating commands logged after entry number since_index (0 = all).
function M.mutating_count(h, since_index)
  local n = 0
  for i, e in ipairs(M.log(h)) do
    if i > (since_index or 0) and e.mutating then
      n = n + 1
    end
  end
  return n
end

local function encode_array(list)
  if #list == 0 then
    return "[]"
  end
  return cjson.encode(list)
end

-- Replaces the fault rules (re-read by every invocation):
-- {match = Lua pattern on the space-joined argv, action = "fail"|"hang"|"delay",
--  exit = N, stderr = "...", stdout = "...", ms = N, times = N}
function M.set_faults(h, rules)
  write_atomic(h.state .. "/faults.json", encode_array(rules or {}) .. "\n")
end

function M.faults(h)
  local s = read_file(h.state .. "/faults.json")
  return s and cjson.decode(s) or {}
end

-- Simulator settings (settings.json): version ("0.35.20" default, "current" =
-- the newest modelled release, or a number), deploy_ms (a git:from-image build holds
-- the app's deploy lock that long), dump_size (bytes of an export),
-- resource_legacy_keys (resource:report json also with `resource-` keys).
function M.settings(h, tbl)
  write_atomic(h.state .. "/settings.json", cjson.encode(tbl or {}) .. "\n")
end

local function read_json(path)
  local s = read_file(path)
  if not s then
    return nil
  end
  return cjson.decode(s)
end

-- A table view of the simulated server:
-- {global = {...}, apps = {[name] = app}, services = {postgres = {[name] = svc}, redis = {...}}}
-- An app has env (decoded values), domains, docker_options, resources,
-- deploy, letsencrypt, and (derived here) mounts = {"host:container", ...}.
function M.state(h)
  local g = read_json(h.state .. "/global.json") or {}
  local s = { global = g, apps = {}, services = { postgres = {}, redis = {} } }
  for _, name in ipairs(g.apps or {}) do
    local a = read_json(h.state .. "/apps/" .. name .. ".json")
    if a then
      a.mounts = {}
      for _, o in ipairs((a.docker_options or {}).deploy or {}) do
        local m = o:match("^%-v (.*)$")
        if m then
          a.mounts[#a.mounts + 1] = m
        end
      end
      s.apps[name] = a
    end
  end
  for kind, names in pairs(g.services or {}) do
    s.services[kind] = s.services[kind] or {}
    for _, name in ipairs(names) do
      s.services[kind][name] = read_json(h.state .. "/services/" .. kind .. "/" .. name .. ".json")
    end
  end
  return s
end

-- A service's contents as the simulator keeps them (the bytes its next
-- `<kind>:export` streams, its last `<kind>:import`'s): set_service_data
-- puts data into a service, service_data reads it (nil: never set).
function M.set_service_data(h, kind, name, bytes)
  os.execute("mkdir -p " .. q(h.state .. "/service-data/" .. kind))
  write_atomic(h.state .. "/service-data/" .. kind .. "/" .. name, bytes)
end

function M.service_data(h, kind, name)
  return read_file(h.state .. "/service-data/" .. kind .. "/" .. name)
end

-- The stand-in directory of a host path under a storage mount (what the
-- simulator's `dokku run` reads and writes: $DOKKU_SIM_STATE/fs/<path>).
function M.fs_dir(h, host_path)
  return h.state .. "/fs" .. host_path
end

-- Forgets every app, service, log entry, fault and setting (keeps sshd and
-- the lock). Call it while no command runs.
function M.reset(h)
  local st = q(h.state)
  os.execute("rm -rf " .. st .. "/apps " .. st .. "/services " .. st .. "/global.json " .. st .. "/log.jsonl " ..
    st .. "/faults.json " .. st .. "/settings.json")
  os.execute("mkdir -p " .. st .. "/apps " .. st .. "/services/postgres " .. st .. "/services/redis")
end

return M
