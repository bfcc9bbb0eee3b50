-- Dokku's all-apps answers, read once for many instances (the drift sweep,
-- lua/reconcile.lua) instead of one probe per app: a resource module with
-- `M.bulk` (resources/lib/contract.lua) names the reports below it reads
-- and turns them into exactly what its `M.probe` answers for one app.
--
-- Two shapes:
-- - lists (`--quiet apps:list`, `postgres:list`, `redis:list`): one name a
--   line, no header with --quiet (core:plugins/apps/subcommands.go
--   CommandList; dokku-postgres/dokku-redis subcommands/list + common-
--   functions service_list, which prints only the names with --quiet);
--   parsed into a set.
-- - reports without an app name (`apps:report`, `domains:report`,
--   `ports:report`, `ps:report`): every app's report one after the other,
--   each a block headed `=====> <app> <type> information` and one row a
--   flag, `       <Key>:<padding><value>`. Sent WITHOUT --quiet: the
--   header is dokku_log_info2_quiet / LogInfo2Quiet, which --quiet hides.
--   v0.35.20 and v0.38.27 (core:plugins/<plugin>/subcommands.go
--   CommandReport: `if len(appName) == 0 { apps := common.DokkuApps() ...
--   ReportSingleApp(app) }`; domains v0.35.20 is bash,
--   plugins/domains/internal-functions cmd-domains-report: `for app in
--   $(dokku_apps)`, rows `printf "%-30s %-25s"`). The key of a row is the
--   flag without `--`, dashes and dots as spaces, first letter upper case;
--   v0.35.20's Go reports drop the plugin's prefix when the report trims it
--   (common.go ReportSingleApp: TrimPrefix(k, "--<type>-")), v0.38.27 never
--   does in this form (common.go ReportSingleApp: TrimPrefix(k, "--")). So
--   a key is read lower-cased with a leading "<type> " removed: "Ports
--   map:" and "Map:" are both `map`, "App deploy source:" is `deploy
--   source`. A value is the rest of the row, trimmed: the per-app probes
--   read the info-flag form (the value and a newline) with patterns that
--   ignore surrounding blanks, so both give them the same words.
local M = {}

-- name → { argv, type, keep } or { argv, list = true }. `type` is the
-- report's type (the word in its header); `keep` the keys (as read below)
-- the modules' M.bulk read: only those are kept of each app's block (a
-- sweep shares its reports between runs through its job row, so they are
-- kept small); `list` = a list of names. A module reading a key not kept
-- finds nil, "cannot tell": its app is probed.
M.REPORTS = {
  apps = { argv = { "--quiet", "apps:list" }, list = true },
  postgres = { argv = { "--quiet", "postgres:list" }, list = true },
  redis = { argv = { "--quiet", "redis:list" }, list = true },
  apps_report = { argv = { "apps:report" }, type = "app", keep = { "deploy source", "deploy source metadata" } },
  domains_report = { argv = { "domains:report" }, type = "domains", keep = { "app vhosts" } },
  ports_report = { argv = { "ports:report" }, type = "ports", keep = { "map" } },
  ps_report = { argv = { "ps:report" }, type = "ps", keep = { "running" } },
  -- core:plugins/resource/subcommands.go CommandReport (the same loop in
  -- v0.35.20 and v0.38.27) → resource.go ReportSingleApp → common.go
  -- ReportSingleApp: one row a property, `_default_ limit memory` in
  -- v0.35.20 (prefix trimmed), `resource _default_ limit memory` in
  -- v0.38.27; no row at all for an app without limits (PropertyGetAll of a
  -- missing directory is an empty map, no error: the header alone).
  resource_report = { argv = { "resource:report" }, type = "resource",
                      keep = { "_default_ limit memory", "_default_ limit cpu" } },
  -- v0.35.20 plugins/checks/internal-functions cmd-checks-report (bash:
  -- `for app in $(dokku_apps)`, `printf "%-30s %-25s"`), v0.38.27
  -- plugins/checks/subcommands.go CommandReport + report.go (Go): the row
  -- `Checks disabled list:` is the property or "none" in both.
  checks_report = { argv = { "checks:report" }, type = "checks", keep = { "disabled list" } },
  -- v0.35.20 plugins/storage/internal-functions cmd-storage-report (bash,
  -- the same loop; a phase's mounts are its phase file's `-v` lines joined
  -- by spaces, the lines storage:list prints without their `-v `), v0.38.27
  -- plugins/storage/subcommands.go CommandReport + report.go (Go; storage.go
  -- GetBindMountsForDisplay: "-v " + each entry storage:list prints, same
  -- formatStorageListEntry, joined by spaces). Read: `deploy mounts`.
  storage_report = { argv = { "storage:report" }, type = "storage", keep = { "deploy mounts" } },
  -- dokku-letsencrypt command-functions cmd-letsencrypt-report (bash, the
  -- same from 0.20.4 to 0.25.1; the plugin does not change with Dokku's
  -- release): without an app every app's cmd-letsencrypt-report-single,
  -- whose row `Letsencrypt active:` is fn-letsencrypt-is-active — the
  -- function letsencrypt:active prints (same first domain, same
  -- certificate comparison).
  letsencrypt_report = { argv = { "letsencrypt:report" }, type = "letsencrypt", keep = { "active" } },
}

-- The names of a `--quiet` list: one per line; header and warning lines
-- are skipped (an empty list says so on stderr only).
function M.names(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local name = line:match("^%s*(.-)%s*$")
    if name ~= "" and not name:find("^=====>") and not name:find("^!") and name:match("^[A-Za-z0-9_.-]+$") then
      out[#out + 1] = name
    end
  end
  return out
end

local function set_of(list)
  local s = {}
  for _, n in ipairs(list) do
    s[n] = true
  end
  return s
end

-- The key of a report row, as above.
local function norm_key(key, rtype)
  key = key:lower()
  if key:sub(1, #rtype + 1) == rtype .. " " then
    key = key:sub(#rtype + 2)
  end
  return key
end

-- An all-apps report → { [app] = { [key] = value } }. Lines outside a
-- block of this type (warnings, another header) are skipped. With `keep`
-- (a list of keys) only those keys are kept.
function M.blocks(text, rtype, keep)
  local kept
  if keep then
    kept = {}
    for _, k in ipairs(keep) do
      kept[k] = true
    end
  end
  local out, cur = {}, nil
  local head = "^=====> (%S+) " .. rtype:gsub("%p", "%%%0") .. " information%s*$"
  for line in (text or ""):gmatch("[^\n]+") do
    local app = line:match(head)
    if app then
      cur = {}
      out[app] = cur
    elseif line:find("^=====>") or line:find("^%s*!") then
      cur = nil
    elseif cur then
      local key, value = line:match("^%s+([^:]+):(.*)$")
      if key then
        key = norm_key(key, rtype)
        if not kept or kept[key] then
          cur[key] = value:match("^%s*(.-)%s*$")
        end
      end
    end
  end
  return out
end

-- Parses the stdout of report `name`.
function M.parse(name, stdout)
  local r = M.REPORTS[name]
  if r.list then
    return set_of(M.names(stdout))
  end
  return M.blocks(stdout, r.type, r.keep)
end

-- What a probe of app `app` reading report `name` can be told:
-- "block", the app's rows when the report has them; "absent" when the app
-- is in neither the report nor the app list (the per-app probe would be
-- answered exit 20); nil when unknown (a report missing, or the two
-- disagree: an app created or destroyed between them), so probe the app.
function M.app_rows(reports, name, app)
  local rep = reports[name]
  if rep and rep[app] then
    return "block", rep[app]
  end
  if reports.apps and not reports.apps[app] and (rep or name == "apps") then
    return "absent"
  end
  return nil
end

-- What M.bulk.current returns when the module's probe answers nil without
-- an error (most probes, reading an app that does not exist: probe.read's
-- false becomes `return nil, err` with err nil); nil itself means "cannot
-- tell, probe the app".
M.NOTHING = setmetatable({}, {
  __name = "reports.NOTHING",
  __newindex = function() error("reports.NOTHING is constant") end,
})

-- The app does not exist by the app list.
function M.absent(reports, app)
  return reports.apps ~= nil and not reports.apps[app]
end

-- M.bulk of a module whose probe reads one row of a per-app report: row
-- `key` of the all-apps report `name`, turned into the probe's answer by
-- read(value, spec) (nil: cannot tell, probe the app); an app the list does
-- not name answers `missing` (the probe's answer for no such app; default
-- M.NOTHING).
function M.row_bulk(name, key, read, missing)
  return {
    reports = { "apps", name },
    current = function(spec, r)
      local got, rows = M.app_rows(r, name, spec.app)
      if got == "absent" then
        if missing == nil then
          return M.NOTHING
        end
        return missing
      end
      if got and rows[key] then
        return read(rows[key], spec)
      end
      return nil
    end,
  }
end

-- M.bulk of a module whose probe reads the app with probe.read and answers
-- nil for an app that does not exist (exit 20), and that has no all-apps
-- form: M.NOTHING for an app the list does not name, else nil (probed).
function M.absent_only()
  return {
    reports = { "apps" },
    current = function(spec, r)
      if M.absent(r, spec.app) then
        return M.NOTHING
      end
      return nil
    end,
  }
end

return M
