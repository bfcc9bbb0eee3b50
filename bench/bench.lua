#!/usr/bin/env lua5.4
-- bench/bench.lua: the three measurements of `make bench` (bench/README.md).
--
--   1. per-command time over the SSH pool vs a bare libssh2 exec loop
--      (bench/bench_ssh_exec.c), same sshd, same run;        target <= 1.2
--   2. SSH handshakes per 100 free-tier provisions through the real
--      `mrprov serve` (DOKKU_POOL_SIZE=4), counted in sshd's log;
--                                                             target <= DOKKU_POOL_SIZE
--   3. one professional+Matrix provision with every simulated Dokku command
--      taking 200 ms, wall time vs the serial sum of its commands;
--                                                             target <= 0.5
--
-- Everything runs against tests/fixtures/sshd-harness (a real OpenSSH sshd on
-- a random loopback port, forced command tests/fixtures/dokku-sim). Run from
-- the repository root (the Makefile does): lua5.4 bench/bench.lua
--
-- Environment (all optional):
--   MRPROV_BIN         build/mrprov           MRPROV_ROOT  the current directory
--   BENCH_EXEC         build/bench/bench_ssh_exec
--   BENCH_EXEC_N       400   commands per side in measurement 1
--   BENCH_PROVISIONS   100   provisions in measurement 2
--   BENCH_CONCURRENCY  4     provisions in flight at once (clients; mrprov WORKERS too)
--   BENCH_BUDGET_S     300   measurement 2 starts no provision after this many
--                            seconds; the count is then scaled to 100 (said so)
--   BENCH_POOL_SIZE    4     DOKKU_POOL_SIZE of mrprov in 2 and 3
--   BENCH_DELAY_MS     200   per-command delay of measurement 3
--   BENCH_ONLY         e.g. "1,3": run only these measurements
--   BENCH_LOGIN_SHELL_RC=keep  let the sshd sessions source the login user's
--                      ~/.bashrc (see bench/sshd-noprofile; default: skipped)
--   MRPROV_KEEP_TMP=1  keep the temporary directories (logs, simulator state)
--
-- Exit status: 0 when every measurement was taken (a target missed is
-- printed, not an error), 1 when a measurement itself failed.
--
-- `lua5.4 bench/bench.lua client BASE RUNID FIRST STRIDE N DEADLINE` is the
-- provisioning client measurement 2 starts BENCH_CONCURRENCY of.

local function getenv_num(name, default)
  local v = tonumber(os.getenv(name) or "")
  return v or default
end

local ROOT = os.getenv("MRPROV_ROOT") or os.getenv("PWD") or "."
package.path = ROOT .. "/tests/integration/?.lua;" .. package.path

local socket = require "socket"
local http = require "socket.http"
local cjson = require "cjson"

---------------------------------------------------------------------------
-- client mode (measurement 2): provisions FIRST, FIRST+STRIDE, ... < N, each
-- with Prefer: wait, one at a time, until DEADLINE (epoch seconds); one line
-- per provision on stdout.
---------------------------------------------------------------------------
local function client_main(base, runid, first, stride, n, deadline)
  local ltn12 = require "ltn12"
  http.TIMEOUT = 660
  for i = first, n - 1, stride do
    if socket.gettime() >= deadline then
      print(string.format("SKIP %d", i))
    else
      local body = cjson.encode({ subscription_id = string.format("bench%s_%03d", runid, i), tier = "free" })
      local chunks = {}
      local t0 = socket.gettime()
      local _, code = http.request({
        url = base .. "/api/v1/provision", method = "POST", source = ltn12.source.string(body),
        sink = ltn12.sink.table(chunks),
        headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#body),
                    ["prefer"] = "wait=600" },
      })
      local dt = socket.gettime() - t0
      local ok, j = pcall(cjson.decode, table.concat(chunks))
      local status = ok and type(j) == "table" and j.status or "?"
      print(string.format("DONE %d %s %s %.3f", i, tostring(code), tostring(status), dt))
    end
    io.stdout:flush()
  end
end

if arg[1] == "client" then
  client_main(arg[2], arg[3], tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6]), tonumber(arg[7]))
  os.exit(0)
end

---------------------------------------------------------------------------
-- the driver
---------------------------------------------------------------------------
local H = require "harness"
local D = require "dokku_harness"

local EXEC_BIN = os.getenv("BENCH_EXEC") or (ROOT .. "/build/bench/bench_ssh_exec")
local EXEC_N = math.floor(getenv_num("BENCH_EXEC_N", 400))
local PROVISIONS = math.floor(getenv_num("BENCH_PROVISIONS", 100))
local CONCURRENCY = math.floor(getenv_num("BENCH_CONCURRENCY", 4))
local BUDGET_S = getenv_num("BENCH_BUDGET_S", 300)
local POOL_SIZE = math.floor(getenv_num("BENCH_POOL_SIZE", 4))
local DELAY_MS = getenv_num("BENCH_DELAY_MS", 200)
local KEEP_RC = os.getenv("BENCH_LOGIN_SHELL_RC") == "keep"
local ONLY = os.getenv("BENCH_ONLY")

local q = H.sh_quote

local function selected(n)
  if not ONLY or ONLY == "" then
    return true
  end
  for w in ONLY:gmatch("%d+") do
    if tonumber(w) == n then
      return true
    end
  end
  return false
end

local function say(fmt, ...)
  io.stdout:write(string.format(fmt, ...), "\n")
  io.stdout:flush()
end

local function read_lines(path)
  local out = {}
  local f = io.open(path, "rb")
  if not f then
    return out
  end
  for line in f:lines() do
    out[#out + 1] = line
  end
  f:close()
  return out
end

local function median(list)
  local s = {}
  for i, v in ipairs(list) do
    s[i] = v
  end
  table.sort(s)
  local n = #s
  if n == 0 then
    return 0
  end
  if n % 2 == 1 then
    return s[(n + 1) // 2]
  end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

local function mean(list)
  local t = 0
  for _, v in ipairs(list) do
    t = t + v
  end
  return #list > 0 and t / #list or 0
end

-- Lines of sshd.log from line `from` on that match pattern.
local function count_log(h, pattern, from)
  local n = 0
  for i, line in ipairs(read_lines(h.dir .. "/sshd.log")) do
    if i > from and line:find(pattern) then
      n = n + 1
    end
  end
  return n
end

local function log_len(h)
  return #read_lines(h.dir .. "/sshd.log")
end

local function mrprov_env(h, extra)
  local env = {
    DOKKU_HOST = "127.0.0.1", DOKKU_PORT = tostring(h.port), DOKKU_USER = h.user,
    DOKKU_SSH_KEY_PATH = h.key, DOKKU_KNOWN_HOSTS = h.dir .. "/mrprov_known_hosts",
    LETSENCRYPT_EMAIL = "ops@example.com", DOKKU_POOL_SIZE = tostring(POOL_SIZE),
    WORKERS = tostring(CONCURRENCY), LOG_LEVEL = "INFO",
  }
  for k, v in pairs(extra or {}) do
    env[k] = v
  end
  return env
end

local function wait_ready(srv, timeout)
  return H.wait_for(srv, "/ready", function(j)
    return j and j.checks and j.checks.dokku == "ok"
  end, timeout or 30)
end

-- The time (ms) a login shell of the current user takes to start the way
-- sshd starts it for a command, with and without SHLVL (see sshd-noprofile).
local function shell_cost_ms()
  local shell = os.getenv("SHELL") or "/bin/sh"
  local pw = io.popen("getent passwd \"$(id -un)\" | cut -d: -f7")
  local s = pw:read("l")
  pw:close()
  if s and s ~= "" then
    shell = s
  end
  local home = os.getenv("HOME") or "/"
  local function cost(extra)
    local t0 = socket.gettime()
    for _ = 1, 5 do
      os.execute("cd / && env -i HOME=" .. q(home) .. " SSH_CLIENT='127.0.0.1 1 22' " .. extra .. " " .. q(shell) ..
        " -c true </dev/null >/dev/null 2>&1")
    end
    return (socket.gettime() - t0) / 5 * 1000
  end
  return shell, cost(""), cost("SHLVL=1")
end

---------------------------------------------------------------------------
-- 1. per-command time
---------------------------------------------------------------------------
local function bench_exec(h)
  say("\n== 1. per-command time: pool vs bare libssh2 (`version` x %d each) ==", EXEC_N)
  local f = io.open(EXEC_BIN, "rb")
  if not f then
    error(EXEC_BIN .. " is missing (cmake --build build --target bench_ssh_exec)")
  end
  f:close()
  local env = string.format("MRPROV_SSH_PORT=%d MRPROV_SSH_USER=%s MRPROV_SSH_KEY=%s MRPROV_SSH_KNOWN_HOSTS=%s",
    h.port, q(h.user), q(h.key), q(h.known_hosts))
  local p = io.popen(env .. " " .. q(EXEC_BIN) .. " -n " .. EXEC_N .. " 2>&1; echo \"rc=$?\"")
  local res, rc = nil, nil
  for line in p:lines() do
    if line:match("^RESULT ") then
      res = {}
      for k, v in line:gmatch("([%w_]+)=(%S+)") do
        res[k] = tonumber(v)
      end
    elseif line:match("^rc=%d+$") then
      rc = tonumber(line:match("%d+"))
    else
      say("  %s", line)
    end
  end
  p:close()
  if rc ~= 0 or not res then
    error("bench_ssh_exec failed (exit " .. tostring(rc) .. ")")
  end
  return {
    figure = "per-command time, pool (mean)",
    value = string.format("%.2f ms", res.pool_mean_ms),
    reference = string.format("bare libssh2 %.2f ms", res.bare_mean_ms),
    ratio = res.ratio_mean, target = 1.2,
    note = string.format("median %.2f vs %.2f ms (%.3f)", res.pool_median_ms, res.bare_median_ms, res.ratio_median),
  }
end

---------------------------------------------------------------------------
-- 2. handshakes per 100 provisions
---------------------------------------------------------------------------
local function bench_handshakes(h)
  say("\n== 2. SSH handshakes per %d free-tier provisions (DOKKU_POOL_SIZE=%d, %d at once) ==", PROVISIONS, POOL_SIZE,
    CONCURRENCY)
  D.reset(h)
  local log0 = log_len(h)
  local t_start = socket.gettime()
  local srv = H.start({ env = mrprov_env(h) })
  local ok, result = pcall(function()
    wait_ready(srv)
    -- the pool connects its sessions at start: let them finish, so that the
    -- handshakes before the first provision are told from those during
    local t_conn = socket.gettime() + 10
    while socket.gettime() < t_conn do
      local _, _, m = H.request(srv, "GET", "/metrics")
      local open = tonumber(m and m:match("\nmrprov_ssh_connections_open%s+(%S+)") or "")
      if open and open >= POOL_SIZE then
        break
      end
      socket.sleep(0.05)
    end
    local at_start = count_log(h, "Accepted publickey", log0)
    local sim0 = #D.log(h)
    local runid = tostring(os.time() % 100000)
    local deadline = socket.gettime() + BUDGET_S
    local t0 = socket.gettime()
    local clients = {}
    for c = 0, CONCURRENCY - 1 do
      local cmd = string.format("MRPROV_ROOT=%s lua5.4 %s client %s %s %d %d %d %.3f 2>&1", q(ROOT),
        q(ROOT .. "/bench/bench.lua"), q(srv.base), runid, c, CONCURRENCY, PROVISIONS, deadline)
      clients[#clients + 1] = io.popen(cmd)
    end
    local done, skipped, failed, times, odd = 0, 0, 0, {}, {}
    for _, p in ipairs(clients) do
      for line in p:lines() do
        local i, code, status, dt = line:match("^DONE (%d+) (%S+) (%S+) (%S+)$")
        if i then
          if code == "200" and status == "running" then
            done = done + 1
            times[#times + 1] = tonumber(dt)
          else
            failed = failed + 1
            odd[#odd + 1] = line
          end
        elseif line:match("^SKIP ") then
          skipped = skipped + 1
        else
          odd[#odd + 1] = line
        end
      end
      p:close()
    end
    local wall = socket.gettime() - t0
    -- the pool stays connected; nothing more must have connected
    local accepted = count_log(h, "Accepted publickey", log0)
    local tcp = count_log(h, "Connection from ", log0)
    local sim = D.log(h)
    local ncmd = #sim - sim0
    local open = "?"
    local _, _, raw = H.request(srv, "GET", "/metrics")
    if raw then
      open = raw:match("\nmrprov_ssh_connections_open%s+(%S+)") or open
    end
    say("  %d provisions succeeded, %d failed, %d not started (budget %d s) in %.1f s (%.2f provisions/s)", done,
      failed, skipped, BUDGET_S, wall, done / wall)
    for k = 1, math.min(#odd, 5) do
      say("  unexpected: %s", odd[k])
    end
    say("  per provision (HTTP, Prefer: wait): mean %.2f s, median %.2f s; %d Dokku commands in all (%.1f per " ..
      "provision, %.0f per second)", mean(times), median(times), ncmd, done > 0 and ncmd / done or 0, ncmd / wall)
    say("  sshd: %d TCP connections, %d publickey authentications since mrprov started (%d before the first " ..
      "provision, %d during the provisions); mrprov_ssh_connections_open %s", tcp, accepted, at_start,
      accepted - at_start, open)
    if done == 0 then
      error("no provision succeeded")
    end
    local n = done + failed
    local per100 = at_start + (accepted - at_start) * 100 / n
    local scaled = n ~= 100
    if scaled then
      say("  measured over %d provisions, not 100: scaled to 100 as %d at start + %d during x 100/%d = %.1f", n,
        at_start, accepted - at_start, n, per100)
    end
    return {
      figure = "SSH handshakes / 100 provisions",
      value = scaled and string.format("%.1f (%d in %d)", per100, accepted, n) or tostring(accepted),
      reference = "DOKKU_POOL_SIZE " .. POOL_SIZE,
      ratio = per100 / POOL_SIZE, target = 1.0,
      met = per100 <= POOL_SIZE,
      note = string.format("%d TCP connections; %d failed provisions", tcp, failed),
      failed = failed,
    }
  end)
  H.stop(srv)
  say("  (mrprov + sshd up %.1f s)", socket.gettime() - t_start)
  if not ok then
    error(result, 0)
  end
  return result
end

---------------------------------------------------------------------------
-- 3. one professional+Matrix provision at DELAY_MS per command
---------------------------------------------------------------------------
local function bench_provision(h)
  say("\n== 3. one professional+Matrix provision, every Dokku command %d ms ==", DELAY_MS)
  D.reset(h)
  local srv = H.start({ env = mrprov_env(h) })
  local ok, result = pcall(function()
    wait_ready(srv)
    D.set_faults(h, { { match = ".", action = "delay", ms = DELAY_MS } })
    local sim0 = #D.log(h)
    local t0 = socket.gettime()
    local code, j, raw = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "bench_pm_" .. os.time(), tier = "professional", enable_matrix = true },
      { Prefer = "wait=600" })
    local wall = socket.gettime() - t0
    D.set_faults(h, {})
    if code ~= 200 or not j or j.status ~= "running" then
      error("the provision did not succeed: " .. tostring(code) .. " " .. tostring(raw))
    end
    local app = j.app_name
    local entries, others = {}, 0
    for k, e in ipairs(D.log(h)) do
      if k > sim0 then
        local mine = false
        for _, a in ipairs(e.argv) do
          if a:sub(1, #app) == app then
            mine = true
          end
        end
        if mine then
          entries[#entries + 1] = e
        else
          others = others + 1
        end
      end
    end
    local sum, nmut, delayed, first, last = 0, 0, 0, math.huge, 0
    local per_obj = {}
    for _, e in ipairs(entries) do
      sum = sum + e.ms / 1000
      if e.mutating then
        nmut = nmut + 1
      end
      if e.fault == "delay" then
        delayed = delayed + 1
      end
      first = math.min(first, e.t)
      last = math.max(last, e.t + e.ms / 1000)
      for _, a in ipairs(e.argv) do
        if e.mutating and a:sub(1, #app) == app then
          per_obj[a] = (per_obj[a] or 0) + 1
        end
      end
    end
    local n = #entries
    -- most commands in flight at once, from the simulator's own timings
    local ev = {}
    for _, e in ipairs(entries) do
      ev[#ev + 1] = { e.t, 1 }
      ev[#ev + 1] = { e.t + e.ms / 1000, -1 }
    end
    table.sort(ev, function(a, b)
      if a[1] ~= b[1] then
        return a[1] < b[1]
      end
      return a[2] < b[2]
    end)
    local cur, peak = 0, 0
    for _, x in ipairs(ev) do
      cur = cur + x[2]
      peak = math.max(peak, cur)
    end
    local busiest, busiest_n = "?", 0
    for name, c in pairs(per_obj) do
      if c > busiest_n or (c == busiest_n and name < busiest) then
        busiest, busiest_n = name, c
      end
    end
    say("  %s: %d commands (%d mutating, %d probes), %d delayed by the simulator; %d other commands meanwhile",
      app, n, nmut, n - nmut, delayed, others)
    say("  wall (HTTP request with Prefer: wait) %.2f s; first command to last %.2f s; job's own time %s s",
      wall, last - first, tostring(j.provisioning_time_seconds))
    say("  serial sum of the commands' simulator time %.2f s (%d x %d ms = %.2f s)", sum, n, DELAY_MS,
      n * DELAY_MS / 1000)
    say("  up to %d commands at once; most mutating commands on one app or service: %d (%s), which never " ..
      "overlap -> at least %.1f s", peak, busiest_n, busiest, busiest_n * DELAY_MS / 1000)
    if delayed < n then
      say("  note: %d commands were not delayed (the fault rule did not apply to them)", n - delayed)
    end
    if n == 0 then
      error("the simulator logged no command for " .. app)
    end
    return {
      figure = "pro+Matrix provision wall",
      value = string.format("%.2f s", wall),
      reference = string.format("serial sum %.2f s (%d cmds)", sum, n),
      ratio = wall / sum, target = 0.5,
      note = string.format("%d x %d ms = %.1f s; ratio to that %.3f", n, DELAY_MS, n * DELAY_MS / 1000,
        wall / (n * DELAY_MS / 1000)),
    }
  end)
  D.set_faults(h, {})
  H.stop(srv)
  if not ok then
    error(result, 0)
  end
  return result
end

---------------------------------------------------------------------------
-- main
---------------------------------------------------------------------------
local function start_sshd()
  local p = io.popen("mktemp -d /tmp/mrprov-bench-XXXXXX")
  local dir = p:read("l")
  p:close()
  if not KEEP_RC then
    -- the harness takes its sshd from $SSHD; start it here so it gets ours,
    -- then D.start finds it running and describes it
    local rc = os.execute("SSHD=" .. q(ROOT .. "/bench/sshd-noprofile") .. " " .. q(D.harness) .. " start " ..
      q(dir) .. " >/dev/null")
    if not rc then
      error("sshd-harness start failed")
    end
  end
  return D.start({ dir = dir })
end

local function main()
  local t_all = socket.gettime()
  say("mrprov bench — %s, %s cores", os.date("!%Y-%m-%dT%H:%M:%SZ"),
    (io.popen("nproc"):read("l") or "?"))
  local shell, with_rc, without_rc = shell_cost_ms()
  say("login shell %s for an sshd command: %.1f ms with ~/.bashrc, %.1f ms without; sessions %s it%s", shell,
    with_rc, without_rc, KEEP_RC and "source" or "skip",
    KEEP_RC and " (BENCH_LOGIN_SHELL_RC=keep)" or " (bench/sshd-noprofile)")
  local h = start_sshd()
  say("sshd-harness: 127.0.0.1:%d, user %s, dir %s", h.port, h.user, h.dir)

  local rows, errors = {}, 0
  local sections = { { 1, bench_exec }, { 2, bench_handshakes }, { 3, bench_provision } }
  for _, s in ipairs(sections) do
    if selected(s[1]) then
      local ok, r = pcall(s[2], h)
      if ok then
        rows[#rows + 1] = r
      else
        errors = errors + 1
        say("  MEASUREMENT FAILED: %s", tostring(r))
        local names = { "per-command time", "SSH handshakes / 100 provisions", "pro+Matrix provision wall" }
        rows[#rows + 1] = { figure = names[s[1]], failed_measurement = true }
      end
    end
  end

  if os.getenv("MRPROV_KEEP_TMP") then
    say("\nkept: %s (sshd.log, state/log.jsonl) and the mrprov directories under /tmp/mrprov-it-*", h.dir)
    D.stop_sshd(h)
  else
    D.stop(h)
    os.execute("rm -rf " .. q(h.dir))
  end
  H.cleanup()

  say("\n== summary (%.0f s) ==", socket.gettime() - t_all)
  local fmt = "%-33s %-20s %-30s %-7s %-7s %s"
  say(fmt, "figure", "measured", "reference", "ratio", "target", "")
  local missed = 0
  for _, r in ipairs(rows) do
    if r.failed_measurement then
      say(fmt, r.figure, "-", "-", "-", "-", "MEASUREMENT FAILED")
    else
      local met = r.met
      if met == nil then
        met = r.ratio <= r.target
      end
      if not met then
        missed = missed + 1
      end
      say(fmt, r.figure, r.value, r.reference, string.format("%.3f", r.ratio),
        r.target_text or string.format("<= %.1f", r.target), met and "met" or "NOT MET")
    end
  end
  for _, r in ipairs(rows) do
    if r.note then
      say("  %s: %s", r.figure, r.note)
    end
  end
  if missed > 0 then
    say("%d target(s) NOT MET", missed)
  end
  return errors == 0
end

local ok, r = pcall(main)
if not ok then
  io.stderr:write("bench: " .. tostring(r) .. "\n")
  pcall(D.stop_all)
  pcall(H.cleanup)
  os.exit(1)
end
os.exit(r and 0 or 1)
