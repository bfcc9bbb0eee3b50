-- Resource `limits`: memory and CPU limits of an app's containers
-- (`resource:limit`, stored verbatim by Dokku, applied on next restart).
local command = require "command"
local probe = require "resources.probe"
local json = require "json"

local M = { type = "limits" }

local function fmt_cpu(cpu)
  return (string.format("%.3f", cpu):gsub("0+$", ""):gsub("%.$", ""))
end

local function wanted(spec)
  return { memory = string.format("%dm", spec.memory_mb), cpu = fmt_cpu(spec.cpu) }
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

function M.diff(spec, current)
  local want = wanted(spec)
  current = current or {}
  if current.memory == want.memory and current.cpu == want.cpu then
    return {}
  end
  return {
    command.new("limits", spec.app, { "resource:limit", "--memory", want.memory, "--cpu", want.cpu, spec.app }, nil,
      { restart = true }),
  }
end

function M.model(spec)
  return wanted(spec)
end

function M.undo()
  return {}
end

return M
