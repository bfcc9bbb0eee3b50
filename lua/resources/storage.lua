-- Resource `storage`: a persistent host directory mounted into an app.
-- `storage:mount` is not idempotent, so `storage:list` is read first.
local command = require "command"
local probe = require "resources.probe"

local M = { type = "storage" }

local function mount_spec(spec)
  return spec.host_path .. ":" .. spec.container_path
end

function M.probe(run, spec)
  local out, err = probe.read(run, { "storage:list", spec.app })
  if not out then
    return nil, err
  end
  local mounts = {}
  for line in out:gmatch("[^\n]+") do
    local m = line:match("^%s*(%S+)%s*$")
    if m then
      mounts[#mounts + 1] = m
    end
  end
  return { mounts = mounts }
end

function M.diff(spec, current)
  local want = mount_spec(spec)
  for _, m in ipairs(current and current.mounts or {}) do
    if m == want then
      return {}
    end
  end
  return {
    command.new("storage", spec.app, { "storage:ensure-directory", "--chown", spec.chown or "false", spec.dir }),
    command.new("storage", spec.app, { "storage:mount", spec.app, want }, nil, { restart = true }),
  }
end

function M.model(spec, current)
  local mounts = {}
  for _, m in ipairs(current and current.mounts or {}) do
    mounts[#mounts + 1] = m
  end
  local want = mount_spec(spec)
  for _, m in ipairs(mounts) do
    if m == want then
      return { mounts = mounts }
    end
  end
  mounts[#mounts + 1] = want
  return { mounts = mounts }
end

function M.undo()
  return {} -- data is kept on purpose: removing customer data is an operator's decision
end

return M
