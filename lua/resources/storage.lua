-- Resource `storage`: a persistent host directory mounted into an app.
-- `storage:mount` is not idempotent, so `storage:list` is read first.
local command = require "command"

local M = { type = "storage" }

local function mount_spec(spec)
  return spec.host_path .. ":" .. spec.container_path
end

function M.probe(run, spec)
  local res, err = run({ "storage:list", spec.app })
  if not res then
    return nil, err
  end
  if res.exit == 20 then
    return nil -- the app does not exist yet: nothing of this resource exists either
  end
  if res.exit ~= 0 then
    return nil, "storage:list " .. spec.app .. " exited " .. res.exit .. ": " .. res.stderr
  end
  local mounts = {}
  for line in res.stdout:gmatch("[^\n]+") do
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
