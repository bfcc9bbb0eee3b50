-- Resource `letsencrypt`: TLS for an app with a domain. `letsencrypt:active`
-- always exits 0 and prints true/false; `enable` re-issues on every call
-- (rate limits), so it is only sent when not active.
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"

local M = { type = "letsencrypt", phase = contract.PHASE.settings, order = 70, from = "apps" }

-- TLS for an app that has domains: last, it needs the deployed app, one
-- "accessible over the internet" (dokku-letsencrypt v0.8.7 README.md line
-- 5): not while the instance is stopped (state.stopped); the start issues it.
function M.specs(app, state)
  if app.absent or not (app.letsencrypt and app.domains) or (state and state.stopped) then
    return {}
  end
  return { { key = "letsencrypt:" .. app.name, spec = { app = app.name, email = app.letsencrypt.email } } }
end

function M.locks(spec)
  return { spec.app }
end

M.creates = false

-- An app whose domains this plan changes: its certificate no longer covers
-- them, whatever letsencrypt:active said before domains:set ran (it
-- compares the installed certificate with lego's for the first domain at
-- probe time, le:internal-functions fn-letsencrypt-is-active).
function M.stale(current, changed)
  if changed.domains then
    return { active = false }
  end
  return current
end

function M.probe(run, spec)
  local out, err = probe.read(run, { "letsencrypt:active", spec.app })
  if not out then
    return nil, err
  end
  return { active = out:match("^%s*true%s*$") ~= nil }
end

-- The sweep: whether the certificate is active compares the installed one
-- with lego's for the app's first domain (le:internal-functions
-- fn-letsencrypt-is-active), which letsencrypt:list does not; the all-apps
-- `letsencrypt:report` runs that same function for every app (its row
-- `active`, resources/lib/reports.lua). An app the list does not name is
-- the probe's nil (exit 20).
M.bulk = reports.row_bulk("letsencrypt_report", "active", function(v)
  return { active = v:match("^%s*true%s*$") ~= nil }
end)

function M.diff(spec, current)
  if current and current.active then
    return {}
  end
  local cmds = {}
  if spec.email then
    cmds[#cmds + 1] = command.new("letsencrypt", spec.app, { "letsencrypt:set", spec.app, "email", spec.email })
  end
  cmds[#cmds + 1] = command.new("letsencrypt", spec.app, { "letsencrypt:enable", spec.app })
  return cmds
end

function M.model()
  return { active = true }
end

function M.undo()
  return {}
end

return M
