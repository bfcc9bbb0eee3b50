-- Resource `processes`: whether an app's processes run. An instance that is
-- stopped or suspended (spec.stopped, lua/lifecycle.lua) keeps every object
-- and all its data; only its apps' processes are stopped, and this resource
-- is the desired-state flag's place in a plan, so a later update or a
-- sweep never starts such an app by accident and a start plans only what
-- is missing.
--
-- Dokku (core:plugins/ps/ps.go Stop/Start/Restart and report.go, v0.35.20
-- and v0.38.27 alike):
-- - `ps:report APP --running` prints true, false or mixed (the
--   scheduler-app-status trigger over the app's containers; false when
--   none runs or the app has none); exit 20 when the app does not exist.
-- - `ps:stop APP` stops the containers (scheduler-stop) and marks the app
--   not to be restored on boot (post-stop: DOKKU_APP_RESTORE=0 in
--   v0.35.20, the ps property restore=false in v0.38.27); a config change
--   then restarts nothing (plugins/config config.go: restart only while
--   restore is true). Nothing is removed.
-- - `ps:start APP` releases and deploys the app when it is not running
--   (mixed or false), which applies settings changed meanwhile; "already
--   running" otherwise.
-- - `ps:restart APP` deploys the app's current image again (the deploy
--   trigger), which starts it whether or not it ran.
-- - A deploy (git:from-image, git:from-archive, ps:rebuild) starts the app
--   whatever ps:stop did (core-post-deploy sets restore again). So the
--   image resource plans no deploy for a stopped instance (resources/
--   image.lua): a changed image or build context is recorded and deployed
--   by the start. Should a plan deploy a stopped app anyway, `stale` says
--   it runs, and the plan stops it again right after.
--
-- Order: the homeserver (role `matrix`, which the other apps need) starts
-- first and stops last. Starting (or restarting), its entry is in phase
-- `needed`, before the other apps' settings and deploys (a start that
-- deploys a change recorded while stopped starts MindRoom with that
-- deploy); stopping, it is in the second slot of phase `run`, after the
-- others. Every `processes` step locks all of the instance's apps, so the
-- steps run one after another in plan order.
--
-- restart: a restart job puts its job id in the desired state
-- (state.restart_token); the app is restarted once for it (`ps:restart`),
-- and the journal's model remembers the token (M.recall), so a restart
-- job resumed after a crash does not restart an app again.
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"

local M = { type = "processes", phase = contract.PHASE.run, order = 10, from = "apps" }

-- The roles the other apps need: started first, stopped last.
M.STARTS_FIRST = { matrix = true }

-- Apps with an image run (an app without one is never deployed: nothing
-- to start or stop).
local function runs(app)
  return not app.absent and app.image ~= nil
end

function M.specs(app, state)
  if not runs(app) then
    return {}
  end
  local stopped = state.stopped == true
  local apps = {}
  for _, a in ipairs(state.apps or {}) do
    if runs(a) then
      apps[#apps + 1] = a.name
    end
  end
  local first = M.STARTS_FIRST[app.role] == true
  return { {
    key = "processes:" .. app.name,
    spec = { app = app.name, running = not stopped, apps = apps,
             restart = (not stopped) and state.restart_token or nil },
    -- starting: the homeserver before the others deploy; stopping: last
    phase = (first and not stopped) and contract.PHASE.needed or (contract.PHASE.run + (first and 1 or 0)),
  } }
end

-- Every app of the instance: its starts and stops run one at a time, in plan order.
function M.locks(spec)
  return spec.apps
end

M.creates = false

function M.probe(run, spec)
  local out, err = probe.read(run, { "ps:report", spec.app, "--running" })
  if not out then
    return out, err
  end
  return { running = out:match("^%s*(%S+)%s*$") or "false" }
end

-- The sweep: the `Running` row of `ps:report` (all apps).
M.bulk = reports.row_bulk("ps_report", "running", function(v)
  return { running = v:match("^%s*(%S+)%s*$") or "false" }
end, false) -- the probe's false: no such app

-- The restart token this resource last restarted the app for (a probe
-- cannot see it).
function M.recall(current, recorded)
  if current and type(recorded) == "table" and recorded.restarted then
    current.restarted = recorded.restarted
  end
  return current
end

-- A plan that deploys the app before this resource starts it (a deploy
-- starts the app and is a restart too).
function M.stale(current, changed)
  if changed.image then
    return { running = "true", deployed = true, restarted = current and current.restarted or nil }
  end
  return current
end

function M.diff(spec, current)
  if current == false then
    return {} -- the app does not exist (yet): nothing runs
  end
  -- nil: nothing known (dry-run, an instance older than this resource):
  -- deployed apps run
  local state = current and current.running or "true"
  if not spec.running then
    if state == "false" then
      return {}
    end
    return { command.new("processes", spec.app, { "ps:stop", spec.app }) }
  end
  if spec.restart and not (current and (current.deployed or current.restarted == spec.restart)) then
    return { command.new("processes", spec.app, { "ps:restart", spec.app }, nil, { deploys = true }) }
  end
  if state ~= "true" then
    return { command.new("processes", spec.app, { "ps:start", spec.app }, nil, { deploys = true }) }
  end
  return {}
end

function M.model(spec, current)
  return { running = spec.running and "true" or "false",
           restarted = spec.restart or (current and current.restarted) or nil }
end

-- The app's removal takes it along.
function M.undo()
  return {}
end

return M
