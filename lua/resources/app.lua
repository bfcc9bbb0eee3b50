-- Resource `app`: a Dokku app exists (or, with spec.absent, does not).
-- Probe with apps:exists (exit 20 = missing); create with apps:create.
local command = require "command"
local contract = require "resources.lib.contract"

local M = { type = "app", phase = contract.PHASE.objects, order = 10, from = "apps" }

-- An app that must be absent is removed after everything else.
function M.specs(app)
  if app.absent then
    return { { key = "app:" .. app.name, spec = { name = app.name, absent = true }, phase = contract.PHASE.removal } }
  end
  return { { key = "app:" .. app.name, spec = { name = app.name } } }
end

function M.locks(spec)
  return { spec.name }
end

-- apps:create makes the app; the removal of an app that must be absent creates nothing.
function M.creates(spec)
  return not spec.absent
end

-- Deprovisioning destroys the apps last, the main app last of all.
M.teardown = { order = 30, reverse = true }

function M.exists(current)
  return (current and current.exists) == true
end

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

-- The sweep: `apps:list` names every app (apps:exists exits 0 exactly for those).
M.bulk = {
  reports = { "apps" },
  current = function(spec, r)
    if not r.apps then
      return nil
    end
    return { exists = r.apps[spec.name] == true }
  end,
}

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
