-- Resource `zero_downtime`: Dokku's zero-downtime deploys off for an app whose persistent
-- storage must never be used by two containers at once (issue 14): an app
-- with `seed_config` (its start rewrites the config file the running
-- container reads and the dashboard writes) or `exclusive_storage = true`.
--
-- With checks enabled (Dokku's default) a deploy or ps:restart starts the
-- new container, runs the checks against it and only then schedules the old
-- one's retirement (DOKKU_WAIT_TO_RETIRE, default 60 s): both run on the
-- same storage meanwhile (core:plugins/scheduler-docker-local/bin/
-- scheduler-deploy-process-container, v0.35.20 lines 94-104, v0.38.27 lines
-- 97-107). With `checks:disable APP` (all process types, "_all_") the deploy
-- first stops every running container of the process type and only then
-- starts the new one (bin/scheduler-deploy-process lines 15-30 in both
-- versions: "Zero downtime is disabled, stopping currently running
-- containers"). The price is a short outage on every deploy and restart,
-- which such an app has anyway on a restart of a single container.
-- Stored as the app's DOKKU_CHECKS_DISABLED variable in v0.35.20
-- (core:plugins/checks/subcommands/disable, config_set --no-restart) and
-- the checks property "disabled" in v0.38.27; `checks:report APP
-- --checks-disabled-list` reads either ("none" when unset).
-- Other apps are left as they are (nothing planned, nothing probed).
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"

-- before the deploy (image, 60), which reads the setting
local M = { type = "zero_downtime", phase = contract.PHASE.settings, order = 55, from = "apps" }

function M.specs(app)
  if app.absent or not (app.seed_config or app.exclusive_storage) then
    return {}
  end
  return { { key = "zero_downtime:" .. app.name, spec = { app = app.name, disabled = "_all_" } } }
end

function M.locks(spec)
  return { spec.app }
end

M.creates = false

function M.probe(run, spec)
  local out, err = probe.read(run, { "checks:report", spec.app, "--checks-disabled-list" })
  if not out then
    return nil, err
  end
  return { disabled = out:match("^%s*(%S+)%s*$") or "none" }
end

-- Read by the next deploy or restart: nothing to restart now.
-- The sweep: false for an app the list does not name (checks:report's exit
-- 20); an existing app is probed.
M.bulk = reports.row_bulk("checks_report", "disabled list", function(v)
  return { disabled = v:match("^%s*(%S+)%s*$") or "none" }
end)

function M.diff(spec, current)
  if current and current.disabled == spec.disabled then
    return {}
  end
  return { command.new("zero_downtime", spec.app, { "checks:disable", spec.app }) }
end

function M.model(spec)
  return { disabled = spec.disabled }
end

-- The app's removal takes it along.
function M.undo()
  return {}
end

return M
