-- Per-customer hooks (SPEC §6): `HOOKS_DIR/subscription.<id>.lua` or
-- `HOOKS_DIR/account.<id>.lua` returns a table with optional functions
--   desired(state, ctx)  change the desired instance before it is planned
--                        (extra environment, domains, images, an extra app);
--                        it sees placeholders for secret values
--   after(dokku, ctx)    run extra steps after provisioning through a Dokku
--                        handle that runs only allowlisted subcommands on
--                        this instance's own apps (M.check_argv).
-- Hooks run sandboxed: an allowlisted, read-only environment (no io, os
-- beyond time, require, load, debug, string.dump, collectgarbage), and
-- bounded instructions, memory and time (src/lua/sandbox.c; the string
-- library's pattern functions count too, src/lua/strmatch.c). A hook that
-- breaks a bound fails its step with a clear error; nothing else is affected.
local desired = require "desired"
local crypto = require "mrprov.crypto"
local sandbox = require "mrprov.sandbox"
local validate = require "validate"

local M = {}

M.INSTRUCTIONS = 5000000
M.MEMORY = 8 * 1024 * 1024
-- Wall-clock seconds for one run of a hook's file or function; the Dokku
-- commands after() runs do not count (they have DOKKU_COMMAND_TIMEOUT).
M.SECONDS = 5

local function copy(t, seen)
  if type(t) ~= "table" then
    return t
  end
  seen = seen or {}
  if seen[t] then
    return seen[t]
  end
  local c = {}
  seen[t] = c
  for k, v in pairs(t) do
    c[copy(k, seen)] = copy(v, seen)
  end
  return c
end

-- A plain copy of what a hook handed back: raw reads only (no metamethod
-- runs), strings, numbers, booleans and tables, bounded in size and depth.
local function plain(v, depth, budget)
  local tv = type(v)
  if tv == "string" or tv == "number" or tv == "boolean" then
    return v
  end
  if tv ~= "table" then
    return nil
  end
  if depth > 16 then
    error("the state a hook returned is nested too deeply", 0)
  end
  local out = {}
  local k, val = next(v)
  while k ~= nil do
    budget.n = budget.n - 1
    if budget.n < 0 then
      error("the state a hook returned is too large", 0)
    end
    local pk = plain(k, depth + 1, budget)
    if pk ~= nil then
      out[pk] = plain(val, depth + 1, budget)
    end
    k, val = next(v, k)
  end
  return out
end

local function readonly(t, name)
  return setmetatable({}, {
    __index = t,
    __newindex = function() error(name .. " is read-only", 2) end,
    __metatable = false,
  })
end

-- The API a hook sees: pure functions only, each library a read-only copy.
local function api()
  local str = {}
  for k, v in pairs(string) do
    if k ~= "dump" then
      str[k] = v
    end
  end
  local function lib(src, name, over)
    local c = {}
    for k, v in pairs(src) do
      c[k] = v
    end
    for k, v in pairs(over or {}) do
      c[k] = v
    end
    return readonly(c, name)
  end
  -- table.move and table.sort loop in C, where the count hook does not
  -- fire: move runs as Lua here, sort is charged its comparisons.
  local function move(a1, f, e, t, a2)
    if type(a1) ~= "table" then error("bad argument #1 to 'move' (table expected)", 2) end
    f, e, t = math.tointeger(f), math.tointeger(e), math.tointeger(t)
    if not (f and e and t) then error("bad argument to 'move' (integers expected)", 2) end
    if a2 == nil then a2 = a1 end
    if type(a2) ~= "table" then error("bad argument #5 to 'move' (table expected)", 2) end
    if e >= f then
      if t > e or t <= f or a1 ~= a2 then
        for i = 0, e - f do a2[t + i] = a1[f + i] end
      else
        for i = e - f, 0, -1 do a2[t + i] = a1[f + i] end
      end
    end
    return a2
  end
  local function sort(t, comp)
    local n = type(t) == "table" and #t or 0
    if n > 1 then
      sandbox.charge(n * math.ceil(math.log(n, 2)))
    end
    return table.sort(t, comp)
  end
  return {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type, rawequal = rawequal,
    rawlen = rawlen,
    -- no setmetatable/getmetatable: the strings' shared metatable (the real
    -- string library) stays out of reach, and no table a hook hands back can
    -- run code when the engine reads it
    string = readonly(str, "string"), table = lib(table, "table", { move = move, sort = sort }),
    math = lib(math, "math"),
    utf8 = lib(utf8, "utf8"),
    os = readonly({ time = os.time, clock = os.clock, date = os.date }, "os"),
  }
end

local function environment()
  return setmetatable({}, {
    __index = readonly(api(), "the hook API"),
    __newindex = function(_, k) error("hooks cannot set globals (" .. tostring(k) .. ")", 2) end,
    __metatable = false,
  })
end

-- A hook file is `subscription.<id>.lua` or `account.<id>.lua`: the two
-- kinds of id share one alphabet, so a bare `<id>.lua` could be picked up by
-- a subscription whose id equals someone's account id. Returns kind, id or
-- nil, why for a file stem.
M.KINDS = { subscription = true, account = true }

function M.parse_name(stem)
  local kind, id = stem:match("^(%a+)%.(.*)$")
  if not kind then
    return nil, "a hook file is named subscription.<id>.lua or account.<id>.lua; rename this one to "
      .. "subscription." .. stem .. ".lua or account." .. stem .. ".lua after the id it is for"
  end
  if not M.KINDS[kind] then
    return nil, "a hook file is named subscription.<id>.lua or account.<id>.lua, not " .. kind .. ".<id>.lua"
  end
  if not validate.subscription_id(id) then
    return nil, "a hook is named after an account or subscription id ([A-Za-z0-9_-])"
  end
  return kind, id
end

-- Loads every hook, keyed by file stem ("subscription.<id>", "account.<id>");
-- nil, "file:line: message" on the first problem.
function M.load_dir(dir, fs)
  local names = fs.list(dir)
  local out = {}
  if not names then
    return out -- no hooks directory: no hooks
  end
  for _, name in ipairs(names) do
    local stem = name:match("^(.+)%.lua$")
    if stem then
      local path = dir .. "/" .. name
      local kind, id = M.parse_name(stem)
      if not kind then
        return nil, path .. ":1: " .. id
      end
      local src, rerr = fs.read(path)
      if not src then
        return nil, path .. ":1: " .. tostring(rerr)
      end
      local chunk, err = load(src, "@" .. path, "t", environment())
      if not chunk then
        return nil, err
      end
      local ok, hook = sandbox.run(chunk, M.INSTRUCTIONS, M.MEMORY, M.SECONDS)
      if not ok then
        return nil, (tostring(hook):match("^" .. path:gsub("%p", "%%%0") .. ":") and hook or (path .. ":1: " .. hook))
      end
      if type(hook) ~= "table" then
        return nil, path .. ":1: a hook must return a table"
      end
      for k, v in pairs(hook) do
        if k ~= "desired" and k ~= "after" and k ~= "description" then
          return nil, path .. ":1: unknown hook field " .. tostring(k) .. " (desired, after, description)"
        end
        if k ~= "description" and type(v) ~= "function" then
          return nil, path .. ":1: hook field " .. k .. " must be a function"
        end
      end
      out[stem] = { id = id, kind = kind, file = path, desired = hook.desired, after = hook.after,
                    description = hook.description }
    end
  end
  return out
end

-- The hook of an instance: its subscription's, else its account's.
function M.find(hooks, inst)
  if not hooks then
    return nil
  end
  return hooks["subscription." .. inst.subscription_id]
    or (inst.account_id and hooks["account." .. inst.account_id]) or nil
end

-- A hook never sees a secret value: in its copy of the state each value of
-- an app's secret_keys is this placeholder. Placeholders in the env values it
-- hands back are replaced by the real values afterwards (and the keys holding
-- them become secret keys of their app); anywhere else (errors, domains,
-- images, after()'s commands) a placeholder stays the placeholder.
function M.placeholder(key)
  return "[secret:" .. key .. "]"
end

-- Replaces the secrets' values by placeholders in a copy of the state;
-- returns { [placeholder] = value }.
local function hide_secrets(c)
  local secrets = {}
  for _, a in ipairs(c.apps or {}) do
    for k in pairs(a.secret_keys or {}) do
      if a.env and type(a.env[k]) == "string" then
        local ph = M.placeholder(k)
        -- Two apps with one secret key name and different values would make
        -- the placeholder ambiguous.
        assert(secrets[ph] == nil or secrets[ph] == a.env[k], "two secrets named " .. k)
        secrets[ph] = a.env[k]
        a.env[k] = ph
      end
    end
  end
  return secrets
end

-- v with every placeholder replaced by its value; true when there was one.
local function reveal(v, secrets)
  local hit = false
  for ph, real in pairs(secrets or {}) do
    local i = 1
    while true do
      local a, b = v:find(ph, i, true)
      if not a then
        break
      end
      v = v:sub(1, a - 1) .. real .. v:sub(b + 1)
      i = a + #real
      hit = true
    end
  end
  return v, hit
end

-- The env a hook handed back, validated, placeholders revealed; plus the
-- keys whose values now hold a secret.
local function check_env(env, where, secrets)
  if type(env) ~= "table" then
    return nil, where .. ": env must be a table"
  end
  local out, secret = {}, {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or not validate.env_key(k) then
      return nil, where .. ": invalid environment key " .. tostring(k)
    end
    local ok, why = validate.env_value(v)
    if not ok then
      return nil, where .. ": invalid value for " .. k .. ": " .. tostring(why)
    end
    local hit
    v, hit = reveal(v, secrets)
    if hit and not validate.env_value(v) then
      return nil, where .. ": invalid value for " .. k
    end
    out[k] = v
    secret[k] = hit or nil
  end
  return out, secret
end

-- A hook's domains pass the API's rules (validate.instance_domain: nothing
-- under BASE_DOMAIN but the instance's own names); uniqueness across
-- instances is claimed in the store when the job runs (instances.claim_domains).
local function check_domains(list, where, rules, app)
  if type(list) ~= "table" then
    return nil, where .. ": domains must be a list"
  end
  local out = {}
  for i, d in ipairs(list) do
    if type(d) ~= "string" or not validate.domain(d) then
      return nil, where .. ": invalid domain " .. tostring(d)
    end
    local ok, why = validate.instance_domain(d, rules.base_domain, app)
    if not ok then
      return nil, where .. ": domain " .. d:lower() .. " " .. why
    end
    out[i] = ok
  end
  return out
end

-- Takes from the hook's copy only what a hook may change, validated.
local function merge(state, changed, secrets, rules)
  local by_name = {}
  for _, a in ipairs(state.apps) do
    by_name[a.name] = a
  end
  for _, c in ipairs(changed.apps or {}) do
    if type(c) ~= "table" or type(c.name) ~= "string" then
      return nil, "an app must be a table with a name"
    end
    local a = by_name[c.name]
    local where = "app " .. c.name
    if not a then
      local suffix = c.name:sub(#state.app + 2)
      if c.name:sub(1, #state.app + 1) ~= state.app .. "-" or not suffix:match("^[a-z0-9]+$")
          or not validate.dokku_app(c.name) then
        return nil, "an extra app must be named " .. state.app .. "-<letters and digits>, not " .. c.name
      end
      a = { name = c.name, role = "hook" }
      state.apps[#state.apps + 1] = a
      by_name[c.name] = a
    end
    if not a.absent then
      if c.env ~= nil then
        local env, secret = check_env(c.env, where, secrets)
        if not env then
          return nil, secret
        end
        if a.secret_keys then
          for k in pairs(a.secret_keys) do
            if env[k] ~= a.env[k] then
              return nil, where .. ": a hook may not change " .. k
            end
          end
        end
        a.env = env
        if next(secret) then
          a.secret_keys = a.secret_keys or {}
          for k in pairs(secret) do
            a.secret_keys[k] = true
          end
        end
      end
      if c.domains ~= nil then
        local d, err = check_domains(c.domains, where, rules, state.app)
        if not d then
          return nil, err
        end
        a.domains = d
      end
      if c.image ~= nil then
        local img = type(c.image) == "string" and validate.image(c.image)
        if not img then
          return nil, where .. ": invalid image " .. tostring(c.image)
        end
        a.image = img
      end
      if a.role == "hook" and type(c.limits) == "table" then
        local lim, lerr = validate.app_limits(c.limits.memory_mb, c.limits.cpu)
        if not lim then
          return nil, where .. ": limits: " .. lerr
        end
        a.limits = lim
      end
    end
  end
  return state
end

-- Applies hook.desired to the state; returns the new state or nil, err.
-- rules: { base_domain = BASE_DOMAIN } for the domain rules.
function M.apply_desired(hook, state, ctx, rules)
  if not hook or not hook.desired then
    return state
  end
  assert(rules and rules.base_domain, "apply_desired needs the base domain")
  local c = copy(state)
  local secrets = hide_secrets(c)
  local ok, err = sandbox.run(hook.desired, M.INSTRUCTIONS, M.MEMORY, M.SECONDS, c, copy(ctx))
  if not ok then
    return nil, hook.file .. ": desired(): " .. tostring(err)
  end
  local pok, clean = pcall(plain, c, 0, { n = 100000 })
  if not pok then
    return nil, hook.file .. ": desired(): " .. tostring(clean)
  end
  local merged, merr = merge(copy(state), clean, secrets, rules)
  if not merged then
    return nil, hook.file .. ": desired(): " .. merr
  end
  local _, derr = desired.domains(merged)
  if derr then
    return nil, hook.file .. ": desired(): " .. derr
  end
  return merged
end

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

-- An absolute path of plain characters, no "." or ".." component, no empty
-- component (a container path, and the shape of a host path).
local function plain_path(p)
  if not p:match("^/[A-Za-z0-9._/-]*$") or p:find("//", 1, true) then
    return false
  end
  for comp in p:sub(2):gmatch("[^/]+") do
    if comp == "." or comp == ".." then
      return false
    end
  end
  return true
end

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

-- Runs hook.after with a handle whose run(argv) goes through runner (the
-- worker's journaled executor) after the scope check.
function M.run_after(hook, state, ctx, runner)
  local sc = M.scope(state)
  local handle = readonly({
    run = function(argv)
      local ok, why = M.check_argv(argv, sc)
      if not ok then
        error("dokku.run refused: " .. why, 2)
      end
      local args = {}
      for i, a in ipairs(argv) do
        args[i] = a
      end
      -- the engine's journaled steps and Dokku's answer: off the hook's clock
      return sandbox.outside(runner, args, M.effects(args))
    end,
    apps = function()
      local list = {}
      for n in pairs(sc.apps) do
        list[#list + 1] = n
      end
      table.sort(list)
      return list
    end,
    -- the host directories storage:mount may use (and paths below them)
    storage = function()
      return copy(sc.storage)
    end,
  }, "the dokku handle")
  local ok, err = sandbox.run(hook.after, M.INSTRUCTIONS, M.MEMORY, M.SECONDS, handle, copy(ctx))
  if not ok then
    return nil, hook.file .. ": after(): " .. tostring(err)
  end
  return true
end

return M
