-- Fleet rollouts (issue 18) over two Dokku hosts with different labels,
-- through the real binary, two real sshd "hosts" on loopback with the Dokku
-- simulator as forced command (host files in HOSTS_DIR, no DOKKU_HOST) and
-- the loopback health server standing in for MindRoom's /api/ready:
-- - selector.labels takes the instances whose host carries the labels,
--   existing ones and (apply_to_new) new ones alike; the others are not
--   touched;
-- - an env rollout sets the key on every selected MindRoom app (over a
--   customer's own value of it), leaves the unselected ones alone and
--   never logs the value; rollback removes the key again where it was not
--   set, and puts the customer's value back where it was.
-- Bounds are seconds; nothing asserts how fast anything was.
local D = require "dokku_harness"
local H = require "harness"
local cjson = require "cjson"

local V2 = "ghcr.io/mindroom-ai/mindroom:v2026.12.1"
local NAMES = { "eu1", "us1" }
local LABELS = { eu1 = 'labels = { region = "eu", gpu = true },', us1 = 'labels = { region = "us" },' }

local function rollout_done(srv, id, states, timeout)
  local want = {}
  for _, s in ipairs(states) do want[s] = true end
  return H.wait_for(srv, "/api/v1/rollouts/" .. id, function(r)
    if not want[r.state] then return false end
    for _, e in ipairs(r.instances) do
      if e.state == "updating" or e.state == "checking" or e.state == "reverting" then return false end
    end
    return true
  end, timeout or 60)
end

describe("rollouts over hosts with labels #integration", function()
  local by_name, srv, health = {}, nil, nil
  local placed = {} -- subscription id -> { host, app }

  local function provision(sub)
    local code, j = H.request(srv, "POST", "/api/v1/provision", { subscription_id = sub, account_id = "acc_rf",
                                                                  tier = "free" })
    assert.are.equal(202, code, cjson.encode(j))
    local v = H.wait_for(srv, "/api/v1/status/" .. sub, function(x) return x.status == "running" end, 120)
    placed[sub] = { host = v.host, app = j.app_name }
    return v
  end

  -- The image the instance's MindRoom app was last deployed from, on its host.
  local function deployed(sub)
    local p = placed[sub]
    local a = D.state(by_name[p.host]).apps[p.app]
    return a and a.git_context and a.git_context.from or nil
  end

  setup(function()
    local dir = H.tmpdir()
    local hosts_dir = dir .. "/hosts"
    os.execute("mkdir -p " .. hosts_dir)
    for _, n in ipairs(NAMES) do
      by_name[n] = D.start()
      H.write_file(hosts_dir .. "/" .. n .. ".lua", D.host_file(by_name[n], { LABELS[n] }))
    end
    health = H.health_server("ok")
    srv = H.start({ dir = dir, env = {
      HOSTS_DIR = hosts_dir, DOKKU_HOST_KEY_TOFU = "true", DOKKU_POOL_SIZE = "2",
      LETSENCRYPT_EMAIL = "ops@example.com", PROFILE = "mindroom", WORKERS = "4",
      HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. health.port .. "/{app}{path}", HEALTH_TIMEOUT_SECONDS = "2",
      HEALTH_REQUEST_TIMEOUT = "1" } })
    -- placement without declared capacity: fewest instances, then by name
    for i = 1, 4 do
      provision(("sub_rf%02d"):format(i))
    end
  end)

  teardown(function()
    if health then health.stop() end
    H.cleanup()
    D.stop_all()
  end)

  it("selects by the labels of the instance's host, existing and new instances alike", function()
    local on = { eu1 = {}, us1 = {} }
    for sub, p in pairs(placed) do
      table.insert(on[p.host], sub)
    end
    assert.are.equal(2, #on.eu1, cjson.encode(placed))
    assert.are.equal(2, #on.us1, cjson.encode(placed))
    local default_image = deployed(on.us1[1])
    assert.is_string(default_image)

    -- labels nothing carries: refused, nothing started
    local code, j = H.request(srv, "POST", "/api/v1/rollouts",
      { image = V2, selector = { labels = { region = "ap" } } })
    assert.are.equal(422, code, cjson.encode(j))
    assert.matches("matches no instance", j.error.message)
    code, j = H.request(srv, "POST", "/api/v1/rollouts", { image = V2, selector = { labels = { Region = "eu" } } })
    assert.are.equal(422, code, cjson.encode(j))
    assert.are.equal("selector.labels", j.error.field)

    local r
    code, r = H.request(srv, "POST", "/api/v1/rollouts",
      { image = V2, selector = { labels = { region = "eu", gpu = true } }, apply_to_new = true, parallel = 2 })
    assert.are.equal(201, code, cjson.encode(r))
    assert.are.equal(2, r.total)
    -- new instances while it runs: on eu1 the target, on us1 the setting
    local v5, v6 = provision("sub_rf05"), provision("sub_rf06")
    assert.are_not.equal(v5.host, v6.host)
    r = rollout_done(srv, r.id, { "finished" }, 90)
    assert.are.equal(2, r.counts.done, cjson.encode(r.counts))
    for _, e in ipairs(r.instances) do
      assert.are.equal("eu1", placed[e.subscription_id].host)
    end
    for sub, p in pairs(placed) do
      local want = p.host == "eu1" and V2 or default_image
      assert.are.equal(want, deployed(sub), sub .. " on " .. p.host)
      local _, view = H.request(srv, "GET", "/api/v1/status/" .. sub)
      assert.are.equal(want, view.image, sub)
    end
  end)

  it("sets env on the selected apps and rollback removes it again; the others are untouched", function()
    local KEY, VALUE = "X_ROLLOUT_FLAG", "flag-value-rollout-7"
    local function env_of(sub)
      local p = placed[sub]
      return D.state(by_name[p.host]).apps[p.app].env
    end
    local us, eu = {}, {}
    for sub, p in pairs(placed) do
      table.insert(p.host == "us1" and us or eu, sub)
    end
    table.sort(us)
    assert.are.equal(3, #us, cjson.encode(placed))
    -- one customer has a value of their own for the key
    local own = us[1]
    local uc, u = H.request(srv, "PUT", "/api/v1/update", { subscription_id = own, app_name = placed[own].app,
      config_updates = { [KEY] = "customer-own-value" } }, { Prefer = "wait=60" })
    assert.are.equal(200, uc, cjson.encode(u))
    assert.are.equal("customer-own-value", env_of(own)[KEY])

    local code, r = H.request(srv, "POST", "/api/v1/rollouts",
      { env = { [KEY] = VALUE }, selector = { labels = { region = "us" } }, waves = { 1, "100%" }, parallel = 2 })
    assert.are.equal(201, code, cjson.encode(r))
    assert.are.equal(3, r.total)
    assert.are.same({ [KEY] = "[set]" }, r.env)
    r = rollout_done(srv, r.id, { "finished" }, 90)
    assert.are.equal(3, r.counts.done, cjson.encode(r.counts))
    for _, sub in ipairs(us) do
      assert.are.equal(VALUE, env_of(sub)[KEY], sub)
      local _, view, raw = H.request(srv, "GET", "/api/v1/status/" .. sub)
      assert.are.equal("running", view.status)
      -- the status view names the key a rollout set, never its value
      assert.are.same({ KEY }, view.env_override_keys)
      assert.is_falsy(raw:find(VALUE, 1, true))
    end
    for _, sub in ipairs(eu) do
      assert.is_nil(env_of(sub)[KEY], sub)
      local _, view = H.request(srv, "GET", "/api/v1/status/" .. sub)
      assert.are.same({}, view.env_override_keys)
    end
    local _, shown = H.request(srv, "GET", "/api/v1/rollouts/" .. r.id)
    assert.is_falsy(cjson.encode(shown):find(VALUE, 1, true))

    local ac, a = H.request(srv, "POST", "/api/v1/rollouts/" .. r.id .. "/rollback")
    assert.are.equal(200, ac, cjson.encode(a))
    r = rollout_done(srv, r.id, { "rolled_back" }, 90)
    assert.are.equal(3, r.counts.rolled_back, cjson.encode(r.counts))
    for _, sub in ipairs(us) do
      if sub == own then
        assert.are.equal("customer-own-value", env_of(sub)[KEY])
      else
        assert.is_nil(env_of(sub)[KEY], sub)
      end
    end
    for _, sub in ipairs(eu) do
      assert.is_nil(env_of(sub)[KEY], sub)
    end
    for _, sub in ipairs(us) do
      local _, view = H.request(srv, "GET", "/api/v1/status/" .. sub)
      assert.are.same({}, view.env_override_keys, sub)
    end
    assert.is_falsy(H.log_text(srv):find(VALUE, 1, true), "the value is in the log")
  end)
end)
