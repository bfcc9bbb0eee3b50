-- Resource `link`: a service linked to an app (sets DATABASE_URL/REDIS_URL).
-- `link` is not idempotent; `linked` tells. `--no-restart`, never `-n`,
-- because `-n` does not survive Dokku's SSH entry.
local command = require "command"
local contract = require "resources.lib.contract"
local reports = require "resources.lib.reports"

local M = { type = "link", phase = contract.PHASE.links, order = 10, from = "services" }

-- One per app the service is linked to.
function M.specs(svc)
  local list = {}
  for _, app in ipairs(svc.links) do
    list[#list + 1] = { key = "link:" .. svc.name .. ":" .. app,
                        spec = { kind = svc.kind, service = svc.name, app = app } }
  end
  return list
end

-- Both ends: the link changes the app's environment and the service's links.
function M.locks(spec)
  return { spec.app, spec.service }
end

M.creates = true

-- Deprovisioning unlinks first (a linked service cannot be destroyed).
M.teardown = { order = 10 }

function M.exists(current)
  return (current and current.linked) == true
end

function M.probe(run, spec)
  local res, err = run({ spec.kind .. ":linked", spec.service, spec.app })
  if not res then
    return nil, err
  end
  if res.exit == 0 then
    return { linked = true }
  elseif res.exit == 1 or res.exit == 20 then
    -- 1: not linked (or no such service yet); 20: the app does not exist yet
    return { linked = false }
  end
  return nil, spec.kind .. ":linked exited " .. res.exit .. ": " .. res.stderr
end

-- The sweep: no service of that name, or no such app: <kind>:linked
-- answers 1 (verify_service_name) or 20, i.e. not linked. Whether an
-- existing service is linked to an existing app has no all-services form
-- (the LINKS file, <kind>:links SERVICE): the app is probed.
M.bulk = {
  reports = { "apps", "postgres", "redis" },
  current = function(spec, r)
    local list = r[spec.kind]
    if (list and not list[spec.service]) or reports.absent(r, spec.app) then
      return { linked = false }
    end
    return nil
  end,
}

function M.diff(spec, current)
  if current and current.linked then
    return {}
  end
  return {
    command.new("link", spec.app, { spec.kind .. ":link", spec.service, spec.app, "--no-restart" }, nil,
      { restart = true }),
  }
end

function M.model()
  return { linked = true }
end

function M.undo(spec)
  return { command.new("link", spec.app, { spec.kind .. ":unlink", spec.service, spec.app, "--no-restart" }) }
end

return M
