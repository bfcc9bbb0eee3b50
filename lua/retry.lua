-- POST /api/v1/jobs/{job_id}/retry: a failed job queued again as the
-- ordinary convergent job of its operation (a new job with the same
-- operation and request document). The worker converges the instance on
-- its desired state, as it does for any job, so a retry repeats nothing
-- already done: resources that converged are probed and skipped.
--
-- Only the latest job of its subscription is retried (a later request
-- supersedes it; readiness checks are not counted), only a failed one, and
-- only a request's operation (provision, update, deprovision, stop, start,
-- restart, suspend, resume). The instance takes the busy status the
-- request would have given it.
local instances = require "instances"
local jobs = require "mrprov.jobs"
local listings = require "listings"
local log = require "mrprov.log"
local requests = require "requests"
local store = require "mrprov.store"

local M = {}

local BUSY = { provision = "provisioning", deprovision = "deprovisioning" } -- any other: updating

local function decide(id)
  local job = id:match("^job_[0-9a-f]+$") and #id <= 64 and instances.job(id)
  if not job then
    return { status = 404, code = "not_found", message = "no such job", field = "job_id" }
  end
  if job.state ~= "failed" then
    return { status = 409, code = "conflict", message = "the job is " .. job.state .. "; only a failed job is retried" }
  end
  if not listings.RETRYABLE[job.operation] then
    return { status = 409, code = "conflict",
             message = "a " .. job.operation .. " job is not retried; it runs again on its own schedule" }
  end
  if listings.latest_request_job(job.subscription_id) ~= job.id then
    return { status = 409, code = "conflict",
             message = "a later job of this subscription supersedes this one; retry that one if it failed" }
  end
  local inst = instances.get(job.subscription_id)
  if not inst then
    return { status = 409, code = "conflict", message = "the instance of this job no longer exists" }
  end
  if inst.status == "deprovisioned" and job.operation ~= "deprovision" then
    return { status = 409, code = "conflict", message = "the instance is deprovisioned" }
  end
  inst.status = BUSY[job.operation] or "updating"
  instances.save(inst)
  local new_id = instances.create_job(job.subscription_id, job.operation, job.request)
  return { job = job, inst = inst, new_id = new_id }
end

-- id: the failed job's id; req: the HTTP request ({ prefer }). Returns
-- status, JSON body [, headers] (lua/requests.lua).
function M.request(id, req)
  local d = store.tx(function()
    return decide(id)
  end)
  if d.status then
    return requests.fail(d.status, d.code, d.message, d.field)
  end
  jobs.notify()
  instances.flush()
  log.info("retry accepted", { job_id = d.new_id, retry_of = d.job.id, subscription_id = d.inst.subscription_id,
                               operation = d.job.operation })
  return requests.maybe_wait({ prefer = req and req.prefer }, d.new_id, {
    job_id = d.new_id, retry_of = d.job.id, operation = d.job.operation, subscription_id = d.inst.subscription_id,
    app_name = d.inst.app_name, status = d.inst.status,
  }, d.job.operation .. " queued again")
end

return M
