-- The contract of a resource module. Every file lua/resources/<type>.lua is
-- one resource type and exports all the engine needs to know about it; the
-- engine loads whatever files are there (lua/engine.lua) and names none.
-- Helpers shared by resource modules live in lua/resources/lib/.
--
-- Required:
--   M.type              the file's base name ("storage" for storage.lua)
--   M.phase             where its resources go in a plan (M.PHASE below)
--   M.order             its place within a phase, among the resources of one
--                       app or service (lower first)
--   M.from              the part of the desired state it derives specs from:
--                       "apps" or "services"
--   M.specs(item, state) → { {key = "...", spec = {...} [, phase = n]}, ... }:
--                       its resources for one app or service of the desired
--                       state (none, one or several); spec.app or spec.name
--                       is the object the resource belongs to (its target)
--   M.locks(spec)       → the objects its commands touch; commands on the
--                       same object never run at once
--   M.creates           true, false or function(spec) → boolean: diff(spec,
--                       nil) creates an object, which a failed provision
--                       removes again with undo(spec)
--   M.probe(run, spec)  → current state, false when its app does not exist
--                       yet, or nil, err (read-only commands through run)
--   M.diff(spec, current) → commands (lua/command.lua) that make current
--                       into spec; none when it is. A command that takes
--                       effect on the app's next start carries
--                       `restart = true`, one that (re)deploys it
--                       `deploys = true`: both are journaled with the step,
--                       and a resumed job reads them from there
--   M.model(spec, current, commands) → the state after the commands ran (the
--                       dry-run view of the server; digests, never secrets)
--   M.undo(spec)        → commands that remove it (none when its app's
--                       removal takes it along)
-- Optional:
--   M.teardown          { order = n [, reverse = true] }: deprovisioning
--                       removes its objects (undo), in ascending order among
--                       modules, each module's in desired order (reversed
--                       with reverse); requires M.exists(current) → whether
--                       the object is there
--   M.backup(spec)      → commands that save its data before a teardown
--                       (needs M.exists: only what exists is saved)
--                       (stream = true: stdout goes to a file)
--   M.restart(app)      → commands that start the app again: a resource
--                       with it runs the app, so a change marked `restart`
--                       on that app is followed by these unless the plan
--                       deploys it anyway
--   M.stale(current, changed) → the current state to plan against, given
--                       the set of resource types this plan changes on the
--                       same object before it (changed[type] = true)
--   M.recall(current, recorded) → current completed from the journal's
--                       model of the resource (what a probe cannot see)
--   M.bulk              { reports = { name, ... }, current = function(spec,
--                       reports) }: how the drift sweep learns the current
--                       state of many apps at once. `reports` names the
--                       all-apps reports it reads (resources/lib/reports.lua
--                       M.REPORTS: each is one read-only command for every
--                       app, sent once per sweep run); current(spec, reports)
--                       gets them parsed (reports[name], nil when that
--                       command failed) and returns exactly what
--                       M.probe(run, spec) would return for spec now
--                       (reports.NOTHING for its nil without an error), or
--                       nil when they cannot tell (then M.probe runs). A job
--                       never uses it: jobs probe each app (M.probe).
--                       Optional bulk.probe(run, spec, reports): what runs
--                       instead of M.probe when current answered nil, the
--                       same answer with fewer commands (what the reports
--                       told is not read again).
local reports = require "resources.lib.reports"

local M = {}

-- Phases, in plan order. Resources of one phase are grouped by the app or
-- service they derive from (apps before services, each in desired order),
-- then ordered by M.order.
M.PHASE = {
  objects = 10, -- apps and services exist
  links = 20, -- services are linked to apps
  settings = 30, -- each app's settings, its deploy, then what needs a deployed app
  needed = 25, -- apps the others need (a homeserver) are started before the others deploy
  run = 80, -- apps run, or are kept stopped, as the instance's desired state says
  removal = 90, -- what must be absent goes last
}

M.FROM = { apps = 1, services = 2 }

local REQUIRED_FUNCTIONS = { "specs", "locks", "probe", "diff", "model", "undo" }
local OPTIONAL_FUNCTIONS = { "exists", "backup", "restart", "stale", "recall" }

-- nil, why when mod (loaded from <name>.lua) does not keep the contract.
function M.check(mod, name)
  if type(mod) ~= "table" then
    return nil, "a resource module returns a table (the module), not " .. type(mod)
  end
  if mod.type ~= name then
    return nil, "M.type must be " .. string.format("%q", name) .. " (the file's name), not " .. tostring(mod.type)
  end
  if math.type(mod.phase) ~= "integer" then
    return nil, "M.phase must be an integer (resources.lib.contract.PHASE)"
  end
  if type(mod.order) ~= "number" then
    return nil, "M.order must be a number (its place within its phase)"
  end
  if not M.FROM[mod.from] then
    return nil, "M.from must be \"apps\" or \"services\" (what it derives its specs from)"
  end
  for _, f in ipairs(REQUIRED_FUNCTIONS) do
    if type(mod[f]) ~= "function" then
      return nil, "M." .. f .. " must be a function"
    end
  end
  if type(mod.creates) ~= "boolean" and type(mod.creates) ~= "function" then
    return nil, "M.creates must be true, false or a function(spec)"
  end
  for _, f in ipairs(OPTIONAL_FUNCTIONS) do
    if mod[f] ~= nil and type(mod[f]) ~= "function" then
      return nil, "M." .. f .. " must be a function when present"
    end
  end
  local td = mod.teardown
  if td ~= nil then
    if type(td) ~= "table" or type(td.order) ~= "number" then
      return nil, "M.teardown must be { order = n [, reverse = true] } when present"
    end
    if type(mod.exists) ~= "function" then
      return nil, "M.exists must be a function: M.teardown removes only objects that exist"
    end
  end
  local bulk = mod.bulk
  if bulk ~= nil then
    if type(bulk) ~= "table" or type(bulk.current) ~= "function" or type(bulk.reports) ~= "table"
        or #bulk.reports == 0 then
      return nil, "M.bulk must be { reports = { name, ... }, current = function(spec, reports) } when present"
    end
    if bulk.probe ~= nil and type(bulk.probe) ~= "function" then
      return nil, "M.bulk.probe must be a function(run, spec, reports) when present"
    end
    for _, n in ipairs(bulk.reports) do
      if not reports.REPORTS[n] then
        return nil, "M.bulk.reports: " .. tostring(n) .. " is not a report of resources/lib/reports.lua"
      end
    end
  end
  if mod.backup and type(mod.exists) ~= "function" then
    return nil, "M.backup needs M.exists: a backup is taken of what exists"
  end
  return true
end

return M
