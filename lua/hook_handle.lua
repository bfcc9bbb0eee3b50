-- The Dokku handle a hook's after() gets (lua/hooks.lua): its scope (the
-- instance's own apps, their storage directories, the secret keys no
-- command may set) and the allowlist grammar every command it sends is
-- checked against before the engine journals and runs it.
local crypto = require "mrprov.crypto"
local validate = require "validate"

local M = {}

-- What a hook's Dokku handle may touch: the instance's own apps (those
-- that exist), the storage directories of its apps, the secret keys no
-- command may set.
function M.scope(state)
  local sc = { apps = {}, storage = {}, secret_keys = {} }
  for _, a in ipairs(state.apps) do
    if not a.absent then
      sc.apps[a.name] = true
      if a.storage and a.storage.host_path then
        sc.storage[#sc.storage + 1] = a.storage.host_path
      end
      for k in pairs(a.secret_keys or {}) do
        sc.secret_keys[k] = true
      end
    end
  end
  return sc
end

-- The scoped handle is an allowlist: each subcommand has its own grammar,
-- and every word of argv is checked against it. Dokku's entry script runs
-- parse_args over the whole argv (dokku+dokku v0.38.27, `dokku` and
-- plugins/common/functions parse_args): `--app X` anywhere makes X the
-- target app, `--trace` echoes every value, `--force` and `--quiet` are
-- honoured in any position, and the Go plugins take their flags anywhere too.
-- So no word may start with "-" unless the grammar names it as a flag, and
-- flags only come before the app. Refused on purpose: docker-options (the
-- Docker socket, --privileged), every global or server-wide subcommand
-- (apps:clone, nginx:*, domains:set-global, letsencrypt:cron-job), reads
-- that hand back values (config:get/show/export, postgres:info with its
-- password), domains (they belong in desired(), where they are checked),
-- and run (its output is the hook's to transform).
M.GLOBAL_FLAGS = { ["--app"] = true, ["--trace"] = true, ["--force"] = true, ["--quiet"] = true,
                   ["--global"] = true, ["--all"] = true, ["--rm"] = true, ["--version"] = true }

local plain_path = validate.plain_path

-- A plain host path under one of the instance's storage directories.
local function own_host_path(p, roots)
  if not plain_path(p) then
    return false
  end
  p = p:gsub("/$", "")
  for _, root in ipairs(roots) do
    if p == root or p:sub(1, #root + 1) == root .. "/" then
      return true
    end
  end
  return false
end

local function env_key_for_hook(k, sc)
  if not validate.env_key(k) then
    return nil, "invalid environment key " .. k
  end
  if validate.reserved_env_key(k) or sc.secret_keys[k] then
    return nil, k .. " is managed by the provisioner"
  end
  return true
end

-- Each grammar gets the words after the subcommand (flags already taken
-- off the front, as a set) and the scope; the app is the first word.
local function app_only(words, sc)
  if #words ~= 1 then
    return nil, "takes exactly one argument, the app"
  end
  return sc.apps[words[1]] and true or nil, words[1] .. " is not one of this instance's apps"
end

-- restart: the change takes effect on the app's next start; deploys: the
-- command starts the app with its current settings (journaled with the
-- step, as for the engine's commands: a resumed job reads them).
local GRAMMAR = {
  ["config:set"] = {
    restart = true,
    flags = { ["--no-restart"] = true, ["--encoded"] = true },
    check = function(words, sc, flags)
      if #words < 2 then
        return nil, "takes the app and at least one KEY=VALUE"
      end
      for i = 2, #words do
        local k, v = words[i]:match("^([^=]*)=(.*)$")
        if not k then
          return nil, "argument " .. (i + 1) .. " is not KEY=VALUE"
        end
        local ok, why = env_key_for_hook(k, sc)
        if not ok then
          return nil, why
        end
        if flags["--encoded"] then
          v = v:match("^[A-Za-z0-9+/]*=?=?$") and crypto.base64_decode(v)
          if not v then
            return nil, "the value of " .. k .. " is not base64"
          end
        end
        -- the rule a desired() env value and an API value follow (no value
        -- Dokku 0.38 would store changed, among others)
        local vok, vwhy = validate.env_value(v)
        if not vok then
          return nil, k .. ": " .. tostring(vwhy)
        end
      end
      return true
    end,
  },
  ["config:unset"] = {
    restart = true,
    flags = { ["--no-restart"] = true },
    check = function(words, sc)
      if #words < 2 then
        return nil, "takes the app and at least one KEY"
      end
      for i = 2, #words do
        local ok, why = env_key_for_hook(words[i], sc)
        if not ok then
          return nil, why
        end
      end
      return true
    end,
  },
  ["ps:restart"] = { check = app_only, deploys = true },
  ["ps:start"] = { check = app_only },
  ["ps:stop"] = { check = app_only },
  ["ps:rebuild"] = { check = app_only, deploys = true },
  ["letsencrypt:enable"] = { check = app_only },
  -- Only the colon form host:container[:ro] with the host path under one of
  -- the instance's storage directories: the named-entry form could name
  -- another instance's entry.
  ["storage:mount"] = {
    restart = true,
    check = function(words, sc)
      if #words ~= 2 then
        return nil, "takes the app and host-path:container-path"
      end
      local host, cont, opt = words[2]:match("^([^:]*):([^:]*):?([^:]*)$")
      if not host or (opt ~= "" and opt ~= "ro") then
        return nil, "the mount must be host-path:container-path[:ro]"
      end
      if not own_host_path(host, sc.storage) then
        return nil, "the host path " .. host .. " is not under this instance's storage ("
          .. (#sc.storage > 0 and table.concat(sc.storage, ", ") or "it has none") .. ")"
      end
      if not plain_path(cont) then
        return nil, "invalid container path " .. cont
      end
      return true
    end,
  },
}
GRAMMAR["storage:unmount"] = GRAMMAR["storage:mount"]

-- What an allowed command does to its app: { restart = bool, deploys = bool }.
function M.effects(argv)
  local g = GRAMMAR[argv[1]] or {}
  return { restart = g.restart or false, deploys = g.deploys or false }
end

-- Checks argv for the scoped handle; nil, why when refused.
function M.check_argv(argv, sc)
  if type(argv) ~= "table" or #argv == 0 then
    return nil, "a command is a list of strings"
  end
  for i = 1, #argv do
    if type(argv[i]) ~= "string" then
      return nil, "argument " .. i .. " is not a string"
    end
  end
  local sub = argv[1]
  if not sub:match("^[a-z0-9-]+:[a-z0-9:-]+$") then
    return nil, "the first word must be a Dokku subcommand like config:set"
  end
  local g = GRAMMAR[sub]
  if not g then
    local names = {}
    for k in pairs(GRAMMAR) do
      names[#names + 1] = k
    end
    table.sort(names)
    return nil, sub .. " is not allowed in a hook (allowed: " .. table.concat(names, ", ") .. ")"
  end
  local flags, words = {}, {}
  for i = 2, #argv do
    local a = argv[i]
    if a:sub(1, 1) == "-" then
      if M.GLOBAL_FLAGS[a:match("^[^=]*")] then
        return nil, sub .. ": " .. a .. " is a Dokku global flag and reaches beyond this command"
      end
      if not (g.flags and g.flags[a]) or #words > 0 then
        return nil, sub .. ": flag " .. a .. " is not allowed" .. (g.flags and g.flags[a] and " after the app" or "")
      end
      flags[a] = true
    else
      words[#words + 1] = a
    end
  end
  if #words == 0 then
    return nil, sub .. ": the command must name one of this instance's apps first"
  end
  if not sc.apps[words[1]] then
    return nil, sub .. ": " .. words[1] .. " is not one of this instance's apps"
  end
  local ok, why = g.check(words, sc, flags)
  if not ok then
    return nil, sub .. ": " .. why
  end
  return true
end

return M
