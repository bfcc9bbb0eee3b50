-- lua/subscriptions_sync.lua: the subscriptions table (a fake PostgREST
-- reader with keyset paging) against the instances of the real store binding
-- over an in-memory SQLite, through the real request functions (or fakes
-- where a spec needs an answer they never give) and a fake lifecycle.
local memstore = require "memstore"
local store = memstore.install()
local cjson = require "cjson"

local describe_store = memstore.describer(describe, pending)

-- A PostgREST stand-in over rows: honours limit and id=gt.<v> (percent-
-- decoded), orders by id (byte order, as PostgreSQL's C collation);
-- records every query.
local function table_reader(rows)
  local r = { queries = {} }
  local function id_of(row) return type(row) == "table" and row.id or nil end
  local sorted = {}
  for _, row in ipairs(rows) do sorted[#sorted + 1] = row end
  table.sort(sorted, function(a, b) return tostring(id_of(a)) < tostring(id_of(b)) end)
  r.read = function(tbl, q)
    r.queries[#r.queries + 1] = q
    assert.are.equal("subscriptions", tbl)
    local limit = tonumber(q:match("[?&]?limit=(%d+)"))
    local gt = q:match("&id=gt%.([^&]*)")
    if gt then gt = gt:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end) end
    local out = {}
    for _, row in ipairs(sorted) do
      local id = id_of(row)
      if #out < limit and (gt == nil or tostring(id) > gt) then out[#out + 1] = row end
    end
    return 200, #out == 0 and "[]" or cjson.encode(out), false
  end
  return r
end

local function row(id, status, tier, account)
  return { id = id, status = status, tier = tier or "free", account_id = account or cjson.null }
end

describe_store("subscriptions_sync", function()
  local sync, requests, instances, lifecycle_calls

  setup(function()
    memstore.dokku("dry-run")
    for _, m in ipairs({ "executor", "plan", "requests", "webhooks", "subscriptions_sync" }) do
      package.loaded[m] = nil
    end
    sync, requests, instances = require "subscriptions_sync", require "requests", require "instances"
  end)

  before_each(function()
    memstore.reset()
    memstore.boot()
    sync.PAGE_SIZE, sync.MAX_PAGES = 500, 200
    sync.requests = nil
    lifecycle_calls = {}
    -- the lifecycle helper's interface: request(subscription_id, action, opts) → status, body
    sync.lifecycle = {
      request = function(id, action, opts)
        lifecycle_calls[#lifecycle_calls + 1] = { id = id, action = action, opts = opts }
        local inst = instances.get(id)
        inst.status = action == "suspend" and "suspended" or "running"
        instances.save(inst)
        return 202, cjson.encode({ status = inst.status })
      end,
    }
  end)

  -- An instance of `id` on `tier`, left in `status`.
  local function instance(id, tier, status)
    local vr = require "validate_request"
    local cfg = require("generation").current()
    local r = assert(vr.provision_request({ subscription_id = id, tier = tier }, cfg.tiers))
    local code = requests.provision_validated(r, { from_webhook = true }, cfg)
    assert.are.equal(202, code)
    local inst = instances.get(id)
    inst.status = status or "running"
    instances.save(inst)
    store.exec("UPDATE jobs SET state = 'succeeded' WHERE subscription_id = ?", id)
    return inst
  end

  local function jobs_of(id)
    return store.query("SELECT operation, request FROM jobs WHERE subscription_id = ? ORDER BY rowid", id)
  end

  local function run_with(rows, opts)
    local reader = table_reader(rows)
    sync.reader = reader.read
    return sync.run({}, opts), reader
  end

  it("converges on every status: provision, update, resume, suspend, deprovision with backup", function()
    instance("sub_upd", "free")
    instance("sub_same", "starter")
    instance("sub_susp", "free")
    instance("sub_resume", "free", "suspended")
    instance("sub_cancel", "free")
    instance("sub_gone", "free", "deprovisioned")
    instance("sub_busy", "free", "provisioning")
    instance("sub_failed", "free", "failed")
    instance("sub_stopped", "free", "stopped")
    local res = run_with({
      row("sub_new", "active", "starter", "acc_1"),
      row("sub_trial", "trialing", "free"),
      row("sub_upd", "active", "starter"),
      row("sub_same", "active", "starter"),
      row("sub_susp", "past_due"),
      row("sub_resume", "active", "starter"),
      row("sub_cancel", "cancelled"),
      row("sub_gone", "canceled"),
      row("sub_nothing", "cancelled"),
      row("sub_unpaid_none", "unpaid"),
      row("sub_busy", "active", "starter"),
      row("sub_failed", "active"),
      row("sub_stopped", "active"),
    })
    assert.are.same({}, res.errors)
    assert.are.same({}, res.skipped)
    assert.are.equal(13, res.read)
    assert.is_true(res.complete)
    assert.are.equal(2, res.provisioned)
    assert.are.equal(1, res.updated)
    assert.are.equal(1, res.suspended)
    assert.are.equal(1, res.resumed)
    assert.are.equal(1, res.deprovisioned)
    assert.are.equal(1, res.busy)
    assert.are.equal(1, res.failed)
    -- sub_same, sub_gone, sub_nothing, sub_unpaid_none, sub_stopped
    assert.are.equal(5, res.unchanged)
    -- the webhook path's requests, with its jobs
    assert.are.equal("provisioning", instances.get("sub_new").status)
    assert.are.equal("starter", instances.get("sub_new").tier)
    assert.are.equal("acc_1", instances.get("sub_new").account_id)
    assert.are.equal("provisioning", instances.get("sub_trial").status)
    assert.are.equal("starter", instances.get("sub_upd").tier)
    assert.are.equal("updating", instances.get("sub_upd").status)
    assert.are.equal("deprovisioning", instances.get("sub_cancel").status)
    local jobs = jobs_of("sub_cancel")
    assert.are.equal("deprovision", jobs[#jobs].operation)
    assert.is_true(cjson.decode(jobs[#jobs].request).backup_data)
    assert.are.equal(1, #jobs_of("sub_same"), "an unchanged instance gets no job")
    assert.are.equal("provisioning", instances.get("sub_busy").status)
    assert.are.equal("free", instances.get("sub_busy").tier, "a busy instance is left to its job")
    assert.is_nil(instances.get("sub_nothing"))
    assert.is_nil(instances.get("sub_unpaid_none"), "a past-due subscription is not provisioned")
    -- suspend and resume through the lifecycle; the resume carries the row's tier
    table.sort(lifecycle_calls, function(a, b) return a.id < b.id end)
    assert.are.equal(2, #lifecycle_calls)
    assert.are.same({ id = "sub_resume", action = "resume", opts = { from_sweep = true, tier = "starter" } },
      lifecycle_calls[1])
    assert.are.same({ id = "sub_susp", action = "suspend", opts = { from_sweep = true } }, lifecycle_calls[2])
  end)

  it("is idempotent: a second run over the same rows starts nothing", function()
    local rows = { row("sub_a", "active", "free"), row("sub_b", "cancelled") }
    instance("sub_b", "free")
    local first = run_with(rows)
    assert.are.equal(1, first.provisioned)
    assert.are.equal(1, first.deprovisioned)
    local n = #store.query("SELECT 1 AS x FROM jobs")
    local second = run_with(rows)
    assert.are.equal(0, second.provisioned + second.deprovisioned + second.updated)
    assert.are.equal(2, second.busy + second.unchanged)
    assert.are.equal(n, #store.query("SELECT 1 AS x FROM jobs"))
  end)

  it("deprovisions at most RECONCILE_MAX_DESTRUCTIVE per run and reports the rest, in id order", function()
    local rows = {}
    for i = 1, 5 do
      instance("sub_c" .. i, "free")
      rows[#rows + 1] = row("sub_c" .. i, "cancelled")
    end
    rows[#rows + 1] = row("sub_new", "active")
    local res = run_with(rows)
    assert.are.equal(3, res.max_destructive, "the default (src/config.c) when the settings carry none")
    assert.are.equal(3, res.deprovisioned)
    assert.are.same({ "sub_c4", "sub_c5" }, res.deferred_destructive)
    assert.are.equal(2, res.deferred_total)
    assert.are.equal("running", instances.get("sub_c4").status)
    assert.are.equal("running", instances.get("sub_c5").status)
    assert.are.equal("deprovisioning", instances.get("sub_c3").status)
    -- the guard holds back only deprovisions
    assert.are.equal(1, res.provisioned)
    -- the setting, and 0 = never
    local cfg = require("generation").current()
    cfg.settings.reconcile_max_destructive = 0
    local res0 = run_with(rows)
    cfg.settings.reconcile_max_destructive = nil
    assert.are.equal(0, res0.deprovisioned)
    assert.are.same({ "sub_c4", "sub_c5" }, res0.deferred_destructive)
  end)

  it("reports and skips a row it cannot read, never guessing, never echoing a hostile value", function()
    instance("sub_keep", "free")
    local long = string.rep("x", 500)
    local res = run_with({
      row("sub_s1", "Active"),
      row("sub_s2", "incomplete"),
      row("sub_s3", "active", "gold"),
      row("sub_s4", "active", cjson.null),
      { status = "active", tier = "free" },
      row("sub;drop table\n", "active"),
      row(long, "cancelled"),
      { id = 42, status = "active", tier = "free" },
      row("sub_s5", "active", "free", "acc with space"),
      row("sub_s6", cjson.null),
      row("sub_keep", "cancelled\nor not"),
      row("sub_s7", "active", { "free" }),
    })
    assert.are.equal(0, res.provisioned + res.deprovisioned + res.updated + res.suspended + res.resumed)
    assert.are.equal(12, res.skipped_total)
    local reasons = {}
    for _, s in ipairs(res.skipped) do reasons[tostring(s.id)] = s.reason end
    assert.matches("unknown status Active", reasons.sub_s1, 1, true)
    assert.matches("unknown status incomplete", reasons.sub_s2, 1, true)
    assert.matches("unknown tier gold", reasons.sub_s3, 1, true)
    assert.matches("tier is missing", reasons.sub_s4, 1, true)
    assert.matches("no id", reasons["(null)"], 1, true)
    assert.matches("account_id must be", reasons.sub_s5, 1, true)
    assert.matches("status is missing", reasons.sub_s6, 1, true)
    assert.matches("unknown status %(", reasons.sub_keep)
    assert.matches("unknown tier %(table%)", reasons.sub_s7)
    assert.matches("id must be", reasons["(number)"], 1, true)
    assert.matches("id must be", reasons["(15 bytes, not shown)"], 1, true)
    assert.matches("id must be", reasons["(500 bytes, not shown)"], 1, true)
    local text = cjson.encode(res)
    assert.is_nil(text:find("drop table", 1, true))
    assert.is_nil(text:find("xxxxxxxxxx", 1, true))
    assert.is_nil(text:find("or not", 1, true))
    assert.are.equal("running", instances.get("sub_keep").status)
    assert.are.equal(0, #store.query("SELECT 1 AS x FROM instances WHERE subscription_id <> 'sub_keep'"))
  end)

  it("keeps at most LIST_MAX entries of a list, and counts them all", function()
    local rows = {}
    for i = 1, 30 do rows[i] = row(("sub_%02d"):format(i), "bogus") end
    sync.LIST_MAX = 10
    local res = run_with(rows)
    sync.LIST_MAX = 100
    assert.are.equal(30, res.skipped_total)
    assert.are.equal(10, #res.skipped)
  end)

  it("pages by id (keyset), percent-encodes the cursor and reads every row once", function()
    sync.PAGE_SIZE = 2
    local rows = {}
    for i = 1, 5 do rows[i] = row(("sub_%d"):format(i), "active") end
    local res, reader = run_with(rows)
    assert.are.equal(5, res.read)
    assert.are.equal(5, res.provisioned)
    assert.are.equal(3, res.pages)
    assert.is_true(res.complete)
    assert.are.equal("select=id,account_id,tier,status&order=id.asc&limit=2", reader.queries[1])
    assert.are.equal("select=id,account_id,tier,status&order=id.asc&limit=2&id=gt.sub_2", reader.queries[2])
    assert.are.equal("select=id,account_id,tier,status&order=id.asc&limit=2&id=gt.sub_4", reader.queries[3])
    -- a hostile id at the end of a page is a cursor like any other, encoded
    local _, r2 = run_with({ row("0a", "bogus"), row("a&b=c,d\n", "active"), row("zz", "active") })
    assert.are.equal("select=id,account_id,tier,status&order=id.asc&limit=2&id=gt.a%26b%3Dc%2Cd%0A", r2.queries[2])
    -- a page that ends on a row the same as the last one read counts once
    local dup = run_with({ row("sub_1", "active"), row("sub_1", "active"), row("sub_2", "active") })
    assert.matches("read twice", dup.skipped[1].reason, 1, true)
  end)

  it("bounds the read: max pages, and an id too long to page past", function()
    sync.PAGE_SIZE, sync.MAX_PAGES = 1, 2
    local res = run_with({ row("sub_1", "active"), row("sub_2", "active"), row("sub_3", "active") })
    assert.are.equal(2, res.read)
    assert.is_false(res.complete)
    assert.matches("more than 2 rows", res.errors[1].message, 1, true)
    assert.are.equal(2, res.provisioned, "what was read is still acted on")
    sync.MAX_PAGES = 10
    local long = string.rep("y", 1100)
    local r2 = run_with({ row(long, "active"), row("zz", "active") })
    assert.matches("cannot page past the id (1100 bytes, not shown)", r2.errors[1].message, 1, true)
    assert.is_false(r2.complete)
  end)

  it("reports a failed read in errors and acts on the pages read before it", function()
    sync.PAGE_SIZE = 1
    local calls = 0
    sync.reader = function()
      calls = calls + 1
      if calls == 1 then return 200, cjson.encode({ row("sub_1", "active") }), false end
      return 503, '{"code":"PGRST000","message":"Could not connect with the database","details":null}', false
    end
    local res = sync.run({})
    assert.are.equal(1, res.provisioned)
    assert.is_false(res.complete)
    assert.matches("HTTP 503: PGRST000: Could not connect with the database", res.errors[1].message, 1, true)
    for _, case in ipairs({
      { { nil, "GET http://127.0.0.1:1/rest/v1/subscriptions?...: Couldn't connect to server" }, "Couldn't connect" },
      { { 200, "[]", true }, "over the size" },
      { { 200, '{"a":1}', false }, "not a JSON array" },
      { { 200, "nope", false }, "not a JSON array" },
      { { 404, "<html>x</html>", false }, "HTTP 404: <html>x</html>" },
    }) do
      sync.reader = function() return table.unpack(case[1], 1, 3) end
      local r = sync.run({})
      assert.are.equal(0, r.read)
      assert.are.equal(1, r.errors_total)
      assert.matches(case[2], r.errors[1].message, 1, true)
    end
  end)

  it("plans without acting in a dry run", function()
    instance("sub_c", "free")
    local res = run_with({ row("sub_new", "active"), row("sub_c", "cancelled") }, { dry_run = true })
    assert.is_true(res.dry_run)
    assert.are.equal(1, res.provisioned)
    assert.are.equal(1, res.deprovisioned)
    assert.are.same({ { id = "sub_c", action = "deprovision" }, { id = "sub_new", action = "provision" } },
      res.planned)
    assert.is_nil(instances.get("sub_new"))
    assert.are.equal("running", instances.get("sub_c").status)
    -- the sweep's report may carry the dry run
    sync.reader = table_reader({ row("sub_new", "active") }).read
    local r2 = sync.run({ dry_run = true })
    assert.is_true(r2.dry_run)
    assert.is_nil(instances.get("sub_new"))
  end)

  it("reports a refused or failing request as an error and goes on with the next row", function()
    sync.requests = {
      provision_validated = function(r)
        if r.subscription_id == "sub_1" then
          return 409, cjson.encode({ error = { code = "conflict", message = "being deprovisioned" } })
        end
        if r.subscription_id == "sub_2" then error("store: disk I/O error") end
        return 202, "{}"
      end,
    }
    local res = run_with({ row("sub_1", "active"), row("sub_2", "active"), row("sub_3", "active") })
    assert.are.equal(1, res.provisioned)
    assert.are.equal(2, res.errors_total)
    assert.are.equal("sub_1", res.errors[1].id)
    assert.matches("provision: being deprovisioned (409)", res.errors[1].message, 1, true)
    assert.are.equal("sub_2", res.errors[2].id)
    assert.matches("disk I/O error", res.errors[2].message, 1, true)
  end)

  it("says so when suspend is asked for and no lifecycle is there", function()
    instance("sub_1", "free")
    sync.lifecycle = nil
    package.loaded.lifecycle = nil
    local saved = package.preload.lifecycle
    package.preload.lifecycle = function() error("module 'lifecycle' not found") end
    local ok, res = pcall(run_with, { row("sub_1", "paused") })
    package.preload.lifecycle = saved
    assert.is_true(ok, res)
    assert.are.equal(0, res.suspended)
    assert.matches("suspend is not available", res.errors[1].message, 1, true)
    assert.are.equal("running", instances.get("sub_1").status)
  end)
end)

describe("subscriptions_sync.decide", function()
  local sync
  setup(function()
    memstore.dokku("dry-run")
    sync = require "subscriptions_sync"
  end)

  local function sub(kind, tier) return { id = "s", kind = kind, tier = tier or "free", tier_known = tier == nil } end
  local function inst(status, tier) return { status = status, tier = tier or "free" } end

  it("maps each row kind and instance state to one action or none", function()
    local cases = {
      { "active", nil, "provision" },
      { "active", inst("deprovisioned"), "provision" },
      { "active", inst("running"), nil, "unchanged" },
      { "active", inst("unhealthy", "starter"), "update" },
      { "active", inst("starting", "starter"), "update" },
      { "active", inst("suspended", "starter"), "resume" },
      { "active", inst("stopped"), nil, "unchanged" },
      { "active", inst("stopped", "starter"), "update" },
      { "active", { status = "suspended", tier = "free", spec = { suspended = true } }, "resume" },
      { "active", inst("updating"), nil, "busy" },
      { "active", inst("deprovisioning"), nil, "busy" },
      { "active", inst("failed"), nil, "failed" },
      { "suspend", nil, nil, "unchanged" },
      { "suspend", inst("running"), "suspend" },
      { "suspend", inst("stopped"), "suspend" },
      { "suspend", inst("suspended"), nil, "unchanged" },
      -- a tier change while suspended: recorded (once) for the resume
      { "suspend", { status = "suspended", tier = "starter", spec = { suspended = true } }, "suspend" },
      { "suspend", { status = "suspended", tier = "starter", spec = { suspended = true, pending_tier = "free" } }, nil,
        "unchanged" },
      { "suspend", inst("provisioning"), nil, "busy" },
      { "cancelled", nil, nil, "unchanged" },
      { "cancelled", inst("running"), "deprovision" },
      { "cancelled", inst("suspended"), "deprovision" },
      { "cancelled", inst("failed"), "deprovision" },
      { "cancelled", inst("deprovisioning"), nil, "unchanged" },
      { "cancelled", inst("deprovisioned"), nil, "unchanged" },
      { "cancelled", inst("updating"), nil, "busy" },
    }
    for _, c in ipairs(cases) do
      local action, none = sync.decide(sub(c[1]), c[2])
      local what = c[1] .. " on " .. (c[2] and c[2].status or "no instance")
      assert.are.equal(c[3], action, what)
      assert.are.equal(c[4], none, what)
    end
  end)
end)
