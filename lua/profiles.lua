-- Loads the instance layouts (PROFILES_DIR/*.lua, SPEC §4): each file
-- returns { description = "...", build = function(ctx) ... end }, where
-- build returns the apps, services and links of one instance (see
-- profiles/split.lua for the context it gets). Files load like tier files:
-- the generation's in-memory copy, a fresh pure environment per file, the
-- top level and every later build() run through the one `run` boot.lua
-- gives (the C sandbox in the service: bounded instructions, memory, time).
-- Every error is `file:line: message`. lua/desired.lua calls build() and
-- checks what it returns.
local validate = require "validate"

local M = {}

local FIELDS = { description = true, build = true }

-- What a profile may use: pure functions, no I/O, no randomness, no
-- metatables (a table it hands back cannot run code when it is read), no
-- globals to set (a build() must not leave state for the next instance).
local function environment()
  local m, s, t = {}, {}, {}
  for k, v in pairs(math) do m[k] = v end
  m.random, m.randomseed = nil, nil
  for k, v in pairs(string) do
    if k ~= "dump" then s[k] = v end
  end
  for _, k in ipairs({ "concat", "insert", "remove", "unpack" }) do t[k] = table[k] end
  local api = {
    math = m, string = s, table = t, ipairs = ipairs, pairs = pairs, next = next, select = select,
    tostring = tostring, tonumber = tonumber, type = type, error = error, assert = assert,
  }
  return setmetatable({}, {
    __index = api,
    __newindex = function(_, k) error("a profile cannot set globals (" .. tostring(k) .. ")", 2) end,
    __metatable = false,
  })
end

-- A message of a run that failed: as `path:line: ...` (Lua's own errors
-- already are; a broken bound is not).
local function located(path, line, msg)
  msg = tostring(msg)
  if msg:sub(1, #path + 1) == path .. ":" then return msg end
  return ("%s:%d: %s"):format(path, line or 1, msg)
end
M.located = located

local function load_file(path, src, run)
  local fn, err = load(src, "@" .. path, "t", environment())
  if not fn then return nil, err end
  local ok, value = run(fn)
  if not ok then return nil, located(path, 1, value) end
  if type(value) ~= "table" then return nil, path .. ":1: a profile must return a table" end
  for k in pairs(value) do
    if not FIELDS[k] then
      return nil, ("%s:1: unknown profile field '%s' (build, description)"):format(path, tostring(k))
    end
  end
  if type(value.build) ~= "function" then
    return nil, path .. ":1: a profile must return a table with build = function(ctx)"
  end
  if value.description ~= nil and type(value.description) ~= "string" then
    return nil, path .. ":1: description must be text"
  end
  -- Where build is defined: the line an error in what it returns points at.
  local line = 1
  if debug and debug.getinfo then line = debug.getinfo(value.build, "S").linedefined end
  return { build = value.build, description = value.description, line = line }
end

-- load_dir(dir, fs) → { [name] = profile }, or nil, "file:line: message".
-- fs as lua/tiers.lua's: list, read, and run(fn, ...) → true, results... |
-- false, message (required: profiles run only bounded).
-- A profile: { name, file, line, description, build = function(ctx) → ok, value }.
function M.load_dir(dir, fs)
  assert(fs.run, "profiles.load_dir needs fs.run (the sandbox)")
  dir = dir:gsub("/+$", "")
  local names, lerr = fs.list(dir)
  if not names then return nil, ("%s: cannot list profiles: %s"):format(dir, tostring(lerr)) end
  local out = {}
  for _, f in ipairs(names) do
    local base = f:match("^(.+)%.lua$")
    if base then
      local path = dir .. "/" .. f
      if not validate.tier_name(base) then
        return nil, path .. ":1: a profile is named <name>.lua, name 1-32 characters of a-z 0-9 _ -, "
          .. "starting with a letter"
      end
      local src, rerr = fs.read(path)
      if not src then return nil, ("%s:1: cannot read: %s"):format(path, tostring(rerr)) end
      local p, err = load_file(path, src, fs.run)
      if not p then return nil, err end
      local raw, run = p.build, fs.run
      out[base] = {
        name = base, file = path, line = p.line, description = p.description,
        build = function(ctx) return run(raw, ctx) end,
      }
    end
  end
  if next(out) == nil then return nil, dir .. ": no profile files (*.lua)" end
  return out
end

-- Running build() ----------------------------------------------------------

-- Where a profile's build() answer is wrong: its file and the line build is defined on.
function M.where(profile)
  return ("%s:%d"):format(profile.file, profile.line or 1)
end

-- secrets(values) → { markers = { [name] = marker }, by_marker = { [marker] = value } }:
-- what a profile gets instead of the secrets' values. A marker is an opaque
-- table (no text of it holds the value; joining it to text is an error), so
-- no string a request sends can stand for it.
function M.secrets(values)
  local out = { markers = {}, by_marker = {} }
  for name, value in pairs(values) do
    local marker = setmetatable({}, {
      __newindex = function() error("a secret marker is read-only", 2) end,
      __metatable = false,
    })
    out.markers[name] = marker
    out.by_marker[marker] = value
  end
  return out
end

local APP_FIELDS = {
  name = true, role = true, absent = true, image = true, container_port = true, env = true,
  env_owned_prefixes = true, limits = true, domains = true, storage = true, letsencrypt = true,
  matrix_type = true, health = true,
}
local STORAGE_FIELDS = { dir = true, host_path = true, container_path = true, chown = true, owned_paths = true }
local SERVICE_FIELDS = { kind = true, name = true, links = true }
local SERVICE_KINDS = { postgres = true, redis = true }

local is_list, plain_path = validate.is_list, validate.plain_path

-- The checks of one answer; each raises { message } (caught in M.run).
local function checker(rules)
  local function fail(fmt, ...)
    error({ message = fmt:format(...) }, 0)
  end
  local function fields(t, allowed, what)
    if type(t) ~= "table" then fail("%s must be a table", what) end
    for k in pairs(t) do
      if not allowed[k] then fail("%s: unknown field '%s'", what, tostring(k)) end
    end
  end
  local function own_name(name, ok, what)
    if not ok or (name ~= rules.app and name:sub(1, #rules.app + 1) ~= rules.app .. "-") then
      fail("%s: name %q must be %s or %s-<name>", what, tostring(name), rules.app, rules.app)
    end
  end
  local function list_of(v, what, check)
    if not is_list(v) then fail("%s must be a list", what) end
    local out = {}
    for i, x in ipairs(v) do
      if not check(x) then fail("%s: invalid entry %q", what, tostring(x)) end
      out[i] = x
    end
    return out
  end

  local function env_of(env, what)
    if type(env) ~= "table" then fail("%s: env must be a table", what) end
    local out, secret = {}, nil
    for k, v in pairs(env) do
      if not validate.env_key(k) then fail("%s: invalid environment key %q", what, tostring(k)) end
      local real = rules.secrets.by_marker[v]
      if real ~= nil then
        out[k] = real
        secret = secret or {}
        secret[k] = true
      elseif type(v) ~= "string" or v:find("\0", 1, true) then
        fail("%s: env %s must be text without NUL (or a ctx.secrets marker)", what, k)
      else
        out[k] = v
      end
    end
    return out, secret
  end

  local function storage_of(s, what)
    fields(s, STORAGE_FIELDS, what .. ": storage")
    if not validate.service_name(s.dir) then fail("%s: storage.dir must be a directory name", what) end
    -- storage:ensure-directory creates <INSTANCE_DATA_BASE>/<dir>: the mount is of that
    if s.host_path ~= rules.data_base .. "/" .. s.dir then
      fail("%s: storage.host_path must be %s/%s", what, rules.data_base, s.dir)
    end
    if not plain_path(s.container_path) then fail("%s: storage.container_path must be a plain absolute path", what) end
    if s.chown ~= nil and (type(s.chown) ~= "string" or not s.chown:match("^[a-z]+$")) then
      fail("%s: storage.chown must be a word", what)
    end
    local out = { dir = s.dir, host_path = s.host_path, container_path = s.container_path, chown = s.chown }
    if s.owned_paths ~= nil then
      out.owned_paths = list_of(s.owned_paths, what .. ": storage.owned_paths", plain_path)
    end
    return out
  end

  local function app_of(a, i, seen)
    local what = "app " .. i
    fields(a, APP_FIELDS, what)
    own_name(a.name, type(a.name) == "string" and validate.dokku_app(a.name), what)
    what = "app " .. a.name
    if seen[a.name] then fail("%s: named twice", what) end
    if type(a.role) ~= "string" or not a.role:match("^[a-z][a-z0-9_-]*$") or #a.role > 32 then
      fail("%s: role must be a word of a-z 0-9 _ -", what)
    end
    if a.absent ~= nil and type(a.absent) ~= "boolean" then fail("%s: absent must be true or false", what) end
    if a.absent then
      for k in pairs(a) do
        if k ~= "name" and k ~= "role" and k ~= "absent" then
          fail("%s: an absent app has only name and role", what)
        end
      end
      return { name = a.name, role = a.role, absent = true }
    end
    local out = { name = a.name, role = a.role }
    if a.image ~= nil then
      if not validate.image(a.image) then fail("%s: invalid image %q", what, tostring(a.image)) end
      out.image = a.image
    end
    if a.container_port ~= nil then
      local p = math.tointeger(a.container_port)
      if not p or p < 1 or p > 65535 then fail("%s: container_port must be a port number", what) end
      out.container_port = p
    end
    if a.env ~= nil then out.env, out.secret_keys = env_of(a.env, what) end
    if a.env_owned_prefixes ~= nil then
      out.env_owned_prefixes = list_of(a.env_owned_prefixes, what .. ": env_owned_prefixes",
        function(x) return type(x) == "string" and x:match("^[A-Z][A-Z0-9_]*$") end)
    end
    if a.limits ~= nil then
      fields(a.limits, { memory_mb = true, cpu = true }, what .. ": limits")
      for _, k in ipairs({ "memory_mb", "cpu" }) do
        local v = a.limits[k]
        if v ~= nil and (type(v) ~= "number" or v ~= v or v <= 0) then
          fail("%s: limits.%s must be a positive number", what, k)
        end
      end
      out.limits = { memory_mb = a.limits.memory_mb, cpu = a.limits.cpu }
    end
    if a.domains ~= nil then
      out.domains = list_of(a.domains, what .. ": domains", function(d) return validate.domain(d) == d end)
    end
    if a.storage ~= nil then out.storage = storage_of(a.storage, what) end
    if a.letsencrypt ~= nil then
      fields(a.letsencrypt, { email = true }, what .. ": letsencrypt")
      if a.letsencrypt.email ~= nil and not validate.email(a.letsencrypt.email) then
        fail("%s: letsencrypt.email must be an e-mail address", what)
      end
      out.letsencrypt = { email = a.letsencrypt.email }
    end
    if a.matrix_type ~= nil then
      if not validate.matrix_type(a.matrix_type) then fail("%s: invalid matrix_type", what) end
      out.matrix_type = a.matrix_type
    end
    -- The readiness check (lua/health.lua): the path on the app's first
    -- domain that answers 200 once the app is ready.
    if a.health ~= nil then
      fields(a.health, { path = true }, what .. ": health")
      if not plain_path(a.health.path) or #a.health.path > 256 then
        fail("%s: health.path must be a plain absolute path (e.g. /api/ready)", what)
      end
      out.health = { path = a.health.path }
    end
    return out
  end

  return function(answer)
    fields(answer, { apps = true, services = true }, "the answer")
    if not is_list(answer.apps) or #answer.apps == 0 then fail("apps must be a non-empty list") end
    local apps, seen = {}, {}
    for i, a in ipairs(answer.apps) do
      apps[i] = app_of(a, i, seen)
      seen[apps[i].name] = apps[i]
    end
    local services, seen_svc = {}, {}
    if answer.services ~= nil and not is_list(answer.services) then fail("services must be a list") end
    for i, s in ipairs(answer.services or {}) do
      local what = "service " .. i
      fields(s, SERVICE_FIELDS, what)
      if not SERVICE_KINDS[s.kind] then fail("%s: kind must be postgres or redis", what) end
      own_name(s.name, validate.service_name(s.name), what)
      if seen_svc[s.name] or seen[s.name] then fail("%s: name %s is taken", what, s.name) end
      seen_svc[s.name] = true
      local links = list_of(s.links or {}, what .. ": links",
        function(x) return seen[x] ~= nil and not seen[x].absent end)
      services[i] = { kind = s.kind, name = s.name, links = links }
    end
    return { apps = apps, services = services }
  end
end

-- run(profile, ctx, rules) → { apps, services } checked and copied (no table
-- of the profile's is kept), or nil, "file:line: build(): why".
-- rules: { app = the instance's main name (every app and service is it or
-- starts with it and '-'), data_base = INSTANCE_DATA_BASE, secrets = M.secrets(...) }.
function M.run(profile, ctx, rules)
  local ok, answer = profile.build(ctx)
  if not ok then
    return nil, located(profile.file, profile.line, answer)
  end
  local cok, out = pcall(checker(rules), answer)
  if not cok then
    if type(out) == "table" and out.message then
      return nil, M.where(profile) .. ": build(): " .. out.message
    end
    return nil, M.where(profile) .. ": build(): " .. tostring(out)
  end
  return out
end

function M.names(by_name)
  local list = {}
  for k in pairs(by_name) do list[#list + 1] = k end
  table.sort(list)
  return list
end

return M
