-- Resource `service`: a PostgreSQL or Redis service of the dokku-postgres /
-- dokku-redis plugins. `create` is not idempotent, so probe `exists` first.
local command = require "command"
local contract = require "resources.lib.contract"

local M = { type = "service", phase = contract.PHASE.objects, order = 10, from = "services" }

function M.specs(svc)
  return { { key = svc.kind .. ":" .. svc.name, spec = { kind = svc.kind, name = svc.name } } }
end

function M.locks(spec)
  return { spec.name }
end

M.creates = true

-- Deprovisioning destroys the services once unlinked, before the apps.
M.teardown = { order = 20 }

function M.exists(current)
  return (current and current.exists) == true
end

-- Its data, streamed to a file before anything is torn down.
function M.backup(spec)
  return { command.new("backup", spec.name, { spec.kind .. ":export", spec.name }, nil,
    { mutating = false, stream = true }) }
end

function M.probe(run, spec)
  local res, err = run({ spec.kind .. ":exists", spec.name })
  if not res then
    return nil, err
  end
  if res.exit == 0 then
    return { exists = true }
  elseif res.exit == 1 and res.stderr:find("does not exist", 1, true) then
    return { exists = false }
  end
  return nil, spec.kind .. ":exists " .. spec.name .. " exited " .. res.exit .. ": " .. res.stderr
end

-- The sweep: `postgres:list` / `redis:list` name every service of the
-- kind (dokku-postgres/dokku-redis common-functions service_list: every
-- directory of $PLUGIN_DATA_ROOT, which <kind>:exists checks).
M.bulk = {
  reports = { "postgres", "redis" },
  current = function(spec, r)
    local list = r[spec.kind]
    if not list then
      return nil
    end
    return { exists = list[spec.name] == true }
  end,
}

function M.diff(spec, current)
  if current and current.exists then
    return {}
  end
  return { command.new("service", spec.name, { spec.kind .. ":create", spec.name }) }
end

function M.model()
  return { exists = true }
end

function M.undo(spec)
  -- The force flag must be the second argument (dokku-postgres reads it after the name).
  return { command.new("service", spec.name, { spec.kind .. ":destroy", spec.name, "-f" }) }
end

return M
