-- Moving instances between Dokku hosts (issue 16, items 5 and 6) through
-- the real binary: three real sshd "hosts" on loopback ports, each with
-- its own simulator state (as tests/integration/hosts_spec.lua), the split
-- profile (each instance has a Postgres and a Redis service and a
-- persistent storage directory, holding data put there through the
-- simulator).
-- - a move that fails before the switch (a fault on the target's
--   postgres:import) rolls the target back and leaves the source serving,
--   data untouched;
-- - a move with kill -9 at a seeded point (a count of the target's
--   commands) resumes after the restart and ends with exactly one copy,
--   on the target, its data identical;
-- - a drained host is evacuated: every instance on the others, data
--   (database and Redis contents, storage files) identical, nothing of
--   them left on the drained host; GET /api/v1/hosts shows none left.
local D = require "dokku_harness"
local H = require "harness"
local cjson = require "cjson"

local NAMES = { "h1", "h2", "h3" }
local CAPACITY = "capacity = { memory_mb = 3072, cpu = 8, instances = 12 }"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function host_file(h)
  return table.concat({
    "return {",
    "  host = \"127.0.0.1\",",
    ("  port = %d,"):format(h.port),
    ("  user = %q,"):format(h.user),
    ("  key_path = %q,"):format(h.key),
    ("  known_hosts = %q,"):format(h.dir .. "/mrprov_known_hosts"),
    "  " .. CAPACITY .. ",",
    "}",
    "",
  }, "\n")
end

local function empty(objs)
  return #objs.apps == 0 and #objs.postgres == 0 and #objs.redis == 0
end

describe("moving instances between Dokku hosts #integration", function()
  local by_name, hosts, srv, dir, env = {}, {}, nil, nil, nil
  local seed = tonumber(os.getenv("MRPROV_MOVE_SEED") or "") or os.time()
  local rng = seed

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
  local function put_data(h, app)
    local s = D.state(h)
    local objs = D.objects_of(s, app)
    assert.are.equal(1, #objs.postgres)
    assert.are.equal(1, #objs.redis)
    assert.are.equal(1, #objs.storage)
    local data = { postgres = {}, redis = {} }
    local pg = "PGDMP\1\14\0\4\8\8\1\1" .. app .. "\0rows of " .. app .. "\0\255\0\1" .. string.rep("x", 3000)
    local rd = "REDIS0012\250\9redis-ver\0058.0.2\254\0key:" .. app .. "\0\255" .. string.rep("\0", 8)
    D.set_service_data(h, "postgres", objs.postgres[1], pg)
    D.set_service_data(h, "redis", objs.redis[1], rd)
    data.postgres[objs.postgres[1]] = pg
    data.redis[objs.redis[1]] = rd
    local path = s.global.storage[objs.storage[1]].path
    local fs = D.fs_dir(h, path)
    os.execute("mkdir -p " .. D.quote(fs .. "/sub"))
    write(fs .. "/mindroom.db", "SQLite format 3\0" .. app)
    write(fs .. "/sub/notes.txt", "notes of " .. app .. "\n")
    data.files = { ["mindroom.db"] = "SQLite format 3\0" .. app, ["sub/notes.txt"] = "notes of " .. app .. "\n" }
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
      assert.is_true(bytes == read(fs .. "/" .. rel), rel .. " differs on " .. h.port)
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
      write(dir .. "/hosts/" .. n .. ".lua", host_file(by_name[n]))
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
    assert_data(by_name.h1, app, data)
    -- the source's apps are as they were: still running, domains kept
    local after = D.state(by_name.h1).apps
    for name, a in pairs(before) do
      assert.same(a.domains, after[name].domains)
      assert.are.equal(a.deploy.running, after[name].deploy.running)
    end
  end)

  it("resumes a move after kill -9 at a seeded point and ends with exactly one copy", function()
    local app = provision_on("sub_mv_crash", "h1")
    local data = put_data(by_name.h1, app)
    local target = by_name.h3
    local since = #D.log(target)
    local point = random(24) -- the target's commands before the kill
    local code, j = H.request(srv, "POST", "/api/v1/instances/sub_mv_crash/move", { host = "h3" })
    assert.are.equal(202, code, cjson.encode(j))
    local ok = pcall(H.eventually, "the kill point", function()
      return #D.log(target) - since >= point
    end, 30, 0.01)
    H.stop(srv, "KILL")
    print(("move_spec: kill -9 after %d target command(s) (%s)"):format(#D.log(target) - since,
      ok and "at the point" or "the job ended first"))
    srv = H.start({ dir = dir, env = env })
    local job = job_done(j.job_id, 90)
    assert.are.equal("succeeded", job.state, cjson.encode(job))
    assert.are.equal("h3", status("sub_mv_crash").host)
    assert_only_on(app, "h3")
    assert_data(target, app, data)
  end)

  it("evacuates a drained host: every instance on the others, data identical, nothing left", function()
    local subs, apps, data = {}, {}, {}
    for i = 1, 3 do
      local sub = "sub_mv_evac_" .. i
      subs[i] = sub
      apps[i] = provision_on(sub, "h2")
      data[i] = put_data(by_name.h2, apps[i])
    end
    assert.are.equal(200, (H.request(srv, "POST", "/api/v1/hosts/h2/drain")))
    local code, j = H.request(srv, "POST", "/api/v1/hosts/h2/evacuate")
    assert.are.equal(202, code, cjson.encode(j))
    assert.are.equal(3, #j.job_ids)
    local _, hv = H.request(srv, "GET", "/api/v1/hosts")
    for _, v in ipairs(hv.hosts) do
      if v.name == "h2" then assert.are.equal(3, v.instances_left) end
    end
    for _, id in ipairs(j.job_ids) do
      assert.are.equal("succeeded", job_done(id, 90).state)
    end
    for i, sub in ipairs(subs) do
      local v = status(sub)
      assert.are_not.equal("h2", v.host)
      assert.are.equal("running", v.status)
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
