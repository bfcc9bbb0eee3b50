#!/usr/bin/env lua5.4
-- bench/bench.lua: the six measurements of `make bench` (bench/README.md).
--
--   1. HTTP: wrk on GET /health and GET /api/v1/status/{id} (1000 dry-run
--      instances in the store) vs bench_http_bare (libmicrohttpd, same flags)
--      and, when installed, FastAPI under uvicorn (bench/reference_fastapi.py)
--                                  targets >= 0.8x, >= 0.5x bare; >= 5x FastAPI
--   2. SSH: per-command time over the pool vs a bare libssh2 exec loop
--      (bench/bench_ssh_exec.c), target <= 1.2; SSH handshakes per 100
--      free-tier provisions through `mrprov serve`, target <= DOKKU_POOL_SIZE
--   3. one professional+Matrix provision with every simulated Dokku command
--      taking 200 ms, wall time vs the serial sum of its commands; <= 0.5
--   4. 200 provisions at once, simulator at 0 ms: all complete, wall time,
--      peak RSS (<= 64 MB), idle RSS (<= 10 MB)
--   5. SIGHUP every 100 ms during a 10 s wrk run: no non-2xx; reload time
--      with 100 tier files (<= 50 ms)
--   6. webhook acknowledgement latency under wrk load: p99 <= 100 ms
--   7. drift sweep of 1000 instances, simulator at 5 ms per command: <= 30 s;
--      a provision started during it: <= 1 s later than without a sweep
--   8. a fleet rollout of 200 instances (mindroom profile, readiness checked),
--      simulator at 20 ms per command, N (4) at once: <= 1.2 x (200 / N) x
--      one instance's update (a rollout of one)
--   9. a fleet of Dokku hosts (issue 16): 300 provisions on three hosts vs
--      the same on one, simulator at 20 ms per command: <= 0.45; SSH
--      handshakes <= the sum of the pool sizes
--
-- 2, 3 and 4 run against tests/fixtures/sshd-harness (a real OpenSSH sshd on
-- a random loopback port, forced command tests/fixtures/dokku-sim); 1, 5 and
-- 6 against a dry-run mrprov. Run from the repository root (the Makefile
-- does): lua5.4 bench/bench.lua. Every knob is a BENCH_* variable, listed
-- with its default in bench/README.md; BENCH_ONLY="1,5" runs a selection.
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
local BARE_BIN = os.getenv("BENCH_HTTP_BARE") or (ROOT .. "/build/bench/bench_http_bare")
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

local function percentile(list, p)
  local s = {}
  for i, v in ipairs(list) do
    s[i] = v
  end
  table.sort(s)
  if #s == 0 then
    return 0
  end
  return s[math.max(1, math.ceil(#s * p))]
end

-- VmRSS, VmHWM, RssAnon and RssFile of a process, in MB (nil when gone).
local function rss(pid)
  local f = io.open("/proc/" .. pid .. "/status", "r")
  if not f then
    return nil
  end
  local t = f:read("a")
  f:close()
  local function kb(name)
    return (tonumber(t:match(name .. ":%s*(%d+)")) or 0) / 1024
  end
  return { rss = kb("VmRSS"), hwm = kb("VmHWM"), anon = kb("RssAnon"), file = kb("RssFile"),
           threads = tonumber(t:match("Threads:%s*(%d+)")) }
end

local function rss_text(m)
  return string.format("VmRSS %.1f MB (anon %.1f, file-backed %.1f), VmHWM %.1f MB, %d threads", m.rss, m.anon,
    m.file, m.hwm, m.threads or 0)
end

-- A free loopback port (bound and released at once).
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- The value of one series of the Prometheus text of srv ("name{labels}").
local function metric(srv, series)
  local _, _, raw = H.request(srv, "GET", "/metrics")
  local pat = "\n" .. series:gsub("[%-%.%+%[%]%(%)%$%^%%%?%*{}]", "%%%0") .. "%s+(%S+)"
  return tonumber(raw and raw:match(pat) or "") or 0
end

local WRK_THREADS = math.floor(getenv_num("BENCH_WRK_THREADS", 2))
local WRK_CONNECTIONS = math.floor(getenv_num("BENCH_WRK_CONNECTIONS", 16))
local WRK_SECONDS = getenv_num("BENCH_WRK_SECONDS", 5)

local function to_ms(num, unit)
  local v = tonumber(num)
  if unit == "us" then
    return v / 1000
  elseif unit == "s" then
    return v * 1000
  elseif unit == "m" then
    return v * 60000
  end
  return v
end

-- Runs wrk (opts: url, script, seconds, env, connections) and parses its
-- report: rps, requests, non2xx, errors (socket), p50/p90/p99/max in ms.
-- With opts.background, returns a function that waits and parses.
local function wrk(opts)
  local env = "BENCH_WRK_THREADS=" .. WRK_THREADS
  for k, v in pairs(opts.env or {}) do
    env = env .. " " .. k .. "=" .. q(v)
  end
  local cmd = string.format("%s wrk -t%d -c%d -d%ds --timeout 10s --latency %s %s 2>&1", env, WRK_THREADS,
    opts.connections or WRK_CONNECTIONS, math.floor(opts.seconds or WRK_SECONDS),
    opts.script and ("-s " .. q(opts.script)) or "", q(opts.url))
  local p = io.popen(cmd)
  local function finish()
    local out = p:read("a")
    p:close()
    local r = { raw = out, non2xx = 0, errors = 0 }
    r.rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
    r.requests = tonumber(out:match("(%d+) requests in"))
    r.non2xx = tonumber(out:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0
    local c, rd, w, t = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
    if c then
      r.errors = tonumber(c) + tonumber(rd) + tonumber(w) + tonumber(t)
    end
    for pct, num, unit in out:gmatch("\n%s+(%d+)%%%s+([%d%.]+)(%a+)") do
      r["p" .. pct] = to_ms(num, unit)
    end
    local mx, mu = out:match("Latency%s+[%d%.]+%a+%s+[%d%.]+%a+%s+([%d%.]+)(%a+)")
    r.max = mx and to_ms(mx, mu)
    if not r.rps or not r.requests then
      error("wrk gave no figures:\n" .. out)
    end
    return r
  end
  if opts.background then
    return finish
  end
  return finish()
end

local function wrk_line(name, r)
  say("  %-28s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms  (%d requests, %d non-2xx, %d socket errors)",
    name, r.rps, r.p50 or 0, r.p99 or 0, r.max or 0, r.requests, r.non2xx, r.errors)
end

local API_KEY = "bench-api-key-0123456789abcdef"

-- A dry-run mrprov (DOKKU_HOST unset) with the default WORKERS (4; the
-- test harness's own default is 2), an API key, LOG_LEVEL=INFO.
local function start_dry(extra)
  local env = { LOG_LEVEL = "INFO", PROVISIONER_API_KEYS = API_KEY, WORKERS = "4" }
  for k, v in pairs(extra or {}) do
    env[k] = v
  end
  return H.start({ env = env })
end

-- Fills the store the way the product does: n provisions of tier `tier`
-- through POST /api/v1/provision, ids prefix0001.., then waits until every
-- job has finished. Returns the seconds it took and the failures.
local function provision_many(srv, n, prefix, tier, timeout)
  local auth = { ["X-API-Key"] = API_KEY }
  local jobs0 = metric(srv, 'mrprov_jobs_total{operation="provision",outcome="succeeded"}')
  local fail0 = metric(srv, 'mrprov_jobs_total{operation="provision",outcome="failed"}')
  local t0 = socket.gettime()
  for i = 1, n do
    local code, _, raw = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = string.format("%s%04d", prefix, i), account_id = "acc_bench", tier = tier or "free" },
      auth)
    if code ~= 202 and code ~= 200 then
      error(string.format("provision %d answered %s: %s", i, tostring(code), tostring(raw)))
    end
  end
  local submitted = socket.gettime() - t0
  local deadline = socket.gettime() + (timeout or 300)
  local done, failed
  repeat
    socket.sleep(0.25)
    done = metric(srv, 'mrprov_jobs_total{operation="provision",outcome="succeeded"}') - jobs0
    failed = metric(srv, 'mrprov_jobs_total{operation="provision",outcome="failed"}') - fail0
  until done + failed >= n or socket.gettime() > deadline
  return socket.gettime() - t0, done, failed, submitted
end

-- The lines a shell command prints.
local function read_lines_cmd(cmd)
  local out = {}
  local p = io.popen(cmd .. " 2>/dev/null")
  for line in p:lines() do
    out[#out + 1] = line
  end
  p:close()
  return out
end

-- Waits until srv answers /ready with 200 (dry-run: no Dokku check).
local function wait_up(srv)
  return H.wait_for(srv, "/ready", function(j)
    return j and j.ready
  end, 30)
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
    DOKKU_SSH_KEY_PATH = h.key, DOKKU_KNOWN_HOSTS = h.known_hosts,
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
-- 2a. per-command time
---------------------------------------------------------------------------
-- Runs a measurement fn() against srv, then stops srv (and calls after(),
-- when given) whether fn failed or not; returns fn's result or raises its
-- error again.
local function measure_on(srv, fn, after)
  local ok, result = pcall(fn)
  H.stop(srv)
  if after then
    after()
  end
  if not ok then
    error(result, 0)
  end
  return result
end

local function bench_exec(h)
  say("\n== 2a. per-command time: pool vs bare libssh2 (`version` x %d each) ==", EXEC_N)
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
-- 2b. handshakes per 100 provisions
---------------------------------------------------------------------------
local function bench_handshakes(h)
  say("\n== 2b. SSH handshakes per %d free-tier provisions (DOKKU_POOL_SIZE=%d, %d at once) ==", PROVISIONS, POOL_SIZE,
    CONCURRENCY)
  D.reset(h)
  local log0 = log_len(h)
  local t_start = socket.gettime()
  local srv = H.start({ env = mrprov_env(h) })
  return measure_on(srv, function()
    wait_ready(srv)
    -- the pool connects its sessions at start: let them finish, so that the
    -- handshakes before the first provision are told from those during
    local t_conn = socket.gettime() + 10
    while socket.gettime() < t_conn do
      local _, _, m = H.request(srv, "GET", "/metrics")
      local open = tonumber(m and m:match('\nmrprov_ssh_connections_open{host="default"}%s+(%S+)') or "")
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
      open = raw:match('\nmrprov_ssh_connections_open{host="default"}%s+(%S+)') or open
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
  end, function()
    say("  (mrprov + sshd up %.1f s)", socket.gettime() - t_start)
  end)
end

---------------------------------------------------------------------------
-- 3. one professional+Matrix provision at DELAY_MS per command
---------------------------------------------------------------------------
local function bench_provision(h)
  say("\n== 3. one professional+Matrix provision, every Dokku command %d ms ==", DELAY_MS)
  D.reset(h)
  local srv = H.start({ env = mrprov_env(h) })
  return measure_on(srv, function()
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
  end, function()
    D.set_faults(h, {})
  end)
end

---------------------------------------------------------------------------
-- 1. HTTP: mrprov vs a bare libmicrohttpd server (and FastAPI)
---------------------------------------------------------------------------
local HTTP_INSTANCES = math.floor(getenv_num("BENCH_HTTP_INSTANCES", 1000))
local PY = os.getenv("BENCH_PYTHON") or "/usr/bin/python3"

-- Starts a server command in the background; returns its pid.
local function spawn(cmd, log)
  local p = io.popen("sh -c " .. q("exec " .. cmd .. " >" .. q(log) .. " 2>&1") .. " & echo $!")
  local pid = tonumber(p:read("l"))
  p:close()
  return pid
end

local function kill(pid)
  if pid then
    os.execute("kill " .. pid .. " 2>/dev/null; sleep 0.2; kill -KILL " .. pid .. " 2>/dev/null")
  end
end

local function wait_http(base, path, timeout)
  local deadline = socket.gettime() + (timeout or 20)
  while socket.gettime() < deadline do
    local _, code = http.request(base .. path)
    if code == 200 then
      return true
    end
    socket.sleep(0.1)
  end
  return false
end

local function bench_http()
  say("\n== 1. HTTP: wrk -t%d -c%d, %d s a run (1 s warm-up), against mrprov, a bare libmicrohttpd server and " ..
    "FastAPI ==", WRK_THREADS, WRK_CONNECTIONS, WRK_SECONDS)
  local srv = start_dry()
  local pids, rows = {}, {}
  local ok, err = pcall(function()
    wait_up(srv)
    local idle = rss(srv.pid)
    say("  mrprov (dry-run, WORKERS=4) idle after start: %s", rss_text(idle))
    local t, done, failed, sub = provision_many(srv, HTTP_INSTANCES, "bench_http_", "free", 300)
    say("  store filled with %d dry-run free-tier provisions through POST /api/v1/provision: submitted in %.1f s, " ..
      "all finished in %.1f s (%d succeeded, %d failed)", HTTP_INSTANCES, sub, t, done, failed)
    if done < HTTP_INSTANCES then
      error("only " .. done .. " of " .. HTTP_INSTANCES .. " provisions succeeded")
    end
    local bare_log = srv.dir .. "/bare.log"
    pids.bare = spawn(q(BARE_BIN) .. " 0", bare_log)
    local bare_port
    for _ = 1, 50 do
      bare_port = (H.read_file(bare_log) or ""):match("port (%d+)")
      if bare_port then
        break
      end
      socket.sleep(0.05)
    end
    if not bare_port then
      error("bench_http_bare did not start: " .. (H.read_file(bare_log) or ""))
    end
    local bare = "http://127.0.0.1:" .. bare_port
    local status_env = { BENCH_STATUS_PREFIX = "bench_http_", BENCH_STATUS_N = tostring(HTTP_INSTANCES),
                         BENCH_API_KEY = API_KEY }
    local script = ROOT .. "/bench/wrk/status.lua"
    local function run(name, url, with_script)
      local o = { url = url, script = with_script and script or nil, env = with_script and status_env or nil }
      wrk({ url = o.url, script = o.script, env = o.env, seconds = 1 })
      local r = wrk(o)
      wrk_line(name, r)
      if r.non2xx > 0 or r.errors > 0 then
        error(name .. ": " .. r.non2xx .. " non-2xx answers, " .. r.errors .. " socket errors")
      end
      return r
    end
    local r_bare_h = run("bare MHD, GET /health", bare .. "/health")
    local r_h = run("mrprov GET /health", srv.base .. "/health")
    local r_s = run("mrprov GET /api/v1/status/{id}", srv.base .. "/", true)
    local r_bare_s = run("bare MHD, same paths", bare .. "/", true)
    local after = rss(srv.pid)
    say("  mrprov after the runs: %s", rss_text(after))
    H.stop(srv)
    rows[#rows + 1] = {
      figure = "GET /health throughput", value = string.format("%.0f req/s", r_h.rps),
      reference = string.format("bare MHD %.0f req/s", r_bare_h.rps), ratio = r_h.rps / r_bare_h.rps, target = 0.8,
      cmp = ">=", note = string.format("p99 %.2f ms vs %.2f ms", r_h.p99 or 0, r_bare_h.p99 or 0),
    }
    local status_row = {
      figure = "GET /api/v1/status throughput", value = string.format("%.0f req/s", r_s.rps),
      reference = string.format("bare MHD %.0f req/s", r_bare_s.rps), ratio = r_s.rps / r_bare_s.rps,
      target = 0.5, cmp = ">=",
      note = string.format("%d instances in the store; p99 %.2f ms vs %.2f ms", HTTP_INSTANCES, r_s.p99 or 0,
        r_bare_s.p99 or 0),
    }
    rows[#rows + 1] = status_row
    -- FastAPI, when Debian's python3-fastapi and python3-uvicorn are there
    if os.execute(q(PY) .. " -c 'import fastapi, uvicorn' 2>/dev/null") ~= true then
      say("  FastAPI reference skipped: %s cannot import fastapi and uvicorn (scripts/install-deps.sh --bench)", PY)
      return
    end
    local port = free_port()
    pids.py = spawn("env BENCH_STATE_DB=" .. q(srv.env.STATE_DB) .. " " .. q(PY) .. " -m uvicorn --app-dir " ..
      q(ROOT .. "/bench") .. " reference_fastapi:app --host 127.0.0.1 --port " .. port ..
      " --log-level warning --no-access-log", srv.dir .. "/uvicorn.log")
    local py = "http://127.0.0.1:" .. port
    if not wait_http(py, "/health", 20) then
      error("uvicorn did not start: " .. (H.read_file(srv.dir .. "/uvicorn.log") or ""))
    end
    local r_py_h = run("FastAPI GET /health", py .. "/health")
    local r_py_s = run("FastAPI GET /api/v1/status/{id}", py .. "/", true)
    rows[#rows + 1] = {
      figure = "GET /api/v1/status vs FastAPI", value = string.format("%.0f req/s", r_s.rps),
      reference = string.format("FastAPI %.0f req/s", r_py_s.rps), ratio = r_s.rps / r_py_s.rps, target = 5,
      cmp = ">=", note = string.format("/health: mrprov %.0f req/s, FastAPI %.0f req/s (%.1fx); uvicorn, one " ..
        "worker process", r_h.rps, r_py_h.rps, r_h.rps / r_py_h.rps),
    }
  end)
  kill(pids.bare)
  kill(pids.py)
  H.stop(srv)
  if not ok then
    error(err, 0)
  end
  return rows
end

---------------------------------------------------------------------------
-- 4. scale: SCALE_N provisions at once, simulator at 0 ms; RSS
---------------------------------------------------------------------------
local SCALE_N = math.floor(getenv_num("BENCH_SCALE_N", 200))
local SCALE_BUDGET_S = getenv_num("BENCH_SCALE_BUDGET_S", 300)

local function bench_scale(h)
  say("\n== 4. scale: %d free-tier provisions submitted at once, simulator at 0 ms per command, default " ..
    "WORKERS and DOKKU_POOL_SIZE (4) ==", SCALE_N)
  -- idle with the defaults of `make run` (dry-run, WORKERS=4)
  -- (H.start returns once mrprov logged "listening": everything is started;
  -- no request has been made yet). Measured on the second start: the very
  -- first one also generates data/secret (OpenSSL's RNG, ~2 MB more pages).
  local first = start_dry()
  socket.sleep(1)
  local idle_first = rss(first.pid)
  H.stop(first)
  local dry = H.start({ dir = first.dir, env = first.env })
  local ok_dry, idle_dry, idle_dry2 = pcall(function()
    socket.sleep(1)
    local before = rss(dry.pid)
    wait_up(dry)
    socket.sleep(0.5)
    return before, rss(dry.pid)
  end)
  H.stop(dry)
  if not ok_dry then
    error(idle_dry, 0)
  end
  say("  idle with the defaults (dry-run, WORKERS=4), 1 s after a restart, no request yet: %s",
    rss_text(idle_dry))
  say("  the same after one GET /ready: %s", rss_text(idle_dry2))
  say("  (the very first start, which also generates data/secret: %s)", rss_text(idle_first))
  D.reset(h)
  local srv = H.start({ env = mrprov_env(h, { WORKERS = "4", DOKKU_POOL_SIZE = "4",
                                              PROVISIONER_API_KEYS = API_KEY }) })
  return measure_on(srv, function()
    wait_ready(srv)
    local t_conn = socket.gettime() + 10
    while metric(srv, 'mrprov_ssh_connections_open{host="default"}') < 4 and socket.gettime() < t_conn do
      socket.sleep(0.05)
    end
    socket.sleep(1)
    local idle = rss(srv.pid)
    say("  idle (ready, 4 SSH sessions open, no work yet): %s", rss_text(idle))
    local idle_rows = {
      {
        figure = "idle RSS, defaults (dry-run)", value = string.format("%.1f MB", idle_dry.rss),
        reference = "limit 10 MB", ratio = idle_dry.rss / 10, target = 1.0,
        note = string.format("VmRSS 1 s after a restart, WORKERS=4, no request yet: anon %.1f MB + " ..
          "file-backed %.1f MB (pages of shared libraries); %.1f MB after one GET /ready, %.1f MB on the very " ..
          "first start", idle_dry.anon, idle_dry.file, idle_dry2.rss, idle_first.rss),
      },
      {
        figure = "idle RSS, SSH pool connected", value = string.format("%.1f MB", idle.rss),
        reference = "limit 10 MB", ratio = idle.rss / 10, target = 1.0,
        note = string.format("VmRSS after start, 4 SSH sessions open: anon %.1f MB + file-backed %.1f MB",
          idle.anon, idle.file),
      },
    }
    if SCALE_N == 0 then
      say("  BENCH_SCALE_N=0: the idle figures only, no provisions")
      return idle_rows
    end
    -- RSS is sampled from another process while the provisions run
    local samples = srv.dir .. "/rss.samples"
    local sampler = io.popen(string.format("while kill -0 %d 2>/dev/null && [ ! -e %s.stop ]; do " ..
      "grep VmRSS /proc/%d/status; sleep 0.2; done >%s 2>/dev/null; echo done", srv.pid, q(samples), srv.pid,
      q(samples)))
    local wall, done, failed, submitted = provision_many(srv, SCALE_N, "bench_scale_", "free", SCALE_BUDGET_S)
    os.execute("touch " .. q(samples .. ".stop"))
    sampler:read("a")
    sampler:close()
    local peak_sampled = 0
    for _, line in ipairs(read_lines(samples)) do
      peak_sampled = math.max(peak_sampled, (tonumber(line:match("(%d+)")) or 0) / 1024)
    end
    local at_end = rss(srv.pid)
    socket.sleep(2)
    local after = rss(srv.pid)
    local ncmd = #D.log(h)
    say("  %d succeeded, %d failed of %d; submitted in %.2f s, all finished in %.1f s (%.2f provisions/s, " ..
      "%d Dokku commands)", done, failed, SCALE_N, submitted, wall, done / wall, ncmd)
    say("  peak: VmHWM %.1f MB (highest VmRSS sampled every 0.2 s: %.1f MB); at the end: %s", at_end.hwm,
      peak_sampled, rss_text(at_end))
    say("  2 s after the last job: %s", rss_text(after))
    if done < SCALE_N then
      error(string.format("only %d of %d provisions succeeded (%d failed) within %d s", done, SCALE_N, failed,
        SCALE_BUDGET_S))
    end
    return {
      {
        figure = string.format("%d provisions at once", SCALE_N), value = string.format("%.1f s", wall),
        reference = "all complete", ratio = nil, met = done == SCALE_N,
        target_text = "all done",
        note = string.format("%d/%d succeeded, %.2f provisions/s, %d Dokku commands", done, SCALE_N,
          done / wall, ncmd),
      },
      {
        figure = "peak RSS (scale run)", value = string.format("%.1f MB", at_end.hwm),
        reference = "limit 64 MB", ratio = at_end.hwm / 64, target = 1.0,
        note = string.format("VmHWM; anon %.1f MB + file-backed %.1f MB at the end, %.1f MB 2 s later",
          at_end.anon, at_end.file, after.rss),
      },
      idle_rows[1],
      idle_rows[2],
    }
  end)
end

---------------------------------------------------------------------------
-- 5. reload: SIGHUP every 100 ms under wrk; reload time with 100 tiers
---------------------------------------------------------------------------
local RELOAD_TIERS = math.floor(getenv_num("BENCH_RELOAD_TIERS", 100))
local RELOAD_SECONDS = getenv_num("BENCH_RELOAD_SECONDS", 10)
local RELOAD_EVERY = getenv_num("BENCH_RELOAD_EVERY_MS", 100) / 1000

-- A tiers directory: the shipped tiers plus generated ones (each extends a
-- shipped tier, with its own limits and one extra agent) up to n files.
local function make_tiers(dir, n)
  os.execute("mkdir -p " .. q(dir) .. " && cp " .. q(ROOT) .. "/tiers/*.lua " .. q(dir))
  local shipped = { "free", "starter", "professional", "enterprise" }
  local have = #read_lines_cmd("ls " .. q(dir) .. "/*.lua")
  for k = 1, n - have do
    local name = string.format("bench_%03d", k)
    local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
    f:write(string.format([[
-- generated by bench/bench.lua (measurement 5)
return {
  name = %q,
  display_name = "Bench %d",
  extends = %q,
  limits = { memory_mb = %d, cpu = 0.5, storage_gb = 5, agents = 12, messages_per_day = %d },
  add_agents = {
    {
      name = "helper_%d",
      display_name = "Helper %d",
      role = "A generated agent that answers questions about topic %d.",
      tools = { "calculator", "file" },
      model = "default",
    },
  },
}
]], name, k, shipped[(k - 1) % 3 + 1], 256 + 64 * (k % 8), 100 * k, k, k, k))
    f:close()
  end
  return #read_lines_cmd("ls " .. q(dir) .. "/*.lua")
end

-- Reload times (ms) in srv's log from line `from` on.
local function reload_times(srv, from)
  local out = {}
  for i, line in ipairs(read_lines(srv.log)) do
    if i > from then
      local ms = line:match("reload: configuration generation %d+ loaded in ([%d%.]+) ms")
      if ms then
        out[#out + 1] = tonumber(ms)
      end
    end
  end
  return out
end

local function bench_reload()
  say("\n== 5. reload: %d tier files; SIGHUP every %.0f ms during a %d s wrk run on GET /api/v1/status/{id} ==",
    RELOAD_TIERS, RELOAD_EVERY * 1000, RELOAD_SECONDS)
  local dir = H.tmpdir()
  local ntiers = make_tiers(dir .. "/tiers", RELOAD_TIERS)
  local srv = start_dry({ TIERS_DIR = dir .. "/tiers" })
  return measure_on(srv, function()
    wait_up(srv)
    local _, tj = H.request(srv, "GET", "/api/v1/tiers", nil, { ["X-API-Key"] = API_KEY })
    local loaded = 0
    for _ in pairs(type(tj) == "table" and (tj.tiers or tj) or {}) do
      loaded = loaded + 1
    end
    local n_inst = 50
    local _, done = provision_many(srv, n_inst, "bench_rl_", "free", 120)
    say("  %d tier files (%d tiers served by /api/v1/tiers), %d dry-run instances to read", ntiers, loaded, done)
    -- quiet: one SIGHUP at a time, each waited for
    local quiet = {}
    for k = 1, 10 do
      local from = #read_lines(srv.log)
      os.execute("kill -HUP " .. srv.pid)
      local deadline = socket.gettime() + 10
      while #reload_times(srv, from) == 0 and socket.gettime() < deadline do
        socket.sleep(0.02)
      end
      quiet[k] = reload_times(srv, from)[1]
      if not quiet[k] then
        error("no reload log line after SIGHUP:\n" .. H.log_text(srv):sub(-2000))
      end
      socket.sleep(0.1)
    end
    say("  reload time, quiet (10 reloads, from the log line / mrprov_config_reload_duration_seconds): " ..
      "median %.1f ms, min %.1f ms, max %.1f ms", median(quiet), percentile(quiet, 0), percentile(quiet, 1))
    -- under load
    local from = #read_lines(srv.log)
    local gen0 = metric(srv, "mrprov_config_generation")
    local finish = wrk({ url = srv.base .. "/", script = ROOT .. "/bench/wrk/status.lua", background = true,
                         seconds = RELOAD_SECONDS, env = { BENCH_STATUS_PREFIX = "bench_rl_",
                                                           BENCH_STATUS_N = tostring(n_inst),
                                                           BENCH_API_KEY = API_KEY } })
    socket.sleep(0.5)
    local sent = 0
    local t_end = socket.gettime() + RELOAD_SECONDS - 1
    while socket.gettime() < t_end do
      os.execute("kill -HUP " .. srv.pid)
      sent = sent + 1
      socket.sleep(RELOAD_EVERY)
    end
    local r = finish()
    socket.sleep(0.3)
    local loaded_times = reload_times(srv, from)
    local gens = metric(srv, "mrprov_config_generation") - gen0
    local failures = metric(srv, 'mrprov_config_reloads_total{outcome="failure"}')
    wrk_line("status during reloads", r)
    say("  %d SIGHUPs sent, %d generations loaded (signals that arrive during a reload merge), %d refused; " ..
      "reload time under load: median %.1f ms, p90 %.1f ms, max %.1f ms", sent, gens, failures,
      median(loaded_times), percentile(loaded_times, 0.9), percentile(loaded_times, 1))
    return {
      {
        figure = "non-2xx during SIGHUP/100 ms", value = tostring(r.non2xx + r.errors),
        reference = string.format("%d requests", r.requests), ratio = nil, met = r.non2xx + r.errors == 0,
        target_text = "0",
        note = string.format("%d non-2xx, %d socket errors, %d reloads in %d s; p99 %.2f ms, max %.2f ms",
          r.non2xx, r.errors, gens, RELOAD_SECONDS, r.p99 or 0, r.max or 0),
      },
      {
        figure = string.format("reload time, %d tier files", ntiers), value = string.format("%.1f ms", median(quiet)),
        reference = "limit 50 ms", ratio = median(quiet) / 50, target = 1.0,
        note = string.format("median of 10 quiet reloads (max %.1f ms); under wrk load median %.1f ms, max %.1f ms",
          percentile(quiet, 1), median(loaded_times), percentile(loaded_times, 1)),
      },
    }
  end)
end

---------------------------------------------------------------------------
-- 7. the drift sweep: 1000 instances on one host, simulator at 5 ms
---------------------------------------------------------------------------
local SWEEP_N = math.floor(getenv_num("BENCH_SWEEP_N", 1000))
local SWEEP_DELAY_MS = getenv_num("BENCH_SWEEP_DELAY_MS", 5)
local SWEEP_PROVISION_AFTER = getenv_num("BENCH_SWEEP_PROVISION_AFTER", 0.3)
local SWEEP_FILL_BUDGET_S = getenv_num("BENCH_SWEEP_FILL_BUDGET_S", 1200)

-- The number of commands the simulator has logged (one line each).
local function sim_count(h)
  return #read_lines(h.state .. "/log.jsonl")
end

local function bench_sweep(h)
  say("\n== 7. drift sweep of %d deployed instances, every Dokku command %d ms; a provision during it ==", SWEEP_N,
    SWEEP_DELAY_MS)
  D.reset(h)
  -- The instances are provisioned for real, through sshd + the simulator at
  -- 0 ms, with the default profile (mindroom: two apps an instance): the
  -- sweep then reads deployed apps, their environment, certificates,
  -- storage and limits as it would on a real host, and finds nothing to
  -- report. (Copying one provisioned instance under 1000 names would be
  -- faster but not the same thing: an instance's secrets are derived from
  -- its app name with the master key, so a copy's environment differs from
  -- what mrprov wants and the sweep would measure drift.)
  local srv = H.start({ env = mrprov_env(h, { RECONCILE_INTERVAL = "0", PROVISIONER_API_KEYS = API_KEY,
                                              PROFILE = "mindroom", HEALTH_TIMEOUT_SECONDS = "0" }) })
  local ok_ready = pcall(wait_ready, srv)
  if not ok_ready then
    H.stop(srv)
    error("mrprov did not become ready")
  end
  local fill, done, failed = provision_many(srv, SWEEP_N, "bench_sweep_", "free", SWEEP_FILL_BUDGET_S)
  if done < SWEEP_N then
    H.stop(srv)
    error(string.format("only %d of %d provisions succeeded (%d failed)", done, SWEEP_N, failed))
  end
  local sim_apps = #(D.state(h).global.apps or {})
  say("  %d instances provisioned through sshd + the simulator (0 ms) in %.1f s; the simulator holds %d apps",
    SWEEP_N, fill, sim_apps)
  local auth = { ["X-API-Key"] = API_KEY, Prefer = "wait=600" }
  return measure_on(srv, function()
    wait_ready(srv)
    D.set_faults(h, { { match = ".", action = "delay", ms = SWEEP_DELAY_MS } })
    -- the same provision without a sweep (twice: the first warms the pool)
    local function provision(sub)
      local t0 = socket.gettime()
      local body = { subscription_id = sub, account_id = "acc_bench", tier = "free" }
      local code, j, raw = H.request(srv, "POST", "/api/v1/provision", body, auth)
      local wall = socket.gettime() - t0
      if code ~= 200 or not j or j.status ~= "running" then
        error("the provision did not succeed: " .. tostring(code) .. " " .. tostring(raw))
      end
      return wall
    end
    provision("bench_alone_0")
    local alone = provision("bench_alone_1")
    say("  provision alone: %.2f s", alone)
    -- mrprov's own CPU time (utime + stime, clock ticks of 1/100 s)
    local function cpu()
      local f = io.open("/proc/" .. srv.pid .. "/stat")
      local text = f and f:read("a") or ""
      if f then f:close() end
      local rest = text:match("^%d+ %(.-%) (.*)$") or ""
      local fields = {}
      for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
      return ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / 100
    end
    local cpu0 = cpu()
    local sim0 = sim_count(h)
    local t0 = socket.gettime()
    local code, started, raw = H.request(srv, "POST", "/api/v1/reconcile", nil, { ["X-API-Key"] = API_KEY })
    if code ~= 202 then
      error("POST /api/v1/reconcile answered " .. tostring(code) .. ": " .. tostring(raw))
    end
    -- started while the sweep runs (it reads the all-apps reports first,
    -- then plans; about 1.5 s for 1000 instances absent from the simulator)
    socket.sleep(SWEEP_PROVISION_AFTER)
    local during = provision("bench_during")
    local t_prov = socket.gettime() - t0
    local rep = H.wait_for(srv, "/api/v1/reconcile", function(r)
      return r.job_id == started.job_id
    end, 900, { ["X-API-Key"] = API_KEY })
    local wall = socket.gettime() - t0
    local cpu_used = cpu() - cpu0
    D.set_faults(h, {})
    local ncmd = sim_count(h) - sim0
    say("  mrprov's own CPU time meanwhile: %.1f s (%.2f ms per Dokku command; the rest of the machine's two " ..
      "cores go to sshd and the simulator, one Lua process per command)", cpu_used, cpu_used * 1000 / ncmd)
    say("  sweep: %d instances checked, %d skipped, %d drifted, %d orphans, %d errors; %d probes (resources " ..
      "checked), %d of them probed per app, %d all-apps reports read; its own duration %.1f s, wall from POST " ..
      "%.1f s; %d Dokku commands in all meanwhile (the provision's included)", rep.instances_checked,
      rep.instances_skipped, rep.drifted_count, rep.orphans_count, rep.errors_count, rep.probes,
      rep.app_probes or 0, rep.bulk_commands or 0, rep.duration_seconds, wall, ncmd)
    say("  provision during the sweep (started %.1f s after it): %.2f s (alone %.2f s); the sweep %s then",
      SWEEP_PROVISION_AFTER, during, alone,
      t_prov < rep.duration_seconds and "was still running" or "had already finished")
    if rep.instances_checked < SWEEP_N then
      error(string.format("the sweep checked %d of %d instances", rep.instances_checked, SWEEP_N))
    end
    -- every instance was just provisioned and nothing changed it: a sweep
    -- that reports drift measured something else (a misread report, a
    -- probe that disagrees with the plan)
    if rep.drifted_count ~= 0 or rep.errors_count ~= 0 then
      error(string.format("the sweep reported %d drifted and %d errors on instances just provisioned: %s",
        rep.drifted_count, rep.errors_count, cjson.encode(rep.drifted):sub(1, 2000)))
    end
    return {
      {
        figure = string.format("sweep of %d instances", SWEEP_N),
        value = string.format("%.1f s", rep.duration_seconds),
        reference = "limit 30 s", ratio = rep.duration_seconds / 30, target = 1.0,
        note = string.format("%d deployed instances, %d resources checked (%d probed per app), %d " ..
          "all-apps reports at %d ms each, 0 drifted; %d Dokku commands in all, mrprov CPU %.1f s",
          SWEEP_N, rep.probes, rep.app_probes or 0, rep.bulk_commands or 0, SWEEP_DELAY_MS, ncmd, cpu_used),
      },
      {
        figure = "provision during a sweep", value = string.format("%.2f s", during),
        reference = string.format("alone %.2f s", alone), ratio = during - alone, target = 1.0,
        target_text = "<= +1 s",
        note = string.format("difference %.2f s (ratio column: seconds later than alone)", during - alone),
      },
    }
  end, function()
    D.set_faults(h, {})
  end)
end

---------------------------------------------------------------------------
-- 8. a fleet rollout: 200 instances, simulator at 20 ms per command, N at once
---------------------------------------------------------------------------
local ROLLOUT_N = math.floor(getenv_num("BENCH_ROLLOUT_N", 200))
local ROLLOUT_DELAY_MS = getenv_num("BENCH_ROLLOUT_DELAY_MS", 20)
local ROLLOUT_PARALLEL = math.floor(getenv_num("BENCH_ROLLOUT_PARALLEL", 4))
local ROLLOUT_FILL_BUDGET_S = getenv_num("BENCH_ROLLOUT_FILL_BUDGET_S", 600)

local function bench_rollout(h)
  say("\n== 8. rollout of %d instances, every Dokku command %d ms, %d at once ==", ROLLOUT_N, ROLLOUT_DELAY_MS,
    ROLLOUT_PARALLEL)
  D.reset(h)
  -- The default profile (mindroom), provisioned for real at 0 ms; each
  -- step is the update job (the MindRoom app deployed from the new image)
  -- and its readiness check against a loopback health server.
  local hs = H.health_server("ok")
  local srv = H.start({ env = mrprov_env(h, { RECONCILE_INTERVAL = "0", PROVISIONER_API_KEYS = API_KEY,
    PROFILE = "mindroom", WORKERS = tostring(math.max(CONCURRENCY, ROLLOUT_PARALLEL + 1)),
    HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. hs.port .. "/{app}{path}", HEALTH_TIMEOUT_SECONDS = "60" }) })
  local ok_ready = pcall(wait_ready, srv)
  if not ok_ready then
    H.stop(srv)
    hs.stop()
    error("mrprov did not become ready")
  end
  local auth = { ["X-API-Key"] = API_KEY }
  return measure_on(srv, function()
    local base_n = 3
    local fill, done, failed = provision_many(srv, ROLLOUT_N, "bench_ro_", "free", ROLLOUT_FILL_BUDGET_S)
    local fill2, done2 = provision_many(srv, base_n, "bench_rb_", "free", ROLLOUT_FILL_BUDGET_S)
    if done < ROLLOUT_N or done2 < base_n then
      error(string.format("only %d of %d provisions succeeded (%d failed)", done + done2, ROLLOUT_N + base_n, failed))
    end
    say("  %d instances provisioned through sshd + the simulator (0 ms) in %.1f s", ROLLOUT_N + base_n, fill + fill2)
    H.wait_for(srv, "/api/v1/status/bench_ro_" .. string.format("%04d", ROLLOUT_N), function(j)
      return j.status == "running"
    end, 120, auth)
    D.set_faults(h, { { match = ".", action = "delay", ms = ROLLOUT_DELAY_MS } })
    -- POST → finished, polled every 50 ms; returns the wall time and the view
    local function rollout(body)
      local t0 = socket.gettime()
      local code, j, raw = H.request(srv, "POST", "/api/v1/rollouts", body, auth)
      if code ~= 201 then
        error("POST /api/v1/rollouts answered " .. tostring(code) .. ": " .. tostring(raw))
      end
      local v = H.wait_for(srv, "/api/v1/rollouts/" .. j.id, function(r)
        return r.state ~= "running"
      end, 1800, auth)
      return socket.gettime() - t0, v
    end
    -- one instance's update: a rollout of one, three times (the median)
    local singles = {}
    for i = 1, base_n do
      local wall, v = rollout({ image = "ghcr.io/mindroom-ai/mindroom:v2099.1." .. i,
        selector = { subscription_ids = { string.format("bench_rb_%04d", i) } }, waves = { 1 } })
      if v.state ~= "finished" or v.counts.done ~= 1 then
        error("the one-instance rollout did not finish: " .. cjson.encode(v.counts))
      end
      singles[#singles + 1] = wall
    end
    local one = median(singles)
    say("  one instance's update (a rollout of one: deploy + readiness): %.2f s (median of %d)", one, base_n)
    local ids = {}
    for i = 1, ROLLOUT_N do
      ids[i] = string.format("bench_ro_%04d", i)
    end
    local wall, v = rollout({ image = "ghcr.io/mindroom-ai/mindroom:v2099.2.0", selector = { subscription_ids = ids },
      waves = { 1, "100%" }, parallel = ROLLOUT_PARALLEL })
    D.set_faults(h, {})
    if v.state ~= "finished" or v.counts.done ~= ROLLOUT_N then
      error("the rollout did not finish: " .. v.state .. " " .. cjson.encode(v.counts))
    end
    local ideal = ROLLOUT_N / ROLLOUT_PARALLEL * one
    say("  rollout of %d, %d at once (canary 1, then the rest): %.1f s; (%d / %d) x %.2f s = %.1f s",
      ROLLOUT_N, ROLLOUT_PARALLEL, wall, ROLLOUT_N, ROLLOUT_PARALLEL, one, ideal)
    -- The steps' own times (started_at → finished_at, ms resolution): how
    -- long a step took with N at once, and how full the driver kept the N
    -- slots (what the driver controls; a step's time is the server's).
    local function epoch(iso)
      local y, mo, d, hh, mi, ss = iso:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d.]+)Z$")
      return os.time({ year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(hh),
                       min = tonumber(mi), sec = 0, isdst = false }) + tonumber(ss)
    end
    local busy, first, last = 0, math.huge, 0
    for _, e in ipairs(v.instances) do
      local a, b = epoch(e.started_at), epoch(e.finished_at)
      busy, first, last = busy + (b - a), math.min(first, a), math.max(last, b)
    end
    local span = last - first
    local packed = busy / ROLLOUT_PARALLEL
    say("  a step took %.2f s on average with %d at once (%.2f s alone): the server's commands slow down " ..
      "under load; the driver kept the slots %.0f %% busy (steps' time / %d = %.1f s of the %.1f s from the " ..
      "first step's start to the last's end)", busy / ROLLOUT_N, ROLLOUT_PARALLEL, one,
      100 * packed / span, ROLLOUT_PARALLEL, packed, span)
    return { {
      figure = string.format("rollout of %d, %d at once", ROLLOUT_N, ROLLOUT_PARALLEL),
      value = string.format("%.1f s", wall), reference = string.format("(%d/%d) x %.2f s = %.1f s", ROLLOUT_N,
        ROLLOUT_PARALLEL, one, ideal),
      ratio = wall / ideal, target = 1.2,
      note = string.format("simulator %d ms per command; each step: the update job and its readiness check; a " ..
        "step took %.2f s on average with %d at once", ROLLOUT_DELAY_MS, busy / ROLLOUT_N, ROLLOUT_PARALLEL),
    }, {
      figure = "rollout vs its steps' time / N", value = string.format("%.1f s", span),
      reference = string.format("%.1f s", packed), ratio = span / packed, target = 1.2,
      note = "the driver's own overhead: the rollout's span vs the sum of its steps' times over N slots",
    } }
  end, function()
    D.set_faults(h, {})
    hs.stop()
  end)
end

---------------------------------------------------------------------------
-- 6. webhook acknowledgement latency under load
---------------------------------------------------------------------------
local WEBHOOK_SECONDS = getenv_num("BENCH_WEBHOOK_SECONDS", 10)
local WEBHOOK_N = math.floor(getenv_num("BENCH_WEBHOOK_N", 100000))
local WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

local function bench_webhook()
  say("\n== 6. webhook ack: POST /api/v1/webhooks/supabase, Standard Webhooks signed, wrk -t%d -c%d for %d s ==",
    WRK_THREADS, WRK_CONNECTIONS, WEBHOOK_SECONDS)
  local srv = start_dry({ WEBHOOK_SECRET = WEBHOOK_SECRET })
  return measure_on(srv, function()
    wait_up(srv)
    local file = srv.dir .. "/webhooks.tsv"
    local t0 = socket.gettime()
    if os.execute(q(PY) .. " " .. q(ROOT .. "/bench/webhook_requests.py") .. " " .. q(WEBHOOK_SECRET) .. " " ..
      WEBHOOK_N .. " " .. q(file)) ~= true then
      error("bench/webhook_requests.py failed")
    end
    say("  %d signed deliveries written in %.1f s (distinct webhook-ids; UPDATE of a subscription whose tier " ..
      "and status stay the same)", WEBHOOK_N, socket.gettime() - t0)
    local r = wrk({ url = srv.base .. "/api/v1/webhooks/supabase", script = ROOT .. "/bench/wrk/webhooks.lua",
                    seconds = WEBHOOK_SECONDS, env = { BENCH_WEBHOOK_FILE = file } })
    wrk_line("webhook ack", r)
    local ignored = metric(srv, 'mrprov_webhooks_total{outcome="ignore"}')
    local dup = metric(srv, 'mrprov_webhooks_total{outcome="duplicate"}')
    local unauth = metric(srv, 'mrprov_webhooks_total{outcome="unauthorized"}')
    say("  acknowledged: %d ignored (id recorded, nothing to do), %d duplicate ids, %d refused; latency p50 %.2f " ..
      "ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms", ignored, dup, unauth, r.p50 or 0, r.p90 or 0, r.p99 or 0,
      r.max or 0)
    if r.non2xx > 0 or r.errors > 0 or unauth > 0 then
      error(string.format("%d non-2xx answers, %d socket errors, %d refused", r.non2xx, r.errors, unauth))
    end
    return {
      figure = "webhook ack p99", value = string.format("%.2f ms", r.p99),
      reference = "limit 100 ms", ratio = r.p99 / 100, target = 1.0,
      note = string.format("%.0f deliveries/s over %d connections; p50 %.2f ms, max %.2f ms; %d ignored, %d " ..
        "duplicate", r.rps, WRK_CONNECTIONS, r.p50 or 0, r.max or 0, ignored, dup),
    }
  end)
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

---------------------------------------------------------------------------
-- 8. a fleet of Dokku hosts (issue 16): the same provisions on three hosts
--    vs on one, the simulator at BENCH_HOSTS_DELAY_MS per command; SSH
--    handshakes <= the sum of the pool sizes
---------------------------------------------------------------------------
local HOSTS_N = math.floor(getenv_num("BENCH_HOSTS_N", 300))
local HOSTS_DELAY_MS = getenv_num("BENCH_HOSTS_DELAY_MS", 20)
local HOSTS_POOL = math.floor(getenv_num("BENCH_HOSTS_POOL", 1))
local HOSTS_WORKERS = math.floor(getenv_num("BENCH_HOSTS_WORKERS", 12))
local HOSTS_BUDGET_S = getenv_num("BENCH_HOSTS_BUDGET_S", 900)
-- a second, smaller run where each command's latency dominates (0: none)
local HOSTS_SLOW_N = math.floor(getenv_num("BENCH_HOSTS_SLOW_N", 36))
local HOSTS_SLOW_DELAY_MS = getenv_num("BENCH_HOSTS_SLOW_DELAY_MS", 200)

-- A HOSTS_DIR naming the given sshd-harness hosts h1, h2, ... (no capacity
-- bound: placement spreads them evenly).
local function hosts_dir_for(list)
  local p = io.popen("mktemp -d /tmp/mrprov-bench-hosts-XXXXXX")
  local dir = p:read("l")
  p:close()
  for i, h in ipairs(list) do
    local f = assert(io.open(string.format("%s/h%d.lua", dir, i), "w"))
    f:write(string.format("return { host = \"127.0.0.1\", port = %d, user = %q, key_path = %q, known_hosts = %q }\n",
      h.port, h.user, h.key, h.known_hosts))
    f:close()
  end
  return dir
end

-- The machine's busy CPU time so far, in seconds (/proc/stat: every state
-- but idle and iowait, all cores), and the number of cores.
local function cpu_busy()
  local f = io.open("/proc/stat", "r")
  local line = f and f:read("l") or ""
  if f then f:close() end
  local v = {}
  for n in line:gmatch("%d+") do
    v[#v + 1] = tonumber(n)
  end
  local total = 0
  for i = 1, math.min(#v, 8) do
    total = total + v[i]
  end
  local busy = total - (v[4] or 0) - (v[5] or 0)
  return busy / 100, tonumber(read_lines_cmd("nproc")[1]) or 1
end

-- n provisions on `list`'s hosts, every simulated command delayed
-- delay_ms; returns the wall seconds, the SSH handshakes the hosts' sshd
-- logged meanwhile, and the run's CPU floor and how busy the CPU was.
local function fleet_run(list, label, n, delay_ms)
  local logs0 = {}
  for i, h in ipairs(list) do
    D.reset(h)
    D.set_faults(h, { { match = ".", action = "delay", ms = delay_ms } })
    logs0[i] = log_len(h)
  end
  local hosts_dir = hosts_dir_for(list)
  local srv = H.start({ env = { HOSTS_DIR = hosts_dir, LETSENCRYPT_EMAIL = "ops@example.com",
                                DOKKU_POOL_SIZE = tostring(HOSTS_POOL), WORKERS = tostring(HOSTS_WORKERS),
                                LOG_LEVEL = "INFO", PROVISIONER_API_KEYS = API_KEY, HEALTH_TIMEOUT_SECONDS = "0" } })
  return measure_on(srv, function()
    H.wait_for(srv, "/ready", function(j) return j and j.ready end, 30)
    local busy0, cores = cpu_busy()
    local wall, done, failed = provision_many(srv, n, "bench_fleet_" .. label:gsub("%W", "") .. "_", "free",
      HOSTS_BUDGET_S)
    local busy = cpu_busy() - busy0
    local shakes = 0
    for i, h in ipairs(list) do
      shakes = shakes + count_log(h, "Accepted publickey", logs0[i])
    end
    say("  %s: %d succeeded, %d failed of %d in %.1f s (%.2f provisions/s); %d SSH handshakes", label, done,
      failed, n, wall, done / wall, shakes)
    -- What the machine could do at best: the CPU the run used (mrprov,
    -- sshd and the simulated hosts together) spread over every core.
    say("  %s: the machine's CPU was %.0f %% busy (%.1f s of CPU on %d cores: no run of this work on this " ..
      "machine takes less than %.1f s)", label, 100 * busy / (wall * cores), busy, cores, busy / cores)
    if done < n then
      error(string.format("%s: only %d of %d provisions succeeded", label, done, n))
    end
    if shakes == 0 then
      -- (no host file: a dry-run service "provisions" without any host)
      error(label .. ": no SSH handshake in any host's sshd log: the provisions never reached a host")
    end
    return { wall = wall, shakes = shakes, floor = busy / cores, busy_pct = 100 * busy / (wall * cores) }
  end, function()
    for _, h in ipairs(list) do D.set_faults(h, {}) end
    os.execute("rm -rf " .. q(hosts_dir))
  end)
end

local function bench_hosts(h)
  assert(h, "bench 9 needs the sshd harness host")
  say("\n== 9. a fleet of Dokku hosts: %d free-tier provisions on three hosts vs one, simulator at %d ms per " ..
    "command, DOKKU_POOL_SIZE=%d per host, WORKERS=%d ==", HOSTS_N, HOSTS_DELAY_MS, HOSTS_POOL, HOSTS_WORKERS)
  local extra = { start_sshd(), start_sshd() }
  local ok, res = pcall(function()
    local one = fleet_run({ h }, "one host", HOSTS_N, HOSTS_DELAY_MS)
    local three = fleet_run({ h, extra[1], extra[2] }, "three hosts", HOSTS_N, HOSTS_DELAY_MS)
    local out = { one = one.wall, three = three.wall, shakes = three.shakes, floor = three.floor,
                  busy = three.busy_pct }
    -- the same at a latency where the hosts, not this machine's CPU, are
    -- the limit (as against real servers): fewer provisions, longer commands
    if HOSTS_SLOW_N > 0 then
      say("  the same at %d ms per command, %d provisions:", HOSTS_SLOW_DELAY_MS, HOSTS_SLOW_N)
      out.slow_one = fleet_run({ h }, "one host, slow", HOSTS_SLOW_N, HOSTS_SLOW_DELAY_MS).wall
      out.slow_three = fleet_run({ h, extra[1], extra[2] }, "three hosts, slow", HOSTS_SLOW_N,
        HOSTS_SLOW_DELAY_MS).wall
    end
    return out
  end)
  for _, x in ipairs(extra) do
    D.stop(x)
    os.execute("rm -rf " .. q(x.dir))
  end
  if not ok then
    error(res, 0)
  end
  local pools = 3 * HOSTS_POOL
  say("  three hosts vs one: %.3f; the best this machine allows for this work (its CPU floor / one host): %.3f",
    res.three / res.one, res.floor / res.one)
  local rows = {
    {
      figure = string.format("%d provisions, 3 hosts vs 1", HOSTS_N), value = string.format("%.1f s", res.three),
      reference = string.format("%.1f s on one host", res.one), ratio = res.three / res.one, target = 0.45,
      note = string.format("wall time, same provisions, same code path (host files), fresh store and simulators " ..
        "each run; the three-host run kept the machine's CPU %.0f %% busy (its CPU floor %.1f s, %.2f of one host)",
        res.busy, res.floor, res.floor / res.one),
    },
    {
      figure = "SSH handshakes, 3 hosts", value = tostring(res.shakes),
      reference = string.format("sum of pool sizes %d", pools), ratio = res.shakes / pools, target = 1.0,
      note = "Accepted publickey in the three sshd logs during the three-host run",
    },
  }
  if res.slow_one then
    rows[#rows + 1] = {
      figure = string.format("%d provisions at %d ms, 3 hosts vs 1", HOSTS_SLOW_N, HOSTS_SLOW_DELAY_MS),
      value = string.format("%.1f s", res.slow_three), reference = string.format("%.1f s on one host", res.slow_one),
      ratio = res.slow_three / res.slow_one, target = 0.45,
      note = "the same measurement where each command's latency, not this machine's CPU, is the limit (as "
        .. "against hosts that do not share mrprov's cores); the issue's figure is the row above",
    }
  end
  return rows
end

-- Every line said also goes to bench/results/latest.md.
local transcript = {}
local say_raw = say
say = function(fmt, ...)
  local line = string.format(fmt, ...)
  transcript[#transcript + 1] = line
  say_raw("%s", line)
end

local function ratio_text(r)
  return r.ratio and string.format("%.3f", r.ratio) or "-"
end

local function target_text(r)
  return r.target_text or string.format("%s %s", r.cmp or "<=", tostring(r.target))
end

local function is_met(r)
  if r.met ~= nil then
    return r.met
  end
  if r.cmp == ">=" then
    return r.ratio >= r.target
  end
  return r.ratio <= r.target
end

local function write_results(rows, elapsed)
  os.execute("mkdir -p " .. q(ROOT .. "/bench/results"))
  local path = ROOT .. "/bench/results/latest.md"
  local f = io.open(path, "w")
  if not f then
    return
  end
  local rev = read_lines_cmd("git -C " .. q(ROOT) .. " rev-parse --short HEAD")[1] or "?"
  f:write(string.format("# mrprov bench, %s\n\ncommit %s, %s cores, `make bench` took %.0f s.\n\n",
    os.date("!%Y-%m-%d %H:%M UTC"), rev, read_lines_cmd("nproc")[1] or "?", elapsed))
  f:write("| # | figure | measured | reference | ratio | target | |\n|---|---|---|---|---|---|---|\n")
  for _, r in ipairs(rows) do
    if r.failed_measurement then
      f:write(string.format("| %s | %s | - | - | - | - | MEASUREMENT FAILED |\n", r.section, r.figure))
    else
      f:write(string.format("| %s | %s | %s | %s | %s | %s | %s |\n", r.section, r.figure, r.value, r.reference,
        ratio_text(r), target_text(r):gsub("<", "&lt;"):gsub(">", "&gt;"), is_met(r) and "met" or "NOT MET"))
    end
  end
  f:write("\n```\n" .. table.concat(transcript, "\n") .. "\n```\n")
  f:close()
  say_raw("results written to %s", path)
end

local function main()
  local t_all = socket.gettime()
  say("mrprov bench — %s, %s cores", os.date("!%Y-%m-%dT%H:%M:%SZ"), read_lines_cmd("nproc")[1] or "?")
  local h
  if selected(2) or selected(3) or selected(4) or selected(7) or selected(8) or selected(9) then
    local shell, with_rc, without_rc = shell_cost_ms()
    say("login shell %s for an sshd command: %.1f ms with ~/.bashrc, %.1f ms without; sessions %s it%s", shell,
      with_rc, without_rc, KEEP_RC and "source" or "skip",
      KEEP_RC and " (BENCH_LOGIN_SHELL_RC=keep)" or " (bench/sshd-noprofile)")
    h = start_sshd()
    say("sshd-harness: 127.0.0.1:%d, user %s, dir %s", h.port, h.user, h.dir)
  end

  local rows, errors = {}, 0
  local sections = {
    { 1, bench_http, { "HTTP throughput" } },
    { 2, bench_exec, { "per-command time, pool (mean)" } },
    { 2, bench_handshakes, { "SSH handshakes / 100 provisions" } },
    { 3, bench_provision, { "pro+Matrix provision wall" } },
    { 4, bench_scale, { "scale, RSS" } },
    { 5, bench_reload, { "reload" } },
    { 6, bench_webhook, { "webhook ack p99" } },
    { 7, bench_sweep, { "drift sweep" } },
    { 8, bench_rollout, { "fleet rollout" } },
    { 9, bench_hosts, { "fleet of hosts" } },
  }
  for _, s in ipairs(sections) do
    if selected(s[1]) then
      local t0 = socket.gettime()
      local ok, r = pcall(s[2], h)
      if ok then
        if r.figure then
          r = { r }
        end
        for _, row in ipairs(r) do
          row.section = s[1]
          rows[#rows + 1] = row
        end
      else
        errors = errors + 1
        say("  MEASUREMENT FAILED: %s", tostring(r))
        rows[#rows + 1] = { section = s[1], figure = s[3][1], failed_measurement = true }
      end
      say("  (%.0f s)", socket.gettime() - t0)
    end
  end

  if h then
    if os.getenv("MRPROV_KEEP_TMP") then
      say("\nkept: %s (sshd.log, state/log.jsonl) and the mrprov directories under /tmp/mrprov-it-*", h.dir)
      D.stop_sshd(h)
    else
      D.stop(h)
      os.execute("rm -rf " .. q(h.dir))
    end
  end
  H.cleanup()

  local elapsed = socket.gettime() - t_all
  say("\n== summary (%.0f s) ==", elapsed)
  local fmt = "%-2s %-32s %-14s %-30s %-7s %-9s %s"
  say(fmt, "#", "figure", "measured", "reference", "ratio", "target", "")
  local missed = 0
  for _, r in ipairs(rows) do
    if r.failed_measurement then
      say(fmt, r.section, r.figure, "-", "-", "-", "-", "MEASUREMENT FAILED")
    else
      local met = is_met(r)
      if not met then
        missed = missed + 1
      end
      say(fmt, r.section, r.figure, r.value, r.reference, ratio_text(r), target_text(r), met and "met" or "NOT MET")
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
  write_results(rows, elapsed)
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
