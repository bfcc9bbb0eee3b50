-- Integration: crash-resume (SPEC §7 "Crash-safe"). One sshd + Dokku simulator
-- and one PostgreSQL + PostgREST gateway serve the whole file; one state
-- directory (one SQLite store) serves every trial, so each restart resumes
-- among all the instances the earlier trials left.
--
-- A trial POSTs a provision (professional tier with Matrix: ~50 Dokku
-- commands, each delayed a little by the simulator), kill -9's mrprov after a
-- random delay drawn from [0, the measured provision time], starts it again
-- on the same store, and checks that the instance converged to `running`
-- with exactly the Dokku objects a clean provision of the tier makes, no
-- orphans, one job, the right Supabase row and an empty outbox.
--
--   MRPROV_CRASH_TRIALS=N   provision trials (default 20)
--   MRPROV_CRASH_SEED=S     the RNG seed (printed at the start of every run)
local H = require "harness"
local D = require "dokku_harness"
local SB = require "supabase_harness"
local cjson = require "cjson"
local socket = require "socket"

local TRIALS = tonumber(os.getenv("MRPROV_CRASH_TRIALS") or "") or 20
local SEED = tonumber(os.getenv("MRPROV_CRASH_SEED") or "") or (os.time() % 1000000)
-- kills during an update and during a deprovision, on instances of earlier trials
local OTHER = math.max(2, TRIALS // 10)
local SIM_DELAY_MS = 10
local ACCOUNT = "acc_crash"

local function note(fmt, ...)
  io.stdout:write("# ", string.format(fmt, ...), "\n")
  io.stdout:flush()
end


-- Rows of a query on the mrprov store in dir.
local function store_rows(dir, sql)
  return H.sqlite_rows(dir .. "/data/mrprov.db", sql)
end

local function lit(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

---------------------------------------------------------------------------
-- What an instance is on the simulator, with its own names replaced by
-- placeholders and per-object randomness (ids, passwords, container ids,
-- timestamps) dropped, so two instances of the same tier compare equal.
---------------------------------------------------------------------------

local VOLATILE = {
  created_at = true, enabled_at = true, id = true, password = true, internal_ip = true, container = true,
  git_rev = true, GIT_REV = true,
}

local function substitute(s, subst)
  for _, kv in ipairs(subst) do
    local a, b = kv[1], kv[2]
    local i = 1
    while true do
      local x, y = s:find(a, i, true)
      if not x then
        break
      end
      s = s:sub(1, x - 1) .. b .. s:sub(y + 1)
      i = x + #b
    end
  end
  return s
end

local function normalize(v, subst)
  if type(v) == "string" then
    return substitute(v, subst)
  elseif type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do
      if not VOLATILE[k] then
        out[type(k) == "string" and substitute(k, subst) or k] = normalize(x, subst)
      end
    end
    return out
  end
  return v
end


-- The normalized shape of instance inst = {app, sub, password}.
local function shape(s, inst)
  local subst = {}
  for kind, list in pairs(s.services) do
    for name, svc in pairs(list) do
      if svc and name:sub(1, #inst.app) == inst.app and svc.password then
        subst[#subst + 1] = { svc.password, "{" .. kind .. "-password}" }
      end
    end
  end
  subst[#subst + 1] = { inst.password, "{admin-password}" }
  subst[#subst + 1] = { inst.app, "{app}" }
  subst[#subst + 1] = { (inst.app:gsub("%-", "_")), "{app_}" }
  subst[#subst + 1] = { inst.sub, "{sub}" }
  local n = D.objects_of(s, inst.app)
  local out = { names = normalize(n, subst), apps = {}, services = {}, storage = {} }
  for _, a in ipairs(n.apps) do
    out.apps[substitute(a, subst)] = normalize(s.apps[a], subst)
    -- what the simulator observed (containers started) is history, not state
    out.apps[substitute(a, subst)].observed = nil
  end
  for _, kind in ipairs({ "postgres", "redis" }) do
    for _, x in ipairs(n[kind]) do
      out.services[substitute(x, subst)] = normalize(s.services[kind][x], subst)
    end
  end
  for _, k in ipairs(n.storage) do
    out.storage[substitute(k, subst)] = normalize(s.global.storage[k], subst)
  end
  return out
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do
    out[#out + 1] = k
  end
  table.sort(out)
  return out
end

-- Every object on the simulator belongs to a known instance, and no name is
-- listed twice. Storage directories of deprovisioned instances (gone) stay:
-- Dokku has no command that removes one (apps:destroy leaves them, like the
-- data in them).
local function assert_no_orphans(s, known, gone)
  local function owner(name, kind)
    for app in pairs(known) do
      if name == app or name:sub(1, #app + 1) == app .. "-" then
        return app
      end
    end
    for app in pairs(kind == "storage" and gone or {}) do
      if name == app or name:sub(1, #app + 1) == app .. "-" then
        return app
      end
    end
  end
  local seen = {}
  local function check(kind, name)
    local key = kind .. ":" .. name
    assert.is_nil(seen[key], "listed twice on the server: " .. key)
    seen[key] = true
    assert.is_truthy(owner(name, kind), "orphan on the server: " .. key)
  end
  for _, a in ipairs(s.global.apps or {}) do
    check("app", a)
  end
  for kind, list in pairs(s.global.services or {}) do
    for _, x in ipairs(list) do
      check(kind, x)
    end
  end
  for k in pairs(s.global.storage or {}) do
    check("storage", k)
  end
  -- an object file without an index entry is an orphan too
  local p = io.popen("ls " .. H.sh_quote(s.dir .. "/apps") .. " " .. H.sh_quote(s.dir .. "/services/postgres") .. " "
    .. H.sh_quote(s.dir .. "/services/redis") .. " 2>/dev/null")
  for line in p:lines() do
    local name = line:match("^(.-)%.json$")
    if name then
      assert.is_truthy(owner(name), "orphan object file on the server: " .. line)
    end
  end
  p:close()
end

-- Successful creating commands per object (apps:create X, postgres:create X,
-- redis:create X, *:link S A) over the whole simulator log: each at most once.
local function assert_created_once(h)
  local counts, attempts = {}, {}
  for _, e in ipairs(D.log(h)) do
    local words = {}
    for _, w in ipairs(e.argv) do
      if w:sub(1, 2) ~= "--" then words[#words + 1] = w end
    end
    local cmd = words[1] or ""
    if cmd == "apps:create" or cmd == "postgres:create" or cmd == "redis:create" or cmd == "postgres:link"
      or cmd == "redis:link" then
      local key = table.concat(words, " ")
      attempts[key] = (attempts[key] or 0) + 1
      if e.exit == 0 then
        counts[key] = (counts[key] or 0) + 1
      end
    end
  end
  for key, n in pairs(counts) do
    assert.are.equal(1, n, key .. " succeeded " .. n .. " times")
  end
  local repeats = 0
  for _, n in pairs(attempts) do
    if n > 1 then repeats = repeats + 1 end
  end
  return repeats
end

-- Every change that takes effect on the next start (config:set --no-restart,
-- resource:limit, *:link --no-restart, storage:mount) of a deployed app of
-- instance app was followed by a start (ps:restart, git:from-image,
-- ps:rebuild) of that app: what runs is what is configured.
local RESTART_NEEDED = { ["config:set"] = true, ["resource:limit"] = true, ["postgres:link"] = true,
                         ["redis:link"] = true, ["storage:mount"] = true }
local STARTS = { ["ps:restart"] = true, ["git:from-image"] = true, ["ps:rebuild"] = true }

local function assert_running_config_current(h, app)
  local changed, started = {}, {}
  for i, e in ipairs(D.log(h)) do
    if e.exit == 0 then
      local words = {}
      for _, w in ipairs(e.argv) do
        if w:sub(1, 2) ~= "--" or w == "--no-restart" then words[#words + 1] = w end
      end
      local cmd = words[1]
      local target
      for k = 2, #words do
        local w = words[k]
        if w == app or w:sub(1, #app + 1) == app .. "-" then
          target = w -- the app is the last name of the instance on the line (links name the service first)
        end
      end
      if target and RESTART_NEEDED[cmd] then
        local no_restart = false
        for _, w in ipairs(words) do
          no_restart = no_restart or w == "--no-restart"
        end
        if cmd ~= "config:set" or no_restart then
          changed[target] = i
        end
      elseif target and STARTS[cmd] then
        started[target] = i
      end
    end
  end
  for target, i in pairs(changed) do
    if started[target] then
      assert.is_true(started[target] > i, target .. " was changed (log entry " .. i .. ") after its last start ("
        .. started[target] .. ") and not restarted")
    end
  end
end

local function instance_row(sb, sub)
  return SB.rows(sb, "instances", { subscription_id = sub })[1]
end

describe("crash-resume #integration", function()
  local h, sb, dir, srv, env
  local rng_state = SEED
  -- A small seeded generator of our own (math.random is shared with the harnesses).
  local function rand()
    rng_state = (rng_state * 1103515245 + 12345) % 2147483648
    return rng_state / 2147483648
  end
  local known = {} -- app -> {app, sub, password}: instances that exist
  local gone = {}  -- app -> true: deprovisioned instances
  local ref = {}   -- tier -> normalized shape of a clean instance
  local t_provision, t_update, t_deprovision
  local t_start = socket.gettime()

  setup(function()
    note("crash_spec: seed=%d trials=%d (MRPROV_CRASH_SEED=%d MRPROV_CRASH_TRIALS=%d reproduce the kill delays)",
      SEED, TRIALS, SEED, TRIALS)
    h = D.start()
    D.set_faults(h, { { match = ".", action = "delay", ms = SIM_DELAY_MS } })
    sb = SB.start()
    dir = H.tmpdir()
    env = D.mrprov_env(h, { SUPABASE_URL = sb.url, SUPABASE_SERVICE_KEY = sb.key, LOG_LEVEL = "INFO" })
    srv = H.start({ dir = dir, env = env })
  end)

  teardown(function()
    note("crash_spec: %.1f s in all", socket.gettime() - t_start)
    H.cleanup()
    D.stop_all()
    if sb then
      SB.stop(sb)
    end
  end)

  local body = function(sub, tier)
    return { subscription_id = sub, account_id = ACCOUNT, tier = tier or "professional", enable_matrix = true,
             matrix_type = "tuwunel" }
  end

  local function wait_done(sub, job_id, timeout)
    return H.wait_for(srv, "/api/v1/status/" .. sub, function(st)
      return st.job ~= cjson.null and st.job.id == job_id and (st.job.state == "succeeded" or st.job.state == "failed")
    end, timeout or 60)
  end

  -- The Supabase row reaches want (a table of column values) and the outbox empties.
  local function assert_mirrored(sub, want)
    local row = H.eventually("the Supabase row of " .. sub, function()
      local r = instance_row(sb, sub)
      if not r then return nil, "no row" end
      for k, v in pairs(want) do
        if r[k] ~= v then return nil, k .. "=" .. tostring(r[k]) end
      end
      return r
    end, 30)
    H.eventually("the outbox to drain", function()
      local n = store_rows(dir, "SELECT count(*) AS n FROM outbox")[1].n
      return n == 0, n .. " row(s) left"
    end, 30)
    return row
  end

  local function assert_instance(inst, tier)
    local s = D.state(h)
    s.dir = h.state
    assert.are.same(ref[tier], shape(s, inst))
    assert_no_orphans(s, known, gone)
  end

  -- kill -9 after delay seconds (or once delay(), a predicate, holds);
  -- returns where the job was.
  local function kill_after(delay, job_id)
    if type(delay) == "function" then
      H.eventually("the kill point", delay, 30)
    else
      socket.sleep(delay)
    end
    H.stop(srv, "KILL")
    local j = store_rows(dir, "SELECT state, steps_done, steps_total, step FROM jobs WHERE id = " .. lit(job_id))[1]
    local running = store_rows(dir, "SELECT command FROM steps WHERE job_id = " .. lit(job_id)
      .. " AND state = 'running' ORDER BY seq")
    local cmds = {}
    for _, r in ipairs(running) do
      -- the command and its first operand are enough to place the kill
      local words = {}
      for w in r.command:gmatch("%S+") do
        if w ~= "dokku" and w:sub(1, 2) ~= "--" and #words < 2 then words[#words + 1] = w end
      end
      cmds[#cmds + 1] = table.concat(words, " ")
    end
    return j, #cmds > 0 and table.concat(cmds, " | ") or "-"
  end

  -- How long job_id took on the server (its own measure: no HTTP, no polling).
  local function job_seconds(job_id)
    local _, job = H.request(srv, "GET", "/api/v1/jobs/" .. job_id)
    return job.result.provisioning_time_seconds
  end

  local function restart()
    srv = H.start({ dir = dir, env = env })
  end

  it("measures a clean provision, update and the shape of each tier", function()
    local t0 = socket.gettime()
    local code, j = H.request(srv, "POST", "/api/v1/provision", body("crashref"))
    assert.are.equal(202, code)
    local st = wait_done("crashref", j.job_id)
    assert.are.equal("succeeded", st.job.state, cjson.encode(st))
    t_provision = job_seconds(j.job_id)
    note("clean provision: %.2f s on the server, %.2f s from the POST", t_provision, socket.gettime() - t0)
    local inst = { app = j.app_name, sub = "crashref", password = j.admin_password }
    known[j.app_name] = inst
    local s = D.state(h)
    ref.professional = shape(s, inst)
    assert.are.same({ "{app}", "{app}-backend", "{app}-frontend", "{app}-matrix" }, ref.professional.names.apps)
    assert.are.same({ "{app}-db" }, ref.professional.names.postgres)
    assert.are.same({ "{app}-redis" }, ref.professional.names.redis)
    -- the same shape as what `mrprov plan` says a provision creates
    local pcode, plan = H.run({ "plan", "--tier", "professional", "--subscription", "crashref", "--matrix", "tuwunel" },
      H.base_env(H.tmpdir(), { LETSENCRYPT_EMAIL = "ops@example.com" }))
    assert.are.equal(0, pcode, plan)
    local planned = {}
    for name in plan:gmatch("apps:create (%S+)") do
      planned[#planned + 1] = (name:gsub("^mr%-[%w]+%-[%w]+", "{app}"))
    end
    table.sort(planned)
    assert.are.same(ref.professional.names.apps, planned)
    assert_mirrored("crashref", { status = "running", app_name = j.app_name })

    code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = "crashref", app_name = inst.app,
                                                        tier = "enterprise" })
    assert.are.equal(202, code)
    st = wait_done("crashref", j.job_id)
    assert.are.equal("succeeded", st.job.state)
    t_update = job_seconds(j.job_id)
    ref.enterprise = shape(D.state(h), inst)
    note("clean update: %.2f s on the server (%d simulator commands so far, at %.1f s)", t_update, #D.log(h),
      socket.gettime() - t_start)
  end)

  local trial_insts = {}

  it("converges after kill -9 at a random point of a provision, every trial", function()
    assert.is_number(t_provision, "the clean provision did not run")
    local killed_mid, kill_first_cmd = 0, 0
    for i = 1, TRIALS do
      local sub = string.format("crash%03d", i)
      local delay, when
      if i == 1 then
        delay, when = 0, "0.000 s" -- right after the 202: before any command
      elseif i == 2 then
        -- while the very first commands (apps:create) are in flight
        D.set_faults(h, { { match = "apps:create", action = "delay", ms = 300 },
                          { match = ".", action = "delay", ms = SIM_DELAY_MS } })
        delay = function()
          return store_rows(dir, "SELECT count(*) AS n FROM steps WHERE state = 'running'"
            .. " AND command LIKE '%apps:create mr-crash002-%'")[1].n > 0
        end
        when = "apps:create started"
      else
        delay = rand() * t_provision
        when = string.format("%.3f s", delay)
      end
      local before_log = #D.log(h)
      local code, j = H.request(srv, "POST", "/api/v1/provision", body(sub))
      assert.are.equal(202, code, cjson.encode(j))
      local inst = { app = j.app_name, sub = sub, password = j.admin_password }
      known[j.app_name] = inst
      trial_insts[#trial_insts + 1] = inst
      local job, running = kill_after(delay, j.job_id)
      D.set_faults(h, { { match = ".", action = "delay", ms = SIM_DELAY_MS } })
      local sim_cmds = #D.log(h) - before_log
      note("trial %d/%d %s: kill -9 after %s: job %s, steps %d/%d done, running: %s; %d simulator commands",
        i, TRIALS, sub, when, job.state, job.steps_done, job.steps_total, running, sim_cmds)
      if job.state ~= "succeeded" then
        killed_mid = killed_mid + 1
      end
      if job.steps_done == 0 then
        kill_first_cmd = kill_first_cmd + 1
      end
      local t_killed = socket.gettime()
      restart()
      local t_restarted = socket.gettime()
      if i % 5 == 0 then
        -- a second kill, while the resumed run works
        local again = rand() * t_provision / 2
        local job2, running2 = kill_after(again, j.job_id)
        note("trial %d/%d %s: second kill -9 %.3f s after the restart: job %s, steps %d/%d done, running: %s",
          i, TRIALS, sub, again, job2.state, job2.steps_done, job2.steps_total, running2)
        restart()
      end
      local st = wait_done(sub, j.job_id, 60)
      local t_converged = socket.gettime()
      assert.are.equal("succeeded", st.job.state, "trial " .. i .. ": " .. cjson.encode(st))
      assert.are.equal("running", st.status)
      assert.are.equal(j.app_name, st.app_name)
      -- exactly the objects of a clean provision, nothing else anywhere
      assert_instance(inst, "professional")
      assert_running_config_current(h, inst.app)
      -- one provision job for the subscription, finished
      local jobs = store_rows(dir, "SELECT id, operation, state FROM jobs WHERE subscription_id = " .. lit(sub))
      assert.are.same({ { id = j.job_id, operation = "provision", state = "succeeded" } }, jobs)
      -- a repeat POST answers idempotently: same app, same job, no new one
      local rcode, rj = H.request(srv, "POST", "/api/v1/provision", body(sub))
      assert.are.equal(200, rcode, cjson.encode(rj))
      assert.are.equal(j.app_name, rj.app_name)
      assert.are.equal(j.job_id, rj.job_id)
      assert.are.equal("running", rj.status)
      assert.are.equal(1, store_rows(dir, "SELECT count(*) AS n FROM jobs WHERE subscription_id = " .. lit(sub))[1].n)
      -- the Supabase row, and every event of this subscription is of that one job
      local row = assert_mirrored(sub, { status = "running", app_name = j.app_name })
      assert.are.equal("professional", row.tier)
      assert.are.equal(ACCOUNT, row.account_id)
      assert.are.equal("https://" .. j.app_name .. ".mindroom.chat", row.frontend_url)
      assert.are.equal("https://api." .. j.app_name .. ".mindroom.chat", row.backend_url)
      assert.are.equal("https://matrix." .. j.app_name .. ".mindroom.chat", row.matrix_url)
      local ev = SB.query(sb, "select count(distinct job_id) as n, count(*) filter (where kind = 'job_succeeded') as ok"
        .. " from public.events where subscription_id = " .. SB.literal(sb, sub))[1]
      assert.are.equal("1", ev.n, "trial " .. i .. ": events of more than one job")
      assert.are.equal("1", ev.ok, "trial " .. i .. ": job_succeeded events: " .. ev.ok)
      note("trial %d/%d %s: converged: start-up %.2f s, resumed job %.2f s, checks %.2f s (at %.1f s)", i, TRIALS,
        sub, t_restarted - t_killed, t_converged - t_restarted, socket.gettime() - t_converged,
        socket.gettime() - t_start)
    end
    -- no secret in any log of any of the processes
    local p = io.popen("cat " .. H.sh_quote(dir) .. "/server-*.log")
    local logs = p:read("a")
    p:close()
    assert.is_true(#logs > 0)
    assert.is_nil(logs:find(sb.key, 1, true), "the service key leaked into a log")
    for _, inst in ipairs(trial_insts) do
      assert.is_nil(logs:find(inst.password, 1, true), "an admin password leaked into a log")
    end
    local repeats = assert_created_once(h)
    note("provision trials: %d of %d killed before the job finished, %d before its first step was done; "
      .. "%d creating command(s) sent again after a crash (each succeeded once)", killed_mid, TRIALS,
      kill_first_cmd, repeats)
    -- (kills after the end still check a restart on a finished job; most must land inside)
    assert.is_true(killed_mid >= TRIALS // 3, "too few kills landed inside a job")
  end)

  it("rolls back what the job made before and after a kill -9 when the resumed provision fails", function()
    local sub = "crashfail"
    local code, j = H.request(srv, "POST", "/api/v1/provision", body(sub))
    assert.are.equal(202, code)
    local inst = { app = j.app_name, sub = sub, password = j.admin_password }
    known[inst.app] = inst
    -- kill once apps, services and links exist (the first waves), before
    -- the backend's deploy (one of the last steps)
    H.wait_for(srv, "/api/v1/status/" .. sub, function(st)
      return st.job ~= cjson.null and st.job.steps_done >= 8
    end, 30)
    local job, running = kill_after(0, j.job_id)
    note("resumed failure: kill -9 at steps %d/%d done, running: %s", job.steps_done, job.steps_total, running)
    -- (the first matching rule applies)
    D.set_faults(h, { { match = "git:from%-image %S+%-backend", action = "fail", exit = 1,
                        stderr = " !     Image pull failed: manifest unknown" },
                      { match = ".", action = "delay", ms = SIM_DELAY_MS } })
    restart()
    local st = wait_done(sub, j.job_id, 60)
    D.set_faults(h, { { match = ".", action = "delay", ms = SIM_DELAY_MS } })
    assert.are.equal("failed", st.job.state, cjson.encode(st))
    assert.are.equal("failed", st.status)
    assert.matches("manifest unknown", st.error)
    local s = D.state(h)
    s.dir = h.state
    local left = D.objects_of(s, inst.app)
    assert.are.same({ apps = {}, postgres = {}, redis = {} }, { apps = left.apps, postgres = left.postgres,
                                                                 redis = left.redis })
    known[inst.app], gone[inst.app] = nil, true
    assert_no_orphans(s, known, gone)
    assert_mirrored(sub, { status = "failed", app_name = inst.app })
    -- the cause gone, a repeat resumes the same instance to a whole one
    known[inst.app], gone[inst.app] = inst, nil
    local rcode, rj = H.request(srv, "POST", "/api/v1/provision", body(sub), { Prefer = "wait=60" })
    assert.are.equal(200, rcode, cjson.encode(rj))
    assert.are.equal(inst.app, rj.app_name)
    assert.are.equal("running", rj.status)
    assert_instance(inst, "professional")
    assert_mirrored(sub, { status = "running", app_name = inst.app })
  end)

  it("converges after kill -9 during an update", function()
    assert.is_true(#trial_insts >= OTHER)
    for i = 1, OTHER do
      local inst = trial_insts[i]
      local delay = rand() * t_update
      local when = string.format("%.3f s", delay)
      if i == 1 then
        -- after the changes, while the restart they need is in flight (it
        -- never happens: the session dies with mrprov)
        D.set_faults(h, { { match = "ps:restart", action = "hang", times = 1 },
                          { match = ".", action = "delay", ms = SIM_DELAY_MS } })
        delay = function()
          return store_rows(dir, "SELECT count(*) AS n FROM steps WHERE state = 'running'"
            .. " AND command LIKE '%ps:restart " .. inst.app .. "%'")[1].n > 0
        end
        when = "ps:restart started"
      end
      local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = inst.sub, app_name = inst.app,
                                                               tier = "enterprise" })
      assert.are.equal(202, code)
      local job, running = kill_after(delay, j.job_id)
      D.set_faults(h, { { match = ".", action = "delay", ms = SIM_DELAY_MS } })
      note("update %d/%d %s: kill -9 after %s: job %s, steps %d/%d done, running: %s", i, OTHER, inst.sub,
        when, job.state, job.steps_done, job.steps_total, running)
      restart()
      local st = wait_done(inst.sub, j.job_id, 60)
      assert.are.equal("succeeded", st.job.state, cjson.encode(st))
      assert.are.equal("running", st.status)
      assert.are.equal("enterprise", st.tier)
      assert_instance(inst, "enterprise")
      assert_running_config_current(h, inst.app)
      local jobs = store_rows(dir, "SELECT operation, count(*) AS n FROM jobs WHERE subscription_id = "
        .. lit(inst.sub) .. " GROUP BY operation ORDER BY operation")
      assert.are.same({ { operation = "provision", n = 1 }, { operation = "update", n = 1 } }, jobs)
      assert_mirrored(inst.sub, { status = "running", tier = "enterprise" })
    end
  end)

  it("converges after kill -9 during a deprovision with backup", function()
    -- the clean one, to measure
    local refinst
    for _, v in pairs(known) do
      if v.sub == "crashref" then refinst = v end
    end
    local t0 = socket.gettime()
    local code, j = H.request(srv, "DELETE", "/api/v1/deprovision",
      { subscription_id = "crashref", app_name = refinst.app, backup_data = true })
    assert.are.equal(202, code)
    local st = wait_done("crashref", j.job_id)
    assert.are.equal("succeeded", st.job.state)
    t_deprovision = job_seconds(j.job_id)
    note("clean deprovision: %.2f s on the server, %.2f s from the DELETE", t_deprovision, socket.gettime() - t0)
    known[refinst.app], gone[refinst.app] = nil, true
    local s0 = D.state(h)
    s0.dir = h.state
    assert_no_orphans(s0, known, gone)
    for i = 1, OTHER do
      local inst = trial_insts[#trial_insts - i + 1]
      local delay = rand() * t_deprovision
      code, j = H.request(srv, "DELETE", "/api/v1/deprovision",
        { subscription_id = inst.sub, app_name = inst.app, backup_data = true })
      assert.are.equal(202, code)
      local job, running = kill_after(delay, j.job_id)
      note("deprovision %d/%d %s: kill -9 after %.3f s: job %s, steps %d/%d done, running: %s", i, OTHER, inst.sub,
        delay, job.state, job.steps_done, job.steps_total, running)
      restart()
      st = wait_done(inst.sub, j.job_id, 60)
      assert.are.equal("succeeded", st.job.state, cjson.encode(st))
      assert.are.equal("deprovisioned", st.status)
      known[inst.app], gone[inst.app] = nil, true
      local s = D.state(h)
      s.dir = h.state
      local left = D.objects_of(s, inst.app)
      assert.are.same({ apps = {}, postgres = {}, redis = {} }, { apps = left.apps, postgres = left.postgres,
                                                                   redis = left.redis })
      assert_no_orphans(s, known, gone)
      local _, full = H.request(srv, "GET", "/api/v1/jobs/" .. j.job_id)
      local files = full.result.backup.files
      local kinds = {}
      for _, f in ipairs(files) do
        local data = H.read_file(f.path)
        assert.is_truthy(data, "backup file missing: " .. tostring(f.path))
        assert.are.equal(f.size, #data)
        assert.is_true(f.size > 0)
        kinds[f.service] = true
      end
      -- a kill after the exports but before the services went leaves the
      -- earlier run's files; the resumed job re-exports what still exists
      -- (the services' exports and the apps' storage directories)
      if job.steps_done == 0 then
        assert.are.same({ [inst.app .. "-db"] = true, [inst.app .. "-redis"] = true,
                          [inst.app .. "-backend"] = true, [inst.app .. "-matrix"] = true }, kinds)
      end
      local jobs = store_rows(dir, "SELECT count(*) AS n FROM jobs WHERE subscription_id = " .. lit(inst.sub)
        .. " AND operation = 'deprovision'")
      assert.are.equal(1, jobs[1].n)
      assert_mirrored(inst.sub, { status = "deprovisioned" })
    end
    -- what is left is exactly the surviving trials' instances
    local s = D.state(h)
    s.dir = h.state
    assert_no_orphans(s, known, gone)
    assert.are.equal(#sorted_keys(known) * 4, #s.global.apps)
  end)
end)
