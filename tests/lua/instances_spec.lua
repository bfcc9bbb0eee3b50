-- lua/instances.lua and lua/store_error.lua on the real store binding over
-- an in-memory SQLite (tests/lua/memstore.lua).
local memstore = require "memstore"
local store = memstore.install()

local describe_store = memstore.describer(describe, pending)

describe_store("instances, on the real store", function()
  local instances, json, store_error

  setup(function()
    instances = require "instances"
    json = require "json"
    store_error = require "store_error"
  end)
  before_each(function()
    memstore.reset()
  end)

  local function inst(sub, app, extra)
    local i = { subscription_id = sub, account_id = "acc_1", app_name = app, tier = "free", status = "running",
                spec = { custom_domain = "x.example.org" }, applied = { ["app:" .. app] = { exists = true } },
                urls = { frontend = "https://" .. app .. ".mindroom.chat" }, limits = { memory_mb = 512 } }
    for k, v in pairs(extra or {}) do
      i[k] = v
    end
    return i
  end

  it("saves an instance and reads it back with its JSON columns decoded", function()
    instances.save(inst("sub_1", "mr-sub1-aaaa"))
    local got = instances.get("sub_1")
    assert.are.equal("mr-sub1-aaaa", got.app_name)
    assert.are.same({ custom_domain = "x.example.org" }, got.spec)
    assert.are.same({ ["app:mr-sub1-aaaa"] = { exists = true } }, got.applied)
    assert.are.equal(false, got.dry_run)
    assert.is_string(got.created_at)
    assert.is_true(instances.app_taken("mr-sub1-aaaa"))
    assert.is_false(instances.app_taken("mr-other"))
    assert.is_nil(instances.get("sub_none"))
    -- the summary leaves the documents out
    local sum = instances.get_summary("sub_1")
    assert.are.same({}, sum.spec)
    assert.are.equal("running", sum.status)
  end)

  it("shows last_health_check from health_checked_at (the readiness check's last run), else null", function()
    instances.save(inst("sub_1", "mr-sub1-aaaa"))
    assert.are.equal(json.null, instances.status_view(instances.get_summary("sub_1")).last_health_check)
    store.exec("UPDATE instances SET health_checked_at = '2025-01-02T03:04:05.000Z'")
    local v = instances.status_view(instances.get_summary("sub_1"))
    assert.are.equal("2025-01-02T03:04:05.000Z", v.last_health_check)
    assert.are.equal("mr-sub1-aaaa.mindroom.chat", v.subdomain)
    assert.are.equal(512, v.limits.memory_mb)
  end)

  it("replaces a saved instance in place (an upsert), keeping created_at", function()
    local i = inst("sub_1", "mr-sub1-aaaa")
    instances.save(i)
    local created = instances.get("sub_1").created_at
    i.status, i.created_at = "failed", nil
    i.created_at = created
    instances.save(i)
    assert.are.equal("failed", instances.get("sub_1").status)
    assert.are.equal(1, #store.query("SELECT * FROM instances"))
  end)

  it("records the applied model alone", function()
    instances.save(inst("sub_1", "mr-sub1-aaaa"))
    store.tx(function() instances.save_applied("sub_1", { ["app:x"] = { exists = true } }) end)
    assert.are.same({ ["app:x"] = { exists = true } }, instances.get("sub_1").applied)
  end)

  it("claims domains once: the same name, a parent or a subdomain held by another instance is refused", function()
    assert.is_true(store.tx(function() return instances.claim_domains("sub_1", { "a.example.org" }) end))
    -- the same subscription may claim its own again
    assert.is_true(store.tx(function() return instances.claim_domains("sub_1", { "a.example.org" }) end))
    for _, d in ipairs({ "a.example.org", "example.org", "x.a.example.org" }) do
      local ok, why = store.tx(function() return instances.claim_domains("sub_2", { d }) end)
      assert.is_nil(ok, d)
      assert.matches("served by another instance", why)
    end
    -- a refused list claims nothing, not even its free names
    local ok = store.tx(function() return instances.claim_domains("sub_2", { "b.example.org", "a.example.org" }) end)
    assert.is_nil(ok)
    assert.are.equal(0, #store.query("SELECT * FROM domains WHERE subscription_id = 'sub_2'"))
    -- a sibling is free
    assert.is_true(store.tx(function() return instances.claim_domains("sub_2", { "b.example.org" }) end))
  end)

  it("gives up the claims an instance no longer serves", function()
    store.tx(function() instances.claim_domains("sub_1", { "a.example.org", "b.example.org" }) end)
    store.tx(function() instances.keep_domains("sub_1", { "b.example.org" }) end)
    local rows = store.query("SELECT domain FROM domains ORDER BY domain")
    assert.are.same({ { domain = "b.example.org" } }, rows)
    assert.is_true(store.tx(function() return instances.claim_domains("sub_2", { "a.example.org" }) end))
  end)

  it("creates jobs and updates their columns, JSON documents encoded and json.null as NULL", function()
    local id = instances.create_job("sub_1", "provision", { tier = "free" })
    assert.matches("^job_[0-9a-f]+$", id)
    instances.update_job(id, { state = "running", result = { urls = { "u" } }, error = "boom" })
    local j = instances.job(id)
    assert.are.equal("running", j.state)
    assert.are.same({ tier = "free" }, j.request)
    assert.are.same({ urls = { "u" } }, j.result)
    instances.update_job(id, { error = json.null })
    assert.is_nil(instances.job(id).error)
    assert.are.equal(id, instances.latest_job("sub_1").id)
    assert.are.equal(id, instances.latest_job_summary("sub_1").id)
    assert.has_error(function() instances.update_job(id, { ["state; DROP TABLE jobs"] = 1 }) end)
  end)

  it("records a webhook delivery id once", function()
    assert.is_true(instances.first_delivery("wh_1", "2026-01-02T00:00:00.000Z", "2026-01-01T00:00:00.000Z"))
    assert.is_false(instances.first_delivery("wh_1", "2026-01-02T00:00:01.000Z", "2026-01-01T00:00:00.000Z"))
    -- ids older than the cut are forgotten by a prune
    assert.is_true(instances.first_delivery("wh_2", "2026-01-05T00:00:00.000Z", "2026-01-04T00:00:00.000Z"))
    assert.is_true(instances.first_delivery("wh_1", "2026-01-05T00:00:01.000Z", "2026-01-04T00:00:00.000Z"))
  end)

  it("prunes expired delivery ids when asked, a batch at a time, oldest first", function()
    local function ids()
      local out = {}
      for _, r in ipairs(assert(store.query("SELECT id FROM webhook_ids ORDER BY rowid"))) do
        out[#out + 1] = r.id
      end
      return out
    end
    local batch = instances.PRUNE_BATCH
    store.tx(function()
      for i = 1, batch + 5 do
        assert(store.exec("INSERT INTO webhook_ids (id, received_at) VALUES (?, ?)", ("old_%05d"):format(i),
          "2026-01-01T00:00:00.000Z"))
      end
    end)
    local cut = "2026-01-02T00:00:00.000Z"
    -- without a cutoff nothing goes
    assert.is_true(instances.first_delivery("new_1", "2026-01-03T00:00:00.000Z"))
    assert.are.equal(batch + 6, #ids())
    -- with one, the first PRUNE_BATCH rows that are past it: the oldest
    assert.is_true(instances.first_delivery("new_2", "2026-01-03T00:00:01.000Z", cut))
    local left = ids()
    assert.are.same({ "old_" .. ("%05d"):format(batch + 1), "new_2" }, { left[1], left[#left] })
    assert.are.equal(7, #left)
    -- the next takes the rest, and no fresh id
    assert.is_true(instances.first_delivery("new_3", "2026-01-03T00:00:02.000Z", cut))
    assert.are.same({ "new_1", "new_2", "new_3" }, ids())
    -- the DELETE finds its rows by rowid (the batch's subquery stops after
    -- PRUNE_BATCH rows); a plain `received_at < ?` would scan the table
    local plan = assert(store.query("EXPLAIN QUERY PLAN " .. instances.PRUNE_WEBHOOK_IDS, cut))
    assert.matches("^SEARCH webhook_ids USING INTEGER PRIMARY KEY", plan[1].detail)
  end)

  it("counts running instances by tier", function()
    instances.save(inst("sub_1", "mr-a", { tier = "free" }))
    instances.save(inst("sub_2", "mr-b", { tier = "free" }))
    instances.save(inst("sub_3", "mr-c", { tier = "starter" }))
    instances.save(inst("sub_4", "mr-d", { tier = "starter", status = "failed" }))
    assert.are.same({ free = 2, starter = 1 }, instances.active_by_tier())
  end)

  it("shows a status view without secrets or internal state", function()
    instances.save(inst("sub_1", "mr-a"))
    local v = instances.status_view(instances.get_summary("sub_1"), nil)
    assert.are.equal(json.null, v.job)
    assert.is_nil(v.applied)
    assert.is_nil(v.spec)
    assert.are.equal("https://mr-a.mindroom.chat", v.urls.frontend)
    assert.are.equal(json.null, v.urls.matrix)
  end)

  describe("store errors", function()
    it("raise the binding's error object with SQLite's code (a constraint is not a full disk)", function()
      instances.save(inst("sub_1", "mr-a"))
      local ok, err = pcall(instances.save, inst("sub_2", "mr-a")) -- app_name is UNIQUE
      assert.is_false(ok)
      assert.are.equal(19, err.code & 0xff) -- SQLITE_CONSTRAINT
      assert.matches("^store: UNIQUE constraint failed", tostring(err))
      assert.is_false(store_error.unwritable(err))
    end)

    it("tell a full disk by its code, not by its text", function()
      store.exec("PRAGMA max_page_count = " .. store.query("PRAGMA page_count")[1].page_count)
      local big = { spec = { blob = string.rep("x", 200000) } }
      local ok, err = pcall(store.tx, function() instances.save(inst("sub_1", "mr-a", big)) end)
      assert.is_false(ok)
      assert.are.equal(13, err.code & 0xff) -- SQLITE_FULL
      assert.is_true(store_error.unwritable(err))
      -- the same words in any other error (a Dokku answer, say) are not the store's
      assert.is_false(store_error.unwritable({ message = "database or disk is full" }))
      assert.is_false(store_error.unwritable("database or disk is full"))
      assert.is_true(store_error.unwritable(store.error("anything", 10 | (13 << 8)))) -- SQLITE_IOERR_FSYNC-like
      assert.is_false(store_error.unwritable(store.error("store is not open", -1)))
    end)
  end)
end)
