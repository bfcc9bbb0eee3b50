-- Resource `domains`: the virtual hosts of an app (`domains:set` replaces
-- the list and is idempotent; the report gives the current list).
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"

local M = { type = "domains", phase = contract.PHASE.settings, order = 40, from = "apps" }

-- An app with domains.
function M.specs(app)
  if app.absent or not app.domains then
    return {}
  end
  return { { key = "domains:" .. app.name, spec = { app = app.name, domains = app.domains } } }
end

function M.locks(spec)
  return { spec.app }
end

M.creates = false

local function same(a, b)
  if #a ~= #b then
    return false
  end
  local set = {}
  for _, d in ipairs(a) do
    set[d] = true
  end
  for _, d in ipairs(b) do
    if not set[d] then
      return false
    end
  end
  return true
end

local function parse(out)
  local list = {}
  for d in out:gmatch("%S+") do
    list[#list + 1] = d
  end
  return { domains = list }
end

function M.probe(run, spec)
  local out, err = probe.read(run, { "domains:report", spec.app, "--domains-app-vhosts" })
  if not out then
    return nil, err
  end
  return parse(out)
end

-- The sweep: the `Domains app vhosts` row of `domains:report` (all apps).
M.bulk = reports.row_bulk("domains_report", "app vhosts", function(v) return parse(v) end)

function M.diff(spec, current)
  if current and same(current.domains or {}, spec.domains) then
    return {}
  end
  local argv = { "domains:set", spec.app }
  for _, d in ipairs(spec.domains) do
    argv[#argv + 1] = d
  end
  return { command.new("domains", spec.app, argv) }
end

function M.model(spec)
  local list = {}
  for i, d in ipairs(spec.domains) do
    list[i] = d
  end
  return { domains = list }
end

function M.undo()
  return {}
end

return M
