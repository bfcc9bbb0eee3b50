-- Resource `ports`: the proxy port map of an app. Dokku maps each port an
-- image EXPOSEs as http:P:P (core:plugins/builder-dockerfile
-- fn-builder-dockerfile-get-detect-port-map), so nginx would serve the app
-- on host port P, not 80, and letsencrypt adds https:443 only next to an
-- http:80 mapping (core:plugins/ports/triggers.go TriggerPostCertsUpdate).
-- So the map is set to http:80:<container port>; an https:443 mapping that
-- a certificate added is kept (pointed at the same container port).
-- `ports:set` and `ports:report --ports-map` exist alike in v0.35.20 and
-- v0.38.27 (core:plugins/ports/subcommands.go, report.go).
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"

local M = { type = "ports", phase = contract.PHASE.settings, order = 50, from = "apps" }

-- An app whose server listens on a known container port.
function M.specs(app)
  if app.absent or not app.container_port then
    return {}
  end
  return { { key = "ports:" .. app.name, spec = { app = app.name, container_port = app.container_port } } }
end

function M.locks(spec)
  return { spec.app }
end

M.creates = false

local function parse(out)
  local map = {}
  for m in out:gmatch("%S+") do
    map[#map + 1] = m
  end
  return { map = map }
end

function M.probe(run, spec)
  local out, err = probe.read(run, { "ports:report", spec.app, "--ports-map" })
  if not out then
    return nil, err
  end
  return parse(out)
end

-- The sweep: the `Ports map` row of `ports:report` (all apps; see
-- resources/lib/reports.lua for the key in both versions).
M.bulk = reports.row_bulk("ports_report", "map", function(v) return parse(v) end)

-- The map wanted given the current one: http:80:P, plus https:443:P when
-- a certificate's https mapping is there.
local function wanted(spec, current)
  local p = math.tointeger(spec.container_port)
  local want = { "http:80:" .. p }
  for _, m in ipairs(current and current.map or {}) do
    if m:find("^https:443:") then
      want[#want + 1] = "https:443:" .. p
      break
    end
  end
  return want
end

local function same_set(a, b)
  if #a ~= #b then
    return false
  end
  local set = {}
  for _, m in ipairs(a) do
    set[m] = true
  end
  for _, m in ipairs(b) do
    if not set[m] then
      return false
    end
  end
  return true
end

function M.diff(spec, current)
  local want = wanted(spec, current)
  if current and same_set(current.map or {}, want) then
    return {}
  end
  local argv = { "ports:set", spec.app }
  for _, m in ipairs(want) do
    argv[#argv + 1] = m
  end
  return { command.new("ports", spec.app, argv) }
end

function M.model(spec, current)
  return { map = wanted(spec, current) }
end

function M.undo()
  return {}
end

return M
