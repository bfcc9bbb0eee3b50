-- Moving instances between Dokku hosts (issue 16, items 5 and 6) through
-- the real binary: three real sshd "hosts" on loopback ports, each with
-- its own simulator state (as tests/integration/hosts_spec.lua), the split
-- profile (each instance has a Postgres and a Redis service and a
-- persistent storage directory, holding data put there through the
-- simulator).
-- - a move that fails before the switch (a fault on the target's
--   postgres:import) rolls the target back and leaves the source serving,
--   data untouched;
-- - a rollback cut by kill -9 finishes after the restart;
-- - moves with kill -9 at seeded points (a command of each phase, on the
--   source or the target) resume after the restart and end with exactly
--   one copy, on the target, data identical, domains switched;
-- - a drained host is evacuated: every instance on the others, data
--   (database and Redis contents, storage files) identical, nothing of
--   them left on the drained host; GET /api/v1/hosts shows none left.
local D = require "dokku_harness"
local H = require "harness"
local cjson = require "cjson"

local NAMES = { "h1", "h2", "h3" }
local CAPACITY = "capacity = { memory_mb = 3072, cpu = 8, instances = 12 }"

local function host_file(h)
  return D.host_file(h, { CAPACITY .. "," })
end

local function empty(objs)
  return #objs.apps == 0 and #objs.postgres == 0 and #objs.redis == 0
end

describe("moving instances between Dokku hosts #integration", function()
  local by_name, hosts, srv, dir, env = {}, {}, nil, nil, nil
  local seed = tonumber(os.getenv("MRPROV_MOVE_SEED") or "") or os.time()
  local rng = (seed * 2654435761 + 97) % 2147483648

  local function random(n)
    rng = (rng * 1103515245 + 12345) % 2147483648
    return 1 + (rng // 65536) % n
  end

  local function status(sub)
    local code, v = H.request(srv, "GET", "/api/v1/status/" .. sub)
    assert.are.equal(200, code)
    return v
  end

  local function job_done(job_id, timeout)
    local v
    H.eventually("job " .. job_id .. " to end", function()
      local code, j = H.request(srv, "GET", "/api/v1/jobs/" .. job_id)
      v = j
      return code == 200 and (j.state == "succeeded" or j.state == "failed"), code == 200 and j.state or code
    end, timeout or 60)
    return v
  end

  -- Provisions sub on host `on` (the others drained meanwhile).
  local function provision_on(sub, on)
    for _, n in ipairs(NAMES) do
      if n ~= on then assert.are.equal(200, (H.request(srv, "POST", "/api/v1/hosts/" .. n .. "/drain"))) end
    end
    local code, j = H.request(srv, "POST", "/api/v1/provision", { subscription_id = sub, account_id = "acc_" .. sub,
                                                                  tier = "free" })
    assert.are.equal(202, code, cjson.encode(j))
    for _, n in ipairs(NAMES) do
      if n ~= on then assert.are.equal(200, (H.request(srv, "POST", "/api/v1/hosts/" .. n .. "/undrain"))) end
    end
    assert.are.equal("succeeded", job_done(j.job_id).state)
    local v = status(sub)
    assert.are.equal(on, v.host)
    return v.app_name
  end

  -- Puts data into the instance's services and storage on host h; returns
  -- what was put there.
  -- Bytes that do not compress (so the storage archive is as large).
  local function noise(n, salt)
    local x, parts = salt, {}
    for i = 1, n // 4 do
      x = (x * 1103515245 + 12345) % 2147483648
      parts[i] = string.pack("<I4", x)
    end
    return table.concat(parts)
  end

  -- big: more than the transport's in-memory stdin bound (1 MiB) in the
  -- Postgres dump and in a storage file, which are streamed from files.
  local function put_data(h, app, big)
    local s = D.state(h)
    local objs = D.objects_of(s, app)
    assert.are.equal(1, #objs.postgres)
    assert.are.equal(1, #objs.redis)
    assert.are.equal(1, #objs.storage)
    local data = { postgres = {}, redis = {} }
    local pg = "PGDMP\1\14\0\4\8\8\1\1" .. app .. "\0rows of " .. app .. "\0\255\0\1" .. string.rep("x", 3000)
      .. (big and noise(1536 * 1024, 7) or "")
    local rd = "REDIS0012\250\9redis-ver\0058.0.2\254\0key:" .. app .. "\0\255" .. string.rep("\0", 8)
    D.set_service_data(h, "postgres", objs.postgres[1], pg)
    D.set_service_data(h, "redis", objs.redis[1], rd)
    data.postgres[objs.postgres[1]] = pg
    data.redis[objs.redis[1]] = rd
    local path = s.global.storage[objs.storage[1]].path
    local fs = D.fs_dir(h, path)
    os.execute("mkdir -p " .. D.quote(fs .. "/sub"))
    local db = "SQLite format 3\0" .. app .. (big and noise(1280 * 1024, 11) or "")
    H.write_file(fs .. "/mindroom.db", db)
    H.write_file(fs .. "/sub/notes.txt", "notes of " .. app .. "\n")
    data.files = { ["mindroom.db"] = db, ["sub/notes.txt"] = "notes of " .. app .. "\n" }
    data.path = path
    return data
  end

  -- The instance's data on host h is what put_data put there.
  local function assert_data(h, app, data)
    local s = D.state(h)
    local objs = D.objects_of(s, app)
    for _, kind in ipairs({ "postgres", "redis" }) do
      for name, bytes in pairs(data[kind]) do
        assert.is_true(bytes == D.service_data(h, kind, name), kind .. " " .. name .. " contents differ")
      end
      assert.are.equal(1, #objs[kind])
    end
    local fs = D.fs_dir(h, data.path)
    for rel, bytes in pairs(data.files) do
      assert.is_true(bytes == H.read_file(fs .. "/" .. rel), rel .. " differs on " .. h.port)
    end
  end

  -- The instance's apps and services are on exactly one host: `on`.
  local function assert_only_on(app, on)
    for _, n in ipairs(NAMES) do
      local objs = D.objects_of(D.state(by_name[n]), app)
      if n == on then
        assert.is_true(#objs.apps >= 3, app .. " apps on " .. n)
        assert.are.equal(1, #objs.postgres)
        assert.are.equal(1, #objs.redis)
      else
        assert.is_true(empty(objs), app .. " has objects on " .. n .. ": " .. cjson.encode(objs))
      end
    end
  end

  setup(function()
    for _, n in ipairs(NAMES) do
      local h = D.start()
      hosts[#hosts + 1] = h
      by_name[n] = h
    end
    dir = H.tmpdir()
    os.execute("mkdir -p " .. dir .. "/hosts")
    for _, n in ipairs(NAMES) do
      H.write_file(dir .. "/hosts/" .. n .. ".lua", host_file(by_name[n]))
    end
    env = { HOSTS_DIR = dir .. "/hosts", DOKKU_HOST_KEY_TOFU = "true", DOKKU_POOL_SIZE = "2",
            LETSENCRYPT_EMAIL = "ops@example.com", HEALTH_TIMEOUT_SECONDS = "0", WORKERS = "4",
            EVACUATE_PARALLEL = "2" }
    srv = H.start({ dir = dir, env = env })
    print(("move_spec: seed=%d (MRPROV_MOVE_SEED reproduces the kill point)"):format(seed))
  end)

  teardown(function()
    if srv then H.stop(srv) end
    for _, h in ipairs(hosts) do D.stop(h) end
  end)

  it("refuses what cannot be moved: unknown, same or draining target, 404", function()
    local app = provision_on("sub_mv_refuse", "h1")
    assert.truthy(app)
    local code, j = H.request(srv, "POST", "/api/v1/instances/sub_mv_refuse/move", { host = "nope" })
    assert.are.equal(422, code, cjson.encode(j))
    code = H.request(srv, "POST", "/api/v1/instances/sub_mv_refuse/move", { host = "h1" })
    assert.are.equal(422, code)
    H.request(srv, "POST", "/api/v1/hosts/h3/drain")
    code = H.request(srv, "POST", "/api/v1/instances/sub_mv_refuse/move", { host = "h3" })
    assert.are.equal(422, code)
    H.request(srv, "POST", "/api/v1/hosts/h3/undrain")
    code = H.request(srv, "POST", "/api/v1/instances/sub_nobody/move", {})
    assert.are.equal(404, code)
    -- a host that is not draining is not evacuated
    code = H.request(srv, "POST", "/api/v1/hosts/h2/evacuate")
    assert.are.equal(409, code)
  end)

  it("rolls the target back when the move fails before the switch; the source keeps serving", function()
    local app = provision_on("sub_mv_fail", "h1")
    local data = put_data(by_name.h1, app)
    local before = D.state(by_name.h1).apps
    local since = #D.log(by_name.h2)
    D.set_faults(by_name.h2, { { match = "postgres:import", action = "fail", exit = 1,
                                 stderr = "pg_restore: error: could not execute query\n" } })
    local code, j = H.request(srv, "POST", "/api/v1/instances/sub_mv_fail/move", { host = "h2" })
    assert.are.equal(202, code, cjson.encode(j))
    assert.are.equal("h2", j.to)
    -- while it runs, another request is refused
    local busy = H.request(srv, "POST", "/api/v1/instances/sub_mv_fail/move", {})
    assert.are.equal(409, busy)
    local job = job_done(j.job_id)
    D.set_faults(by_name.h2, {})
    assert.are.equal("failed", job.state)
    assert.matches("rolled back", job.error)
    local v = status("sub_mv_fail")
    assert.are.equal("h1", v.host)
    assert.are.equal("running", v.status)
    assert_only_on(app, "h1")
    -- the target had been provisioned, and was torn down again
    local sent = table.concat(D.mutating(by_name.h2, since), "\n")
    assert.matches("apps:create " .. app .. "-backend", sent, 1, true)
    assert.matches("apps:destroy --force " .. app .. "-backend", sent, 1, true)
    assert_data(by_name.h1, app, data)
    -- the source's apps are as they were: still running, domains kept
    local after = D.state(by_name.h1).apps
    for name, a in pairs(before) do
      assert.same(a.domains, after[name].domains)
      assert.are.equal(a.deploy.running, after[name].deploy.running)
    end
  end)

  it("finishes a rollback cut by kill -9 after the restart", function()
    local app = provision_on("sub_mv_failkill", "h1")
    local data = put_data(by_name.h1, app)
    local target = by_name.h3
    D.set_faults(target, { { match = "redis:import", action = "fail", exit = 1, stderr = "boom\n" } })
    local since = #D.log(target)
    local code, j = H.request(srv, "POST", "/api/v1/instances/sub_mv_failkill/move", { host = "h3" })
    assert.are.equal(202, code, cjson.encode(j))
    H.eventually("the rollback to start", function()
      for i, e in ipairs(D.log(target)) do
        if i > since and table.concat(e.argv, " "):find("apps:destroy", 1, true) then return true end
      end
    end, 30, 0.01)
    H.stop(srv, "KILL")
    srv = H.start({ dir = dir, env = env })
    local job = job_done(j.job_id, 60)
    D.set_faults(target, {})
    assert.are.equal("failed", job.state)
    assert.matches("rolled back", job.error)
    local v = status("sub_mv_failkill")
    assert.are.equal("h1", v.host)
    assert.are.equal("running", v.status)
    assert_only_on(app, "h1")
    assert_data(by_name.h1, app, data)
  end)

  -- The kill points: a command of the move on one of its hosts (the
  -- phases: the target's convergence, the data, the switch, the source's
  -- backup and teardown), chosen by the seed; `nth`: the count of commands
  -- on that host when no pattern is given.
  local POINTS = {
    { host = "to", nth = true },
    { host = "from", match = "^postgres:export" },
    { host = "to", match = "^redis:import" },
    { host = "to", match = "^git:from%-archive" },
    { host = "to", match = "^run %-%-no%-tty %S+ tar %-xzf" },
    { host = "to", match = "^domains:set" },
    { host = "to", match = "^letsencrypt:enable" },
    { host = "from", match = "^run %-%-no%-tty %S+ tar %-C" },
    { host = "from", match = "^apps:destroy" },
  }

  local function logged(h, since, pattern)
    for i, e in ipairs(D.log(h)) do
      local words = {}
      for _, w in ipairs(e.argv) do
        if w ~= "--quiet" then words[#words + 1] = w end
      end
      if i > since and table.concat(words, " "):find(pattern) then return true end
    end
    return false
  end

  it("resumes moves after kill -9 at seeded points and ends each with exactly one copy", function()
    for trial = 1, 3 do
      local sub = "sub_mv_crash_" .. trial
      local from_name, to_name = "h1", trial == 2 and "h2" or "h3"
      local app = provision_on(sub, from_name)
      local data = put_data(by_name.h1, app)
      local domains = {}
      for name, a in pairs(D.state(by_name.h1).apps) do
        if name:sub(1, #app) == app then domains[name] = a.domains end
      end
      local p = POINTS[random(#POINTS)]
      local h = by_name[p.host == "to" and to_name or from_name]
      local since = #D.log(h)
      local nth = random(40)
      local code, j = H.request(srv, "POST", "/api/v1/instances/" .. sub .. "/move", { host = to_name })
      assert.are.equal(202, code, cjson.encode(j))
      local ok = pcall(H.eventually, "the kill point", function()
        if p.nth then return #D.log(h) - since >= nth end
        return logged(h, since, p.match)
      end, 30, 0.01)
      H.stop(srv, "KILL")
      print(("move_spec: trial %d: kill -9 at %s on %s (%s)"):format(trial, p.match or (nth .. " commands"), p.host,
        ok and "at the point" or "the job ended first"))
      srv = H.start({ dir = dir, env = env })
      local job = job_done(j.job_id, 90)
      assert.are.equal("succeeded", job.state, cjson.encode(job))
      assert.are.equal(to_name, status(sub).host)
      assert_only_on(app, to_name)
      assert_data(by_name[to_name], app, data)
      -- the switch: the target serves the domains the source did
      local target_apps = D.state(by_name[to_name]).apps
      for name, d in pairs(domains) do
        assert.same(d, target_apps[name].domains, name)
        -- and runs (the app stopped while its data was restored started again)
        if target_apps[name].deploy.deployed then
          assert.is_true(target_apps[name].deploy.running, name .. " runs")
        end
      end
    end
  end)

  it("evacuates a drained host: every instance on the others, data identical, nothing left", function()
    local subs, apps, data = {}, {}, {}
    for i = 1, 3 do
      local sub = "sub_mv_evac_" .. i
      subs[i] = sub
      apps[i] = provision_on(sub, "h2")
      data[i] = put_data(by_name.h2, apps[i], i == 1)
    end
    assert.are.equal(200, (H.request(srv, "POST", "/api/v1/hosts/h2/drain")))
    -- (an earlier spec's moved instance may be on h2 too: it goes as well)
    local _, hv = H.request(srv, "GET", "/api/v1/hosts")
    local on_h2
    for _, v in ipairs(hv.hosts) do
      if v.name == "h2" then on_h2 = v.instances_left end
    end
    assert.is_true(on_h2 >= 3)
    local code, j = H.request(srv, "POST", "/api/v1/hosts/h2/evacuate")
    assert.are.equal(202, code, cjson.encode(j))
    assert.are.equal(on_h2, #j.job_ids)
    assert.same({}, j.skipped)
    _, hv = H.request(srv, "GET", "/api/v1/hosts")
    for _, v in ipairs(hv.hosts) do
      if v.name == "h2" then
        assert.are.equal(on_h2, v.instances_left)
        assert.are.equal(on_h2, v.moving_out)
      end
    end
    -- at most EVACUATE_PARALLEL (2) of them run at once
    local most = 0
    H.eventually("the evacuation's moves to end", function()
      local running = H.sqlite_rows(dir .. "/data/mrprov.db", "SELECT COUNT(*) AS n FROM instances WHERE " ..
        "json_extract(spec, '$.move.started') = 1")[1].n
      most = math.max(most, running)
      local left = H.sqlite_rows(dir .. "/data/mrprov.db", "SELECT COUNT(*) AS n FROM instances WHERE " ..
        "json_extract(spec, '$.move') IS NOT NULL")[1].n
      return left == 0, left .. " left"
    end, 120, 0.05)
    assert.is_true(most >= 1 and most <= 2, "moves at once: " .. most)
    for _, id in ipairs(j.job_ids) do
      local job = job_done(id, 90)
      assert.are.equal("succeeded", job.state)
      -- the source was removed after a backup of its data: the two
      -- services' exports and the storage archive
      assert.are.equal(3, #job.result.backup.files, cjson.encode(job.result))
      for _, f in ipairs(job.result.backup.files) do
        assert.truthy(H.read_file(f.path), f.path)
      end
    end
    for i, sub in ipairs(subs) do
      local v = status(sub)
      assert.are_not.equal("h2", v.host)
      assert.are.equal("running", v.status)
      -- on the target: the backend stopped for its restore, started again,
      -- then (only then) given its domains
      local sent = D.mutating(by_name[v.host], 0)
      local stop, start, served
      local function is(c, text) return (" " .. c .. " "):find(" " .. text .. " ", 1, true) ~= nil end
      for k, c in ipairs(sent) do
        if is(c, "ps:stop " .. apps[i] .. "-backend") then stop = k end
        if stop and not start and is(c, "ps:start " .. apps[i] .. "-backend") then start = k end
        if not served and is(c, "domains:set " .. apps[i] .. "-backend") then served = k end
      end
      assert.truthy(stop, "ps:stop on " .. v.host)
      assert.truthy(start, "ps:start after the restore on " .. v.host)
      assert.truthy(served and served > start, "domains after the start on " .. v.host)
      assert_only_on(apps[i], v.host)
      assert_data(by_name[v.host], apps[i], data[i])
    end
    -- nothing of any instance is left on h2 (the other specs' instances moved too)
    local s2 = D.state(by_name.h2)
    assert.same({}, s2.global.apps)
    _, hv = H.request(srv, "GET", "/api/v1/hosts")
    for _, v in ipairs(hv.hosts) do
      if v.name == "h2" then
        assert.are.equal(0, v.instances_left)
        assert.are.equal(0, v.moving_out)
      end
    end
  end)
end)
