-- Missed webhooks: once per sweep, the subscriptions table as Supabase has
-- it (read through PostgREST, paged) against the instances mrprov has, and
-- the same requests a webhook would have made for each difference:
--
--   active/trialing, no live instance     → provision
--   active/trialing, another tier         → update (the tier)
--   active/trialing, instance suspended   → resume (with the row's tier)
--   past_due/unpaid/paused, live instance → suspend
--   cancelled/canceled, live instance     → deprovision, with a backup
--
-- Guard rails: at most RECONCILE_MAX_DESTRUCTIVE deprovisions per sweep (the
-- rest are listed in `deferred_destructive` and left for an operator, or the
-- next sweep); a row that cannot be read as a subscription (an unknown
-- status, an unknown tier where one is needed, a missing or malformed id,
-- anything the webhook path would refuse) is listed in `skipped` with the
-- reason and never acted on. An instance with a job in flight (pending,
-- provisioning, updating, deprovisioning) is left alone (`busy`): the next
-- sweep sees where it settled; a failed one is left for an operator
-- (`failed`) unless its subscription is cancelled. A row that is simply
-- missing from the table is not a cancellation: only what a row says is
-- acted on.
--
-- The columns are webhooks.mapping's (id, account_id, tier, status of
-- public.subscriptions; docker/supabase/schema.sql documents them). Reading
-- is keyset-paged on the id (`id=gt.<last>&order=id.asc&limit=N`), so rows
-- inserted while the table is read shift no page; the read is bounded (page
-- size, page count, SUPABASE_TIMEOUT per page) and a failed read is reported
-- in `errors`, with the rows read before it still acted on.
local generation = require "generation"
local instances = require "instances"
local json = require "json"
local log = require "mrprov.log"
local requests = require "requests"
local supabase = require "mrprov.supabase"
local validate = require "validate"
local validate_request = require "validate_request"
local webhooks = require "webhooks"

local M = {}

M.PAGE_SIZE = 500
M.MAX_PAGES = 200   -- 100 000 rows
M.LIST_MAX = 100    -- entries kept in each list of the report (the totals count all)
M.ERROR_TEXT_MAX = 300

-- Statuses that suspend an instance (the lifecycle's webhook mapping says
-- the same; when webhooks.mapping carries its own list, that one is used).
M.SUSPEND = { past_due = true, unpaid = true, paused = true }

-- Instance states the sync leaves to the job in flight (or to an operator).
M.BUSY = { pending = true, provisioning = true, updating = true, deprovisioning = true }

-- Injected by unit specs: the reader of one page (table, query) → status,
-- body, truncated | nil, err; the write requests (requests.lua's shape); the
-- lifecycle (its request(subscription_id, action, opts)).
M.reader = function(tbl, query) return supabase.select(tbl, query) end
M.requests = nil
M.lifecycle = nil

local function lifecycle()
  if M.lifecycle then return M.lifecycle end
  local ok, lc = pcall(require, "lifecycle")
  if ok and type(lc) == "table" and lc.request then return lc end
  if type(requests.lifecycle) == "table" and requests.lifecycle.request then return requests.lifecycle end
  return nil
end

local function mapping()
  local m = webhooks.mapping
  return m, m.suspended or M.SUSPEND
end

-- A value from a row as a report may show it: plain short text as it is,
-- anything else described, never echoed.
local function shown(v)
  if type(v) == "string" then
    if #v <= 64 and v:match("^[%w_.:@-]+$") then return v end
    return ("(%d bytes, not shown)"):format(#v)
  end
  if v == nil or v == json.null then return "(null)" end
  return "(" .. type(v) .. ")"
end
M.shown = shown

-- RFC 3986 unreserved characters stay; every other byte is %XX.
local function pct(s)
  return (s:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function short(s)
  s = tostring(s)
  if #s > M.ERROR_TEXT_MAX then s = s:sub(1, M.ERROR_TEXT_MAX) .. "…" end
  return s
end

-- PostgREST's error body {code, message, details, hint} as one line.
local function http_error(status, body)
  local t = json.decode(body or "")
  if type(t) == "table" and type(t.message) == "string" then
    local code = type(t.code) == "string" and t.code or "gateway"
    return short(("HTTP %d: %s: %s"):format(status, code, t.message))
  end
  return short(("HTTP %d: %s"):format(status, tostring(body or ""):gsub("[%c]", " ")))
end

local function new_result(opts)
  return {
    read = 0, pages = 0, complete = false, dry_run = opts.dry_run and true or false,
    provisioned = 0, updated = 0, suspended = 0, resumed = 0, deprovisioned = 0, unchanged = 0, busy = 0, failed = 0,
    max_destructive = 0,
    deferred_destructive = json.array(), deferred_total = 0,
    skipped = json.array(), skipped_total = 0,
    errors = json.array(), errors_total = 0,
    planned = opts.dry_run and json.array() or nil,
  }
end

local function add(res, list, total, entry)
  res[total] = res[total] + 1
  if #res[list] < M.LIST_MAX then
    res[list][#res[list] + 1] = entry
  end
end

local function add_error(res, id, message)
  add(res, "errors", "errors_total", { id = id, message = short(message) })
  log.warn("subscriptions sync", { subscription_id = id or "", error = short(message) })
end

-- Every row of the table, in id order; errors go to res.errors and end the
-- read (what was read before is returned).
function M.read_all(res)
  local m = mapping()
  local idcol = m.subscription_id
  local base = table.concat({
    "select=", table.concat({ m.subscription_id, m.account_id, m.tier, m.status }, ","),
    "&order=", idcol, ".asc&limit=", tostring(M.PAGE_SIZE),
  })
  local rows, last = {}, nil
  for page = 1, M.MAX_PAGES do
    local q = base
    if last ~= nil then
      q = q .. "&" .. idcol .. "=gt." .. pct(last)
      if #q > (supabase.MAX_QUERY or 1024) then
        add_error(res, nil, ("cannot page past the id %s (%d bytes): the rows after it are not read"):format(
          shown(last), #last))
        return rows
      end
    end
    local status, body, truncated = M.reader(m.table, q)
    if not status then
      add_error(res, nil, "reading " .. m.table .. ": " .. tostring(body))
      return rows
    end
    if status ~= 200 then
      add_error(res, nil, "reading " .. m.table .. ": " .. http_error(status, body))
      return rows
    end
    if truncated then
      add_error(res, nil, ("reading %s: a page of %d rows is over the size mrprov reads; the rows from page %d on "
        .. "are not read"):format(m.table, M.PAGE_SIZE, page))
      return rows
    end
    local list, derr = json.decode(body)
    if type(list) ~= "table" or (next(list) ~= nil and list[1] == nil) then
      add_error(res, nil, "reading " .. m.table .. ": the answer is not a JSON array"
        .. (derr and (": " .. derr) or ""))
      return rows
    end
    res.pages = page
    for _, r in ipairs(list) do rows[#rows + 1] = r end
    if #list < M.PAGE_SIZE then
      res.complete = true
      return rows
    end
    local tail = type(list[#list]) == "table" and list[#list][idcol] or nil
    if math.type(tail) == "integer" then tail = tostring(tail) end
    if type(tail) ~= "string" or tail == "" then
      add_error(res, nil, ("reading %s: page %d ends on a row without an id to page on; the rest is not read")
        :format(m.table, page))
      return rows
    end
    last = tail
  end
  add_error(res, nil, ("reading %s: more than %d rows (%d pages); the rows after %s are not read"):format(
    m.table, M.PAGE_SIZE * M.MAX_PAGES, M.MAX_PAGES, shown(last)))
  return rows
end

-- One row as a subscription: { id, account_id, tier, status, kind = "active"
-- | "suspend" | "cancelled" } or nil, reason, shown id. The checks are the
-- webhook path's (lua/validate.lua, lua/validate_request.lua).
function M.parse(row, tiers_by_name)
  local m, suspend = mapping()
  if type(row) ~= "table" or row == json.null then
    return nil, "the row is not an object", "(" .. type(row) .. ")"
  end
  local function get(name)
    local v = row[m[name]]
    if v == json.null then return nil end
    return v
  end
  local id, account, tier, status = get("subscription_id"), get("account_id"), get("tier"), get("status")
  if id == nil then
    return nil, "the row has no " .. m.subscription_id, "(null)"
  end
  local _, iderr = validate.subscription_id(id)
  if iderr then
    return nil, m.subscription_id .. " " .. iderr, shown(id)
  end
  if account ~= nil then
    local _, aerr = validate.account_id(account)
    if aerr then return nil, m.account_id .. " " .. aerr, id end
  end
  if type(status) ~= "string" then
    return nil, m.status .. " is " .. (status == nil and "missing" or "not a string"), id
  end
  local kind
  if m.active[status] then
    kind = "active"
  elseif m.cancelled[status] then
    kind = "cancelled"
  elseif suspend[status] then
    kind = "suspend"
  else
    return nil, "unknown " .. m.status .. " " .. shown(status), id
  end
  if kind == "active" then
    if tier == nil then
      return nil, m.tier .. " is missing", id
    end
    if type(tier) ~= "string" or not tiers_by_name[tier] then
      return nil, "unknown " .. m.tier .. " " .. shown(tier), id
    end
  end
  return { id = id, account_id = account, tier = type(tier) == "string" and tier or nil, status = status,
           kind = kind, tier_known = type(tier) == "string" and tiers_by_name[tier] ~= nil }
end

local GONE = { deprovisioned = true, deprovisioning = true }

-- What a row asks of the instance: action (provision, update, resume,
-- suspend, deprovision), or nil and the counter it goes to instead
-- ("unchanged", "busy": a job in flight, "failed": left for an operator).
function M.decide(sub, inst)
  local live = inst ~= nil and not GONE[inst.status]
  if inst and inst.status == "failed" then
    -- a failed instance of a cancelled subscription is still removed (its
    -- partial objects with it); anything else waits for an operator
    if sub.kind == "cancelled" then return "deprovision" end
    return nil, "failed"
  end
  if inst and M.BUSY[inst.status] then
    if inst.status == "deprovisioning" and sub.kind ~= "active" then return nil, "unchanged" end
    return nil, "busy"
  end
  local suspended = live and (inst.status == "suspended" or (type(inst.spec) == "table" and inst.spec.suspended))
  if sub.kind == "active" then
    if not live then return "provision" end
    if suspended then return "resume" end
    if inst.tier ~= sub.tier then return "update" end -- a stopped instance stays stopped (spec.stopped)
    return nil, "unchanged"
  elseif sub.kind == "suspend" then
    if live and not suspended then return "suspend" end
    -- a tier change while suspended is recorded for the resume (lifecycle: spec.pending_tier)
    if suspended and sub.tier_known and sub.tier ~= (inst.spec and inst.spec.pending_tier or inst.tier) then
      return "suspend"
    end
    return nil, "unchanged"
  end
  if live then return "deprovision" end
  return nil, "unchanged"
end

local function ok_status(status)
  return type(status) == "number" and status >= 200 and status < 300
end

local function answer_error(status, body)
  local t = json.decode(body or "")
  local e = type(t) == "table" and t.error
  if type(e) == "table" and type(e.message) == "string" then
    return ("%s (%s)"):format(e.message, tostring(status))
  end
  return "answered " .. tostring(status)
end

-- Carries out one action through the webhook path's request functions.
local function act(action, sub, inst, cfg, reqs)
  local req = { from_webhook = true, from_sweep = true }
  if action == "provision" then
    local r, err = validate_request.provision_request({ subscription_id = sub.id, account_id = sub.account_id,
                                                        tier = sub.tier }, cfg.tiers)
    if not r then return nil, err.message end
    return reqs.provision_validated(r, req, cfg)
  elseif action == "update" then
    local r, err = validate_request.update_request({ subscription_id = sub.id, app_name = inst.app_name,
                                                     tier = sub.tier }, cfg.tiers, inst.tier)
    if not r then return nil, err.message end
    return reqs.update_validated(r, req, cfg)
  elseif action == "deprovision" then
    return reqs.deprovision_validated({ subscription_id = sub.id, app_name = inst.app_name, backup_data = true },
      {}, cfg)
  end
  local lc = lifecycle()
  if not lc then
    return nil, action .. " is not available (no lifecycle module)"
  end
  local opts = { from_sweep = true }
  if sub.tier_known and sub.tier ~= inst.tier then
    -- resume: applied; suspend: recorded for the resume
    opts.tier = sub.tier
  end
  return lc.request(sub.id, action, opts)
end

local COUNTER = { provision = "provisioned", update = "updated", suspend = "suspended", resume = "resumed",
                  deprovision = "deprovisioned" }

-- run(report, opts) → the table the sweep keeps under `subscriptions`.
-- opts: dry_run (decide and list, change nothing), max_destructive
-- (default: the RECONCILE_MAX_DESTRUCTIVE setting).
function M.run(report, opts)
  opts = opts or {}
  if opts.dry_run == nil and type(report) == "table" then opts.dry_run = report.dry_run end
  local res = new_result(opts)
  local cfg = generation.current()
  local max = opts.max_destructive or (cfg.settings and cfg.settings.reconcile_max_destructive) or 3
  res.max_destructive = max
  local reqs = M.requests or requests
  local rows = M.read_all(res)
  res.read = #rows
  local seen, destructive = {}, 0
  for _, row in ipairs(rows) do
    local sub, why, sid = M.parse(row, cfg.tiers)
    if sub and seen[sub.id] then
      sub, why, sid = nil, "the id was read twice (the table changed while it was read)", sub.id
    end
    if not sub then
      add(res, "skipped", "skipped_total", { id = sid, reason = short(why) })
    else
      seen[sub.id] = true
      local ok, inst = pcall(instances.get, sub.id)
      local action, none
      if not ok then
        add_error(res, sub.id, "store: " .. tostring(inst))
      else
        action, none = M.decide(sub, inst)
      end
      if action == "deprovision" then
        if destructive >= max then
          add(res, "deferred_destructive", "deferred_total", sub.id)
          action = nil
        else
          destructive = destructive + 1
        end
      end
      if action and opts.dry_run then
        res[COUNTER[action]] = res[COUNTER[action]] + 1
        if #res.planned < M.LIST_MAX then res.planned[#res.planned + 1] = { id = sub.id, action = action } end
      elseif action then
        local aok, status, body = pcall(act, action, sub, inst, cfg, reqs)
        if not aok then
          add_error(res, sub.id, action .. ": " .. tostring(status))
        elseif ok_status(status) then
          res[COUNTER[action]] = res[COUNTER[action]] + 1
          log.info("subscriptions sync", { subscription_id = sub.id, action = action, status = status })
        else
          add_error(res, sub.id, action .. ": " .. (status == nil and tostring(body) or answer_error(status, body)))
        end
      elseif none then
        res[none] = res[none] + 1
      end
    end
  end
  if res.deferred_total > 0 then
    log.warn("subscriptions sync: deprovisions deferred (RECONCILE_MAX_DESTRUCTIVE)",
      { deferred = res.deferred_total, max = max })
  end
  return res
end

return M
