-- Supabase Database Webhooks → operations. Which record fields mean what,
-- and which statuses mean active or cancelled, is defined here (SPEC §5.6),
-- not in C. C has verified the sender before this runs; here a replayed
-- webhook-id is acknowledged and ignored, and a delivery that changes
-- nothing starts no job.
local generation = require "generation"
local instances = require "instances"
local json = require "json"
local log = require "mrprov.log"
local metrics = require "mrprov.metrics"
local sys = require "mrprov.sys"
local validate = require "validate"
local validate_request = require "validate_request"

local M = {}

-- The mapping for MindRoom's `subscriptions` table.
M.mapping = {
  table = "subscriptions",
  subscription_id = "id",
  account_id = "account_id",
  tier = "tier",
  status = "status",
  active = { active = true, trialing = true },
  cancelled = { cancelled = true, canceled = true },
  -- not paid: the instance is suspended (stopped, everything kept) until
  -- the subscription is active again (lua/lifecycle.lua)
  suspended = { past_due = true, unpaid = true, paused = true },
}

local function field(record, name)
  if type(record) ~= "table" then
    return nil
  end
  local v = record[M.mapping[name]]
  if v == json.null then
    return nil
  end
  return v
end

-- The operation a payload asks for: { op = "provision" | "update" |
-- "deprovision" | "suspend" | "resume" | "ignore", subscription_id,
-- account_id, tier, reason }. A subscription that becomes active again
-- after past_due, unpaid or paused is a resume (a provision when it has no
-- instance: handle decides).
function M.decide(payload)
  local m = M.mapping
  if type(payload) ~= "table" then
    return { op = "ignore", reason = "not a JSON object" }
  end
  if payload.table ~= m.table then
    return { op = "ignore", reason = "table " .. tostring(payload.table) .. " is not " .. m.table }
  end
  local kind = payload.type
  local new, old = payload.record, payload.old_record
  local row = kind == "DELETE" and old or new
  local d = {
    subscription_id = field(row, "subscription_id"),
    account_id = field(row, "account_id"),
    tier = field(row, "tier"),
    status = field(row, "status"),
  }
  if type(d.subscription_id) ~= "string" then
    d.op, d.reason = "ignore", "the record has no " .. m.subscription_id
    return d
  end
  if kind == "DELETE" then
    d.op = "deprovision"
  elseif kind == "INSERT" then
    d.op = m.active[d.status] and "provision" or "ignore"
    d.reason = d.op == "ignore" and ("status " .. tostring(d.status) .. " is not active") or nil
  elseif kind == "UPDATE" then
    local was = field(old, "status")
    if m.cancelled[d.status] then
      d.op = "deprovision"
    elseif m.suspended[d.status] then
      -- suspended, or already: a tier change meanwhile is recorded
      d.op = "suspend"
    elseif m.active[d.status] and m.suspended[was] then
      d.op = "resume"
    elseif m.active[d.status] and not m.active[was] then
      d.op = "provision"
    elseif m.active[d.status] and field(old, "tier") ~= d.tier then
      d.op = "update"
    else
      d.op, d.reason = "ignore", "nothing the provisioner acts on changed"
    end
  else
    d.op, d.reason = "ignore", "unknown event type " .. tostring(kind)
  end
  return d
end

local function ack(status, body)
  return status, json.encode(body)
end

-- Records the delivery id; false when it was seen before. Ids are kept for
-- twice the signature's timestamp tolerance: a replay older than that is
-- refused by its timestamp already, so older ids are deleted, or the table
-- would grow by one row per delivery for ever. The deletion runs at most
-- every PRUNE_INTERVAL seconds per Lua state (instances.first_delivery).
M.PRUNE_INTERVAL = 1
local last_prune = -math.huge

local function first_delivery(id)
  if not id then
    return true
  end
  local now, forget_before = sys.now(), nil
  if now - last_prune >= M.PRUNE_INTERVAL then
    last_prune = now
    forget_before = sys.iso_time(now - 2 * sys.webhook_tolerance_s)
  end
  return instances.first_delivery(id, sys.iso_time(), forget_before)
end

-- A provision of the row's subscription (a new row, or an update or resume
-- whose instance does not exist yet: its INSERT was missed).
local function provision(d, cfg, api)
  local r, err = validate_request.provision_request({ subscription_id = d.subscription_id,
                                                      account_id = d.account_id, tier = d.tier }, cfg.tiers)
  if not r then
    return 422, json.encode({ error = err })
  end
  return api.provision_validated(r, { from_webhook = true }, cfg)
end

function M.handle(payload, req, api)
  if not first_delivery(req.webhook_id) then
    metrics.inc("mrprov_webhooks_total", { outcome = "duplicate" })
    return ack(200, { status = "duplicate", message = "this webhook-id was already received; ignored" })
  end
  local d = M.decide(payload)
  local fields = { webhook_id = req.webhook_id or "", subscription_id = d.subscription_id or "", op = d.op }
  local cfg = generation.current()
  local status, body
  if d.op == "provision" or d.op == "update" then
    -- active again while the instance is suspended (the resume's own
    -- delivery was missed): that is the resume
    local inst = validate.subscription_id(d.subscription_id) and instances.get(d.subscription_id)
    if inst and inst.spec.suspended and inst.status ~= "deprovisioned" then
      d.op = "resume"
      fields.op = d.op
    end
  end
  if d.op == "provision" then
    status, body = provision(d, cfg, api)
  elseif d.op == "update" then
    local inst = validate.subscription_id(d.subscription_id) and instances.get(d.subscription_id)
    if not inst then
      -- No instance yet (e.g. its INSERT was missed): provisioning is the update.
      status, body = provision(d, cfg, api)
    else
      local r, err = validate_request.update_request({ subscription_id = d.subscription_id, app_name = inst.app_name,
                                               tier = d.tier }, cfg.tiers, inst.tier)
      if not r then
        status, body = 422, json.encode({ error = err })
      else
        status, body = api.update_validated(r, { from_webhook = true }, cfg)
      end
    end
  elseif d.op == "suspend" or d.op == "resume" then
    local inst = validate.subscription_id(d.subscription_id) and instances.get(d.subscription_id)
    local lifecycle = require "lifecycle"
    if inst and inst.status ~= "deprovisioned" then
      status, body = lifecycle.request(inst.subscription_id, d.op, { from_webhook = true, tier = d.tier, cfg = cfg })
    elseif d.op == "resume" then
      -- no instance yet (its INSERT was missed, or it came while unpaid)
      status, body = provision(d, cfg, api)
    else
      status, body = ack(200, { status = "ignored", message = "no live instance for this subscription" })
    end
  elseif d.op == "deprovision" then
    local inst = validate.subscription_id(d.subscription_id) and instances.get(d.subscription_id)
    if not inst or inst.status == "deprovisioned" or inst.status == "deprovisioning" then
      status, body = ack(200, { status = "ignored", message = "no live instance for this subscription" })
    else
      status, body = api.deprovision_validated({ subscription_id = inst.subscription_id, app_name = inst.app_name,
                                                 backup_data = true }, {})
    end
  else
    status, body = ack(200, { status = "ignored", message = d.reason })
  end
  fields.status = status
  log.info("webhook", fields)
  metrics.inc("mrprov_webhooks_total", { outcome = d.op })
  return status, body
end

return M
