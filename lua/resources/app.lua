-- Resource `app`: a Dokku app exists (or, with spec.absent, does not).
-- Probe with apps:exists (exit 20 = missing); create with apps:create.
local command = require "command"

local M = { type = "app" }

function M.probe(run, spec)
  local res, err = run({ "apps:exists", spec.name })
  if not res then
    return nil, err
  end
  if res.exit == 0 then
    return { exists = true }
  elseif res.exit == 20 then
    return { exists = false }
  end
  return nil, "apps:exists " .. spec.name .. " exited " .. res.exit .. ": " .. res.stderr
end

function M.diff(spec, current)
  local exists = current and current.exists
  if spec.absent then
    return exists and M.undo(spec) or {}
  end
  if exists then
    return {}
  end
  return { command.new("app", spec.name, { "apps:create", spec.name }) }
end

function M.model(spec)
  return { exists = not spec.absent }
end

function M.undo(spec)
  -- Exit 20 (app does not exist) means the goal is already reached.
  return {
    command.new("app", spec.name, { "apps:destroy", "--force", spec.name }, nil, { ok_exits = { [20] = true } }),
  }
end

return M
