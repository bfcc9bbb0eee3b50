-- Resource `service`: a PostgreSQL or Redis service of the dokku-postgres /
-- dokku-redis plugins. `create` is not idempotent, so probe `exists` first.
local command = require "command"

local M = { type = "service" }

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
