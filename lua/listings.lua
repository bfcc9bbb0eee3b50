-- The API's list reads, for the web console (ui/) and any other client:
-- GET /api/v1/instances (filtered, paged, with counts per status) and
-- GET /api/v1/jobs (recent or failed, with the step that failed). Each
-- reads one snapshot (store.read) and decodes no spec or applied document.
-- Filters arrive as query arguments (strings); each is checked before it
-- reaches SQL, and only as a bound value.
local instances = require "instances"
local json = require "json"
local store = require "mrprov.store"
local store_error = require "store_error"

local M = {}

M.DEFAULT_LIMIT = 100
M.MAX_LIMIT = 500
M.MAX_OFFSET = 1000000
M.MAX_QUERY = 100

-- Operations a failed job of may be queued again (lua/retry.lua): the
-- convergent jobs of requests; a readiness check or a sweep is not.
M.RETRYABLE = { provision = true, update = true, deprovision = true, stop = true, start = true, restart = true,
                suspend = true, resume = true }
M.JOB_STATES = { queued = true, running = true, succeeded = true, failed = true }

local check = store_error.checked

local STATUS = {}
for _, s in ipairs(instances.STATUSES) do
  STATUS[s] = true
end

local function bad(field, message)
  return nil, { code = "invalid_value", field = field, message = message }
end

-- limit and offset of a query table: numbers within bounds, or nil, err.
local function paging(q)
  local limit, offset = M.DEFAULT_LIMIT, 0
  if q.limit ~= nil then
    limit = q.limit:match("^%d+$") and tonumber(q.limit)
    if not limit or limit < 1 or limit > M.MAX_LIMIT then
      return bad("limit", "limit must be a whole number from 1 to " .. M.MAX_LIMIT)
    end
  end
  if q.offset ~= nil then
    offset = q.offset:match("^%d+$") and #q.offset <= 7 and tonumber(q.offset)
    if not offset or offset > M.MAX_OFFSET then
      return bad("offset", "offset must be a whole number from 0 to " .. M.MAX_OFFSET)
    end
  end
  return { limit = limit, offset = offset }
end

-- A tier or host name as the filters take it: the tiers' name rule.
local function name_ok(s)
  return type(s) == "string" and #s <= 64 and s:match("^[%a%d][%w_.-]*$") ~= nil
end

-- LIKE pattern of a search text, with the wildcard characters escaped.
local function like(s)
  return "%" .. s:gsub("[\\%%_]", "\\%0") .. "%"
end

-- The filters of GET /api/v1/instances as SQL conditions on `i` (the
-- instance) and `d` (its drift row): { where = {...}, args = {...} } for
-- the page and the same without the status filter for the counts.
local function instance_filters(q)
  local conds, args, sconds, sargs = {}, {}, {}, {}
  local function add(cond, arg, is_status)
    local c, a = is_status and sconds or conds, is_status and sargs or args
    c[#c + 1] = cond
    if arg ~= nil then
      a[#a + 1] = arg
    end
  end
  if q.status ~= nil then
    if not STATUS[q.status] then
      return bad("status", "status must be one of " .. table.concat(instances.STATUSES, ", "))
    end
    add("i.status = ?", q.status, true)
  end
  if q.tier ~= nil then
    if not name_ok(q.tier) then
      return bad("tier", "tier is not a tier name")
    end
    add("i.tier = ?", q.tier)
  end
  if q.host ~= nil then
    if not name_ok(q.host) then
      return bad("host", "host is not a host name")
    end
    add("i.host = ?", q.host)
  end
  if q.drift ~= nil then
    if q.drift == "true" then
      add("d.resources IS NOT NULL AND d.resources <> '[]'")
    elseif q.drift == "false" then
      add("(d.resources IS NULL OR d.resources = '[]')")
    else
      return bad("drift", "drift must be true or false")
    end
  end
  if q.q ~= nil and q.q ~= "" then
    if #q.q > M.MAX_QUERY then
      return bad("q", "q is longer than " .. M.MAX_QUERY .. " characters")
    end
    local p = like(q.q)
    add("(i.subscription_id LIKE ? ESCAPE '\\' OR i.app_name LIKE ? ESCAPE '\\' OR " ..
      "coalesce(i.account_id, '') LIKE ? ESCAPE '\\')", p)
    args[#args + 1] = p
    args[#args + 1] = p
  end
  return { conds = conds, args = args, status_conds = sconds, status_args = sargs }
end

local function where(conds)
  return #conds > 0 and (" WHERE " .. table.concat(conds, " AND ")) or ""
end

local function concat(a, b)
  local out = {}
  for _, v in ipairs(a) do out[#out + 1] = v end
  for _, v in ipairs(b) do out[#out + 1] = v end
  return out
end

local FROM = " FROM instances i LEFT JOIN drift d ON d.subscription_id = i.subscription_id"

-- The latest job of a subscription that is not a readiness check (joined
-- as `j`: one query for the page, not one per row).
local LATEST_JOB = "(SELECT lj.id FROM jobs lj WHERE lj.subscription_id = i.subscription_id AND " ..
  "lj.operation <> 'health' ORDER BY lj.rowid DESC LIMIT 1)"

local function decode(s, default)
  local v = s and json.decode_stored(s)
  if v == nil then
    return default
  end
  return v
end

local function instance_row(r)
  local urls = decode(r.urls, {})
  local drift = json.null
  if r.drift_checked_at then
    local list = decode(r.drift_resources, {})
    drift = { checked_at = r.drift_checked_at, drifted = type(list) == "table" and #list > 0,
              resources = type(list) == "table" and #list or 0 }
  end
  return {
    subscription_id = r.subscription_id, account_id = r.account_id or json.null, app_name = r.app_name,
    tier = r.tier, status = r.status, error = r.error or json.null, dry_run = r.dry_run == 1,
    host = r.host or json.null,
    urls = { frontend = urls.frontend or json.null, backend = urls.backend or json.null,
             matrix = urls.matrix or json.null },
    health_state = r.health_state or json.null, created_at = r.created_at, updated_at = r.updated_at,
    drift = drift,
    job = r.job_id and {
      id = r.job_id, operation = r.job_operation, state = r.job_state, step = r.job_step or json.null,
      steps_done = r.job_steps_done, steps_total = r.job_steps_total,
    } or json.null,
  }
end

-- GET /api/v1/instances: q = the query arguments. Returns the body, or
-- nil and an error { code, field, message }.
function M.instances(q)
  local page, perr = paging(q)
  if not page then
    return nil, perr
  end
  local f, ferr = instance_filters(q)
  if not f then
    return nil, ferr
  end
  local conds = concat(f.conds, f.status_conds)
  local args = concat(f.args, f.status_args)
  local cols = "i.subscription_id, i.account_id, i.app_name, i.tier, i.status, i.urls, i.error, i.dry_run, " ..
    "i.health_state, i.created_at, i.updated_at, d.checked_at AS drift_checked_at, " ..
    "d.resources AS drift_resources, i.host, j.id AS job_id, j.operation AS job_operation, " ..
    "j.state AS job_state, j.step AS job_step, j.steps_done AS job_steps_done, j.steps_total AS job_steps_total"
  return store.read(function()
    local page_args = concat(args, { page.limit, page.offset })
    local rows = check(store.query("SELECT " .. cols .. FROM .. " LEFT JOIN jobs j ON j.id = " .. LATEST_JOB ..
      where(conds) ..
      " ORDER BY i.updated_at DESC, i.subscription_id LIMIT ? OFFSET ?", table.unpack(page_args)))
    local total = check(store.query("SELECT count(*) AS n" .. FROM .. where(conds), table.unpack(args)))[1].n
    local counts = {}
    for _, s in ipairs(instances.STATUSES) do
      counts[s] = 0
    end
    for _, r in ipairs(check(store.query("SELECT i.status AS status, count(*) AS n" .. FROM .. where(f.conds) ..
        " GROUP BY i.status", table.unpack(f.args)))) do
      counts[r.status] = r.n
    end
    local list = json.array()
    for _, r in ipairs(rows) do
      list[#list + 1] = instance_row(r)
    end
    return { instances = list, total = total, counts = counts, limit = page.limit, offset = page.offset,
             hosts = true }
  end)
end

-- The step of a failed job that failed last (its command as journaled:
-- already redacted), or json.null.
local function failed_step(job_id)
  local s = check(store.query("SELECT seq, resource, target, command, exit_code, error FROM steps " ..
    "WHERE job_id = ? AND state = 'failed' ORDER BY seq DESC LIMIT 1", job_id))[1]
  if not s then
    return json.null
  end
  return { seq = s.seq, resource = s.resource, target = s.target, command = s.command,
           exit_code = s.exit_code or json.null, error = s.error or json.null }
end

-- The id of the subscription's latest job that a retry would follow (not
-- a readiness check), or nil.
function M.latest_request_job(subscription_id)
  local r = check(store.query("SELECT id FROM jobs WHERE subscription_id = ? AND operation <> 'health' " ..
    "ORDER BY rowid DESC LIMIT 1", subscription_id))[1]
  return r and r.id
end

-- GET /api/v1/jobs: newest first; q.state (queued, running, succeeded,
-- failed), q.subscription_id, q.operation, limit, offset.
function M.jobs(q)
  local page, perr = paging(q)
  if not page then
    return nil, perr
  end
  local conds, args = {}, {}
  if q.state ~= nil then
    if not M.JOB_STATES[q.state] then
      return bad("state", "state must be one of queued, running, succeeded, failed")
    end
    conds[#conds + 1] = "j.state = ?"
    args[#args + 1] = q.state
  end
  if q.subscription_id ~= nil then
    if #q.subscription_id > 255 then
      return bad("subscription_id", "subscription_id is too long")
    end
    conds[#conds + 1] = "j.subscription_id = ?"
    args[#args + 1] = q.subscription_id
  end
  if q.operation ~= nil then
    if not q.operation:match("^[a-z_]+$") or #q.operation > 32 then
      return bad("operation", "operation is not an operation name")
    end
    conds[#conds + 1] = "j.operation = ?"
    args[#args + 1] = q.operation
  end
  return store.read(function()
    local rows = check(store.query("SELECT j.id, j.subscription_id, j.operation, j.state, j.error, j.step, " ..
      "j.steps_done, j.steps_total, j.attempts, j.waiting_for, j.created_at, j.started_at, j.finished_at, " ..
      "i.app_name, i.status AS instance_status FROM jobs j LEFT JOIN instances i ON i.subscription_id = " ..
      "j.subscription_id" .. where(conds) .. " ORDER BY j.rowid DESC LIMIT ? OFFSET ?",
      table.unpack(concat(args, { page.limit, page.offset }))))
    local total = check(store.query("SELECT count(*) AS n FROM jobs j" .. where(conds), table.unpack(args)))[1].n
    local list = json.array()
    for _, j in ipairs(rows) do
      local failed = j.state == "failed"
      list[#list + 1] = {
        id = j.id, subscription_id = j.subscription_id, app_name = j.app_name or json.null,
        operation = j.operation, state = j.state, error = j.error or json.null, step = j.step or json.null,
        steps_done = j.steps_done, steps_total = j.steps_total, attempts = j.attempts,
        waiting_for = j.waiting_for or json.null, created_at = j.created_at,
        started_at = j.started_at or json.null, finished_at = j.finished_at or json.null,
        failed_step = failed and failed_step(j.id) or json.null,
        retryable = failed and M.RETRYABLE[j.operation] == true and j.app_name ~= nil
          and M.latest_request_job(j.subscription_id) == j.id,
      }
    end
    return { jobs = list, total = total, limit = page.limit, offset = page.offset }
  end)
end

return M
