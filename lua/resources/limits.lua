-- Resource `limits`: memory and CPU limits of an app's containers
-- (`resource:limit`, stored verbatim by Dokku, applied on next restart).
-- A limit the desired state no longer has is removed with Dokku's value
-- `clear` (core:plugins/resource/functions.go: "clear" deletes the
-- property), so resource:report stops showing it.
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"
local json = require "json"
local validate = require "validate"

local M = { type = "limits", phase = contract.PHASE.settings, order = 20, from = "apps" }

-- An app with limits (the desired state always has them: a limit it no
-- longer has is cleared, not left as it was).
function M.specs(app)
  if app.absent or not app.limits then
    return {}
  end
  return { { key = "limits:" .. app.name, spec = { app = app.name, memory_mb = app.limits.memory_mb,
                                                   cpu = app.limits.cpu } } }
end

function M.locks(spec)
  return { spec.app }
end

M.creates = false

-- What resource:report should show: nil = no limit.
local function wanted(spec)
  return {
    memory = spec.memory_mb and string.format("%dm", spec.memory_mb) or nil,
    cpu = spec.cpu and validate.format_cpu(spec.cpu) or nil,
  }
end

function M.probe(run, spec)
  local out, err = probe.read(run, { "resource:report", spec.app, "--format", "json" })
  if not out then
    return nil, err
  end
  local report = json.decode(out)
  if type(report) ~= "table" then
    return nil, "resource:report " .. spec.app .. ": unreadable output"
  end
  local cur = {}
  for k, v in pairs(report) do
    if type(k) == "string" and k:match("_default_%.limit%.memory$") then
      cur.memory = v ~= "" and v or nil
    elseif type(k) == "string" and k:match("_default_%.limit%.cpu$") then
      cur.cpu = v ~= "" and v or nil
    end
  end
  return cur
end

-- The sweep: the all-apps `resource:report` (resources/lib/reports.lua)
-- has the same properties as the per-app --format json form, one row each
-- (`_default_ limit memory`, the dots and the plugin's prefix as reports.lua
-- reads keys); an app without limits has its header and no rows (no limit).
-- An app the list does not name is the probe's nil (exit 20).
M.bulk = {
  reports = { "apps", "resource_report" },
  current = function(spec, r)
    local got, rows = reports.app_rows(r, "resource_report", spec.app)
    if got == "absent" then
      return reports.NOTHING
    elseif got ~= "block" then
      return nil
    end
    local mem, cpu = rows["_default_ limit memory"], rows["_default_ limit cpu"]
    return { memory = mem ~= "" and mem or nil, cpu = cpu ~= "" and cpu or nil }
  end,
}

function M.diff(spec, current)
  local want = wanted(spec)
  current = current or {}
  if current.memory == want.memory and current.cpu == want.cpu then
    return {}
  end
  -- Validation keeps a cpu that formats to "0" out of the desired state;
  -- were one to get here, Docker would read it as "unlimited".
  assert(want.cpu ~= "0", "cpu limit formats to 0")
  return {
    command.new("limits", spec.app, { "resource:limit", "--memory", want.memory or "clear",
                                      "--cpu", want.cpu or "clear", spec.app }, nil, { restart = true }),
  }
end

function M.model(spec)
  return wanted(spec)
end

function M.undo()
  return {}
end

return M
