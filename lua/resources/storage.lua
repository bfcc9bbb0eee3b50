-- Resource `storage`: a persistent host directory mounted into an app.
-- `storage:mount` is not idempotent, so `storage:list` is read first. A
-- mount of the same host directory or onto the same container path (or
-- onto a path in spec.owned_paths, e.g. the other Matrix server's data
-- directory) that is not the wanted one is left over from an earlier
-- desired state: it is unmounted (`storage:unmount`; the data stays).
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"

local M = { type = "storage", phase = contract.PHASE.settings, order = 30, from = "apps" }

-- An app with persistent storage.
function M.specs(app)
  local s = app.storage
  if app.absent or not s then
    return {}
  end
  return { { key = "storage:" .. app.name, spec = { app = app.name, dir = s.dir, host_path = s.host_path,
    container_path = s.container_path, chown = s.chown, owned_paths = s.owned_paths } } }
end

function M.locks(spec)
  return { spec.app }
end

M.creates = false

local function mount_spec(spec)
  return spec.host_path .. ":" .. spec.container_path
end

-- "host:container[:options]" → host, container (a host path holds no ':',
-- core:plugins/storage/functions verify_paths).
local function split(m)
  return m:match("^([^:]*):([^:]*)")
end

-- A mount read from the server goes back into an argv (`storage:unmount`)
-- only when it is made of the transport's token characters; anything else
-- is left alone (and the transport would refuse it anyway).
local function token_safe(m)
  return m:match("^[A-Za-z0-9._/=+@,-]+:[A-Za-z0-9._/=+@,-]+[A-Za-z0-9:,]*$") ~= nil
end

local function is_stale(spec, m)
  if m == mount_spec(spec) or not token_safe(m) then
    return false
  end
  local host, container = split(m)
  if host == spec.host_path or container == spec.container_path then
    return true
  end
  for _, p in ipairs(spec.owned_paths or {}) do
    if container == p then
      return true
    end
  end
  return false
end

function M.probe(run, spec)
  local out, err = probe.read(run, { "storage:list", spec.app })
  if not out then
    return nil, err
  end
  local mounts, mounted = {}, false
  for line in out:gmatch("[^\n]+") do
    local m = line:match("^%s*(%S+)%s*$")
    if m then
      mounts[#mounts + 1] = m
      mounted = mounted or m == mount_spec(spec)
    end
  end
  if not mounted then
    return { mounts = mounts, mounted = false }
  end
  -- Whether the app has an image a backup container can run from (a
  -- provision cut off before its deploy has none): the deploy source is
  -- empty until the first deploy (apps:report, core:plugins/apps, v0.35.20
  -- and v0.38.27; image.lua reads the same).
  local src, serr = probe.read(run, { "apps:report", spec.app, "--app-deploy-source" })
  if src == nil then
    return nil, serr
  end
  return { mounts = mounts, mounted = true, deployed = (src or ""):match("%S") ~= nil }
end

-- The mount is in place, and (as far as known: the journal's model does not
-- say) the app was deployed: there is data a backup can read.
function M.exists(current)
  return current ~= nil and current.mounted == true and current.deployed ~= false
end

-- The data, saved before the instance is torn down (deprovision with
-- backup_data): the app is stopped first, so that no process writes while
-- it is read (MindRoom's and Synapse's SQLite databases live there), then
-- `dokku run` starts a one-off container of the app's image with its
-- mounts and removes it afterwards (core:plugins/run/internal-functions
-- cmd-run sets DOKKU_RM_CONTAINER, v0.35.20 and v0.38.27; `--no-tty` keeps
-- stdout a plain byte stream) whose tar writes the mounted directory,
-- gzipped, to stdout, streamed into the backup file.
function M.backup(spec)
  return {
    command.new("backup", spec.app, { "ps:stop", spec.app }),
    command.new("backup", spec.app,
      { "run", "--no-tty", spec.app, "tar", "-C", spec.container_path, "-czf", "-", "." }, nil,
      { mutating = false, stream = true, stream_ext = "tar.gz" }),
  }
end

-- The sweep: the all-apps `storage:report` row `deploy mounts` is the
-- mounts storage:list prints, each as `-v <mount>`, joined by spaces
-- (resources/lib/reports.lua); anything else in it (a mount with a blank,
-- a word without its -v) and the app is probed. Once mounted, whether it
-- was deployed is apps:report's `deploy source`, all apps' read once too.
-- An app the list does not name is the probe's nil (exit 20).
M.bulk = {
  reports = { "apps", "storage_report", "apps_report" },
  current = function(spec, r)
    local got, rows = reports.app_rows(r, "storage_report", spec.app)
    if got == "absent" then
      return reports.NOTHING
    elseif got ~= "block" or rows["deploy mounts"] == nil then
      return nil
    end
    local words = {}
    for w in rows["deploy mounts"]:gmatch("%S+") do
      words[#words + 1] = w
    end
    if #words % 2 ~= 0 then
      return nil
    end
    local mounts, mounted = {}, false
    for i = 1, #words, 2 do
      if words[i] ~= "-v" then
        return nil
      end
      mounts[#mounts + 1] = words[i + 1]
      mounted = mounted or words[i + 1] == mount_spec(spec)
    end
    if not mounted then
      return { mounts = mounts, mounted = false }
    end
    local agot, arows = reports.app_rows(r, "apps_report", spec.app)
    if agot ~= "block" or arows["deploy source"] == nil then
      return nil
    end
    return { mounts = mounts, mounted = true, deployed = arows["deploy source"]:match("%S") ~= nil }
  end,
}

function M.diff(spec, current)
  local want = mount_spec(spec)
  local cmds, present = {}, false
  for _, m in ipairs(current and current.mounts or {}) do
    if m == want then
      present = true
    elseif is_stale(spec, m) then
      cmds[#cmds + 1] = command.new("storage", spec.app, { "storage:unmount", spec.app, m }, nil, { restart = true })
    end
  end
  if not present then
    -- Dokku creates the directory under its own storage root
    -- ($DOKKU_LIB_ROOT/data/storage, core:plugins/storage) and says where;
    -- mounting any other path would mount a directory nobody created.
    cmds[#cmds + 1] = command.new("storage", spec.app,
      { "storage:ensure-directory", "--chown", spec.chown or "false", spec.dir }, nil, {
        expect = { text = "Ensuring " .. spec.host_path .. " exists",
                   otherwise = "Dokku did not create " .. spec.host_path .. " (INSTANCE_DATA_BASE must be Dokku's "
                     .. "storage root, $DOKKU_LIB_ROOT/data/storage)" },
      })
    cmds[#cmds + 1] = command.new("storage", spec.app, { "storage:mount", spec.app, want }, nil, { restart = true })
  end
  return cmds
end

function M.model(spec, current)
  local want = mount_spec(spec)
  local mounts = {}
  for _, m in ipairs(current and current.mounts or {}) do
    if m ~= want and not is_stale(spec, m) then
      mounts[#mounts + 1] = m
    end
  end
  mounts[#mounts + 1] = want
  return { mounts = mounts, mounted = true }
end

function M.undo()
  return {} -- data is kept on purpose: removing customer data is an operator's decision
end

return M
