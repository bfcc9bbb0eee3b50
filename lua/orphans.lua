-- Orphans (issue 15 item 4): Dokku apps and services named like an
-- instance's objects that belong to no instance in the store, listed by the
-- drift sweep (lua/reconcile.lua) and never destroyed.
local dokku = require "mrprov.dokku"
local executor = require "executor"
local json = require "json"
local redact_text = require "redact"
local reports = require "resources.lib.reports"

local M = {}

-- The Dokku objects an instance owns are its app name and these suffixes
-- (lua/desired.lua names; the mindroom profile's homeserver is -matrix).
M.SUFFIXES = { "", "-backend", "-frontend", "-matrix", "-db", "-redis" }

-- The instance app name a Dokku object's name belongs to by the naming
-- scheme (mr-<1-8 [a-z0-9]>-<8 [a-z0-9]> plus one of M.SUFFIXES), or nil.
function M.owner_of(name)
  local base, rest = name:match("^(mr%-[a-z0-9]+%-[a-z0-9]+)(.*)$")
  if not base then
    return nil
  end
  local prefix, suffix = base:match("^mr%-([a-z0-9]+)%-([a-z0-9]+)$")
  if #prefix > 8 then
    return nil
  end
  -- the suffix is 8 characters; a longer run of [a-z0-9] cannot be one
  if #suffix ~= 8 then
    return nil
  end
  for _, s in ipairs(M.SUFFIXES) do
    if rest == s then
      return base
    end
  end
  return nil
end

-- The names of a `dokku --quiet apps:list` / `postgres:list` /
-- `redis:list` answer: one per line; with --quiet no header (`=====> ...`)
-- is printed (core:plugins/apps/subcommands/list, dokku-postgres
-- subcommands/list; tests/fixtures/dokku-sim models both), and an empty
-- list says so on stderr only. Header and warning lines are skipped anyway.
function M.parse_list(text)
  return reports.names(text)
end

-- Orphans among listed names: those following the naming scheme whose
-- instance app name is not owned (owned[app_name] = true).
function M.orphans_of(names, owned)
  local out = json.array()
  for _, n in ipairs(names) do
    local base = M.owner_of(n)
    if base and not owned[base] then
      out[#out + 1] = n
    end
  end
  table.sort(out)
  return out
end

local LISTS = { { kind = "app", argv = { "apps:list" } }, { kind = "postgres", argv = { "postgres:list" } },
                { kind = "redis", argv = { "redis:list" } } }

-- Lists Dokku's apps and services on Dokku host `host` (nil: the implicit
-- one) and picks the orphans: { app = [...], postgres = [...], redis =
-- [...] }, and the errors met.
function M.find(owned, host)
  local out, errors = {}, {}
  if dokku.mode() == "dry-run" then
    for _, l in ipairs(LISTS) do out[l.kind] = json.array() end
    return out, errors
  end
  local calls = {}
  for i, l in ipairs(LISTS) do
    calls[i] = { argv = { "--quiet", table.unpack(l.argv) }, timeout = math.min(60, executor.timeout()), host = host }
  end
  for i, res in ipairs(dokku.run_many(calls)) do
    local l = LISTS[i]
    local ok = res.ok
    if ok and ok.exit == 0 then
      out[l.kind] = M.orphans_of(M.parse_list(ok.stdout), owned)
    else
      out[l.kind] = json.array()
      local why = ok and ("exited " .. ok.exit .. ": " .. (ok.stderr or "")) or tostring(res.error)
      errors[#errors + 1] = { error = "dokku " .. table.concat(l.argv, " ") .. ": " .. redact_text.credentials(why) }
    end
  end
  return out, errors
end

return M
