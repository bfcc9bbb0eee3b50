-- lua/webhooks.lua: Supabase payloads → operations, and their handling on
-- the real store binding over an in-memory SQLite (replays by webhook-id).
local memstore = require "memstore"
local store = memstore.install()
local cjson = require "cjson"

local describe_store = memstore.describer(describe, pending)

local function payload(kind, record, old)
  return { type = kind, table = "subscriptions", record = record, old_record = old }
end

describe("webhooks.decide", function()
  local webhooks
  setup(function()
    memstore.dokku("dry-run")
    webhooks = require "webhooks"
  end)

  it("maps the subscriptions table's events to operations", function()
    local row = { id = "sub_1", account_id = "acc_1", tier = "free", status = "active" }
    assert.are.equal("provision", webhooks.decide(payload("INSERT", row)).op)
    assert.are.equal("ignore", webhooks.decide(payload("INSERT", { id = "sub_1", status = "incomplete" })).op)
    local d = webhooks.decide(payload("UPDATE", { id = "sub_1", tier = "starter", status = "active" }, row))
    assert.are.equal("update", d.op)
    assert.are.equal("starter", d.tier)
    assert.are.equal("deprovision",
      webhooks.decide(payload("UPDATE", { id = "sub_1", tier = "free", status = "canceled" }, row)).op)
    -- active again after past_due: a resume (issue 15; handle provisions
    -- when there is no instance, as the provision this was before)
    assert.are.equal("resume",
      webhooks.decide(payload("UPDATE", row, { id = "sub_1", tier = "free", status = "past_due" })).op)
    assert.are.equal("provision",
      webhooks.decide(payload("UPDATE", row, { id = "sub_1", tier = "free", status = "incomplete" })).op)
    for _, st in ipairs({ "past_due", "unpaid", "paused" }) do
      local s = webhooks.decide(payload("UPDATE", { id = "sub_1", tier = "pro", status = st }, row))
      assert.are.equal("suspend", s.op)
      assert.are.equal("pro", s.tier)
    end
    assert.are.equal("resume", webhooks.decide(payload("UPDATE", { id = "sub_1", tier = "free", status = "trialing" },
      { id = "sub_1", tier = "free", status = "paused" })).op)
    assert.are.equal("ignore", webhooks.decide(payload("UPDATE", row, row)).op)
    assert.are.equal("deprovision", webhooks.decide(payload("DELETE", nil, row)).op)
    assert.are.equal("ignore", webhooks.decide({ type = "INSERT", table = "users", record = row }).op)
    assert.are.equal("ignore", webhooks.decide(payload("INSERT", { status = "active" })).op)
    assert.are.equal("ignore", webhooks.decide("nope").op)
  end)
end)

describe_store("webhooks.handle", function()
  local webhooks, requests, instances

  setup(function()
    memstore.dokku("dry-run")
    for _, m in ipairs({ "executor", "plan", "requests", "webhooks" }) do
      package.loaded[m] = nil
    end
    webhooks, requests, instances = require "webhooks", require "requests", require "instances"
  end)
  before_each(function()
    memstore.reset()
    memstore.boot()
  end)

  local function handle(p, id)
    local status, body = webhooks.handle(p, { webhook_id = id }, requests)
    return status, cjson.decode(body)
  end

  it("provisions on an active INSERT without handing the admin password to the sender", function()
    local row = { id = "sub_1", account_id = "acc_1", tier = "free", status = "active" }
    local status, b = handle(payload("INSERT", row), "wh_1")
    assert.are.equal(202, status)
    assert.is_nil(b.admin_password)
    assert.are.equal("provisioning", instances.get("sub_1").status)
  end)

  it("acknowledges a replayed webhook-id and starts nothing", function()
    local p = payload("INSERT", { id = "sub_1", account_id = "acc_1", tier = "free", status = "active" })
    assert.are.equal(202, (handle(p, "wh_1")))
    local status, b = handle(p, "wh_1")
    assert.are.equal(200, status)
    assert.are.equal("duplicate", b.status)
    assert.are.equal(1, #store.query("SELECT 1 AS x FROM jobs"))
    assert.are.equal(1, #store.query("SELECT 1 AS x FROM webhook_ids"))
  end)

  it("deprovisions a cancelled subscription's instance, and ignores one it does not have", function()
    local row = { id = "sub_1", account_id = "acc_1", tier = "free", status = "active" }
    handle(payload("INSERT", row), "wh_1")
    local status = handle(payload("UPDATE", { id = "sub_1", tier = "free", status = "cancelled" }, row), "wh_2")
    assert.are.equal(202, status)
    assert.are.equal("deprovisioning", instances.get("sub_1").status)
    local _, b = handle(payload("DELETE", nil, { id = "sub_9", status = "active" }), "wh_3")
    assert.are.equal("ignored", b.status)
  end)

  it("provisions on a tier change of a subscription it has no instance of yet, and refuses an unknown tier", function()
    local old = { id = "sub_1", tier = "free", status = "active" }
    assert.are.equal(202, (handle(payload("UPDATE", { id = "sub_1", tier = "starter", status = "active" }, old), "a")))
    assert.are.equal("starter", instances.get("sub_1").tier)
    local status, b = handle(payload("INSERT", { id = "sub_2", tier = "gold", status = "active" }), "b")
    assert.are.equal(422, status)
    assert.are.equal("tier", b.error.field)
  end)
end)
