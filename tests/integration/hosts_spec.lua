-- A fleet of Dokku hosts (issue 16) through the real binary: three real
-- sshd "hosts" on loopback ports, each with its own simulator state, named
-- by host files (HOSTS_DIR) and no DOKKU_HOST.
-- - 30 provisions are spread by the placement policy, none over capacity,
--   each instance's objects on the host its status view names;
-- - a stopped sshd: /ready stays ready naming it, new provisions go to the
--   other two, its instance's job waits (waiting_for names the host) and
--   finishes when it returns;
-- - a drained host gets no new instance; the drain survives a restart;
-- - a host file with an error is refused on SIGHUP with file:line and the
--   old generation keeps serving; `mrprov check` refuses it too;
-- - no room anywhere: 503 no_capacity naming what is missing, nothing created.
local D = require "dokku_harness"
local H = require "harness"
local cjson = require "cjson"

local NAMES = { "h1", "h2", "h3" }
-- a free instance takes 256 MB: 12 fit on each host by memory and by count
local CAPACITY = "capacity = { memory_mb = 3072, cpu = 8, instances = 12 }"

local function host_file(h, extra)
  return D.host_file(h, { CAPACITY .. ",", "labels = { region = \"eu\" },", extra or "" })
end

local function has(list, x)
  for _, v in ipairs(list or {}) do
    if v == x then return true end
  end
  return false
end

describe("a fleet of Dokku hosts #integration", function()
  local hosts, by_name, srv, dir, hosts_dir, env = {}, {}, nil, nil, nil, nil
  local subs = {}

  local function provision(sub, tier)
    return H.request(srv, "POST", "/api/v1/provision", { subscription_id = sub, account_id = "acc_" .. sub,
                                                         tier = tier or "free" })
  end

  local function settled(sub, timeout)
    return H.wait_for(srv, "/api/v1/status/" .. sub, function(x)
      return x.job ~= cjson.null and (x.job.state == "succeeded" or x.job.state == "failed")
    end, timeout or 60)
  end

  local function hosts_view()
    local code, j = H.request(srv, "GET", "/api/v1/hosts")
    assert.are.equal(200, code)
    local out = {}
    for _, v in ipairs(j.hosts) do out[v.name] = v end
    return out
  end

  setup(function()
    for _, n in ipairs(NAMES) do
      local h = D.start()
      hosts[#hosts + 1] = h
      by_name[n] = h
    end
    dir = H.tmpdir()
    hosts_dir = dir .. "/hosts"
    os.execute("mkdir -p " .. hosts_dir)
    for _, n in ipairs(NAMES) do
      H.write_file(hosts_dir .. "/" .. n .. ".lua", host_file(by_name[n]))
    end
    env = { HOSTS_DIR = hosts_dir, DOKKU_HOST_KEY_TOFU = "true", DOKKU_POOL_SIZE = "2",
            LETSENCRYPT_EMAIL = "ops@example.com", HEALTH_TIMEOUT_SECONDS = "0", WORKERS = "4" }
    srv = H.start({ dir = dir, env = env })
  end)

  teardown(function()
    if srv then H.stop(srv) end
    for _, h in ipairs(hosts) do D.stop(h) end
  end)

  it("spreads 30 provisions over the three hosts, none over capacity, each on the host it names", function()
    for i = 1, 30 do
      local sub = ("sub_fleet_%02d"):format(i)
      local code, j = provision(sub)
      assert.are.equal(202, code, cjson.encode(j))
      subs[#subs + 1] = sub
    end
    local count = {}
    for _, sub in ipairs(subs) do
      local v = settled(sub, 120)
      assert.are.equal("succeeded", v.job.state, cjson.encode(v))
      assert.truthy(by_name[v.host], v.host)
      count[v.host] = (count[v.host] or 0) + 1
      -- its apps exist on its own host, and on no other
      for _, n in ipairs(NAMES) do
        local apps = D.state(by_name[n]).global.apps
        assert.are.equal(n == v.host, has(apps, v.app_name), v.app_name .. " on " .. n)
      end
    end
    -- least loaded with room, equal hosts: 10 each
    assert.same({ h1 = 10, h2 = 10, h3 = 10 }, count)
    local view = hosts_view()
    for _, n in ipairs(NAMES) do
      local h = view[n]
      assert.are.equal(10, h.instances)
      assert.are.equal(2560, h.used.memory_mb)
      assert.are.equal(512, h.free.memory_mb)
      assert.are.equal(2, h.free.instances)
      assert.is_true(h.healthy)
      assert.is_false(h.draining)
      assert.are.equal("eu", h.labels.region)
    end
  end)

  it("keeps serving with one host stopped: new instances go elsewhere, its jobs wait and finish when it returns",
    function()
      local down = by_name.h3
      local on_h3
      for _, sub in ipairs(subs) do
        local _, v = H.request(srv, "GET", "/api/v1/status/" .. sub)
        if v.host == "h3" then on_h3 = sub break end
      end
      D.stop_sshd(down)
      local r = H.wait_for(srv, "/ready", function(x)
        for _, why in ipairs(x.reasons or {}) do
          if why:find("Dokku host h3", 1, true) then return true end
        end
      end, 30)
      assert.is_true(r.ready)
      assert.are.equal("unreachable", r.checks.dokku_hosts.h3)
      assert.are.equal("ok", r.checks.dokku_hosts.h1)

      -- a job of an instance on h3 waits for it, naming it
      local code = H.request(srv, "POST", "/api/v1/instances/" .. on_h3 .. "/restart")
      assert.are.equal(202, code)
      H.wait_for(srv, "/api/v1/status/" .. on_h3, function(x)
        return x.job ~= cjson.null and type(x.job.waiting_for) == "string"
          and x.job.waiting_for:find("Dokku host h3 is unreachable", 1, true) ~= nil
      end, 30)

      -- meanwhile new instances go to the other two, and finish
      for i = 1, 2 do
        local sub = "sub_fleet_down_" .. i
        local c, j = provision(sub)
        assert.are.equal(202, c, cjson.encode(j))
        local v = settled(sub)
        assert.are.equal("succeeded", v.job.state)
        assert.are_not.equal("h3", v.host)
        subs[#subs + 1] = sub
      end
      local _, still = H.request(srv, "GET", "/api/v1/status/" .. on_h3)
      assert.are_not.equal("succeeded", still.job.state)

      D.start_sshd(down)
      local v = H.wait_for(srv, "/api/v1/status/" .. on_h3, function(x)
        return x.job ~= cjson.null and x.job.state == "succeeded"
      end, 60)
      assert.are.equal("running", v.status)
      assert.are.equal("h3", v.host) -- never moved
    end)

  it("gives a drained host no new instance, and keeps the drain across a restart", function()
    local code, j = H.request(srv, "POST", "/api/v1/hosts/h1/drain")
    assert.are.equal(200, code, cjson.encode(j))
    assert.is_true(j.draining)
    assert.are.equal(404, (H.request(srv, "POST", "/api/v1/hosts/nope/drain")))
    H.stop(srv)
    srv = H.start({ dir = dir, env = env })
    assert.is_true(hosts_view().h1.draining)
    for i = 1, 2 do
      local sub = "sub_fleet_drain_" .. i
      local c = provision(sub)
      assert.are.equal(202, c)
      local v = settled(sub)
      assert.are.equal("succeeded", v.job.state)
      assert.are_not.equal("h1", v.host)
      subs[#subs + 1] = sub
    end
    code, j = H.request(srv, "POST", "/api/v1/hosts/h1/undrain")
    assert.are.equal(200, code)
    assert.is_false(j.draining)
  end)

  it("refuses a host file with an error on SIGHUP with file:line, the old generation serving", function()
    H.write_file(hosts_dir .. "/h4.lua", "return {\n  host = \"127.0.0.1\",\n  port = \"twenty-two\",\n}\n")
    local code, out = H.run({ "check" }, { HOSTS_DIR = hosts_dir, TIERS_DIR = H.root .. "/tiers",
                                           LUA_DIR = H.root .. "/lua" })
    assert.are.equal(1, code, out)
    os.execute("kill -HUP " .. srv.pid)
    local r = H.wait_for(srv, "/ready", function(x) return x.checks.config_error ~= nil end, 30)
    assert.matches("h4%.lua:3: port: expected an integer 1%.%.65535", r.checks.config_error)
    assert.are.equal(1, r.checks.config_generation)
    local view = hosts_view()
    assert.is_nil(view.h4)
    local c = provision("sub_fleet_after_hup")
    assert.are.equal(202, c)
    assert.are.equal("succeeded", settled("sub_fleet_after_hup").job.state)
    os.remove(hosts_dir .. "/h4.lua")
  end)

  it("answers 503 no_capacity naming what is missing, and creates nothing", function()
    local before = {}
    for _, n in ipairs(NAMES) do before[n] = #D.log(by_name[n]) end
    -- an enterprise instance takes 8192 MB: no host has that much
    local code, j = provision("sub_fleet_big", "enterprise")
    assert.are.equal(503, code, cjson.encode(j))
    assert.are.equal("no_capacity", j.error.code)
    for _, n in ipairs(NAMES) do
      assert.matches(n .. ": memory_mb: 8192 needed", j.error.message, 1, true)
    end
    assert.are.equal(404, (H.request(srv, "GET", "/api/v1/status/sub_fleet_big")))
    local rows = H.sqlite_rows(dir .. "/data/mrprov.db", "SELECT id FROM jobs WHERE subscription_id = 'sub_fleet_big'")
    assert.are.equal(0, #rows)
    for _, n in ipairs(NAMES) do
      local sent = {}
      for i, e in ipairs(D.log(by_name[n])) do
        if i > before[n] and e.mutating then sent[#sent + 1] = table.concat(e.argv, " ") end
      end
      assert.same({}, sent)
    end
  end)
end)
