-- Per-customer hooks (SPEC §6): `HOOKS_DIR/<account or subscription id>.lua`
-- returns a table with optional functions
--   desired(state, ctx)  change the desired instance before it is planned
--                        (extra environment, domains, images, an extra app)
--   after(dokku, ctx)    run extra steps after provisioning through a Dokku
--                        handle that only reaches this instance's own apps
--                        and services.
-- Hooks run sandboxed: an allowlisted, read-only environment (no io, os
-- beyond time, require, load, debug, string.dump, collectgarbage), and
-- bounded instructions and memory (src/lua/sandbox.c). A hook that breaks a
-- bound fails its step with a clear error; nothing else is affected.
local sandbox = require "mrprov.sandbox"
local validate = require "validate"

local M = {}

M.INSTRUCTIONS = 5000000
M.MEMORY = 8 * 1024 * 1024

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
  local function lib(src, name)
    local c = {}
    for k, v in pairs(src) do
      c[k] = v
    end
    return readonly(c, name)
  end
  return {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type, rawequal = rawequal,
    rawlen = rawlen,
    -- no setmetatable/getmetatable: the strings' shared metatable (the real
    -- string library) stays out of reach, and no table a hook hands back can
    -- run code when the engine reads it
    string = readonly(str, "string"), table = lib(table, "table"), math = lib(math, "math"),
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

-- Loads every hook; nil, "file:line: message" on the first problem.
function M.load_dir(dir, fs)
  local names = fs.list(dir)
  local out = {}
  if not names then
    return out -- no hooks directory: no hooks
  end
  for _, name in ipairs(names) do
    local id = name:match("^(.+)%.lua$")
    if id then
      local path = dir .. "/" .. name
      if not validate.subscription_id(id) then
        return nil, path .. ":1: a hook is named after an account or subscription id ([A-Za-z0-9_-])"
      end
      local src, rerr = fs.read(path)
      if not src then
        return nil, path .. ":1: " .. tostring(rerr)
      end
      local chunk, err = load(src, "@" .. path, "t", environment())
      if not chunk then
        return nil, err
      end
      local ok, hook = sandbox.run(chunk, M.INSTRUCTIONS, M.MEMORY)
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
      out[id] = { id = id, file = path, desired = hook.desired, after = hook.after, description = hook.description }
    end
  end
  return out
end

-- The hook of an instance: its subscription's, else its account's.
function M.find(hooks, inst)
  if not hooks then
    return nil
  end
  return hooks[inst.subscription_id] or (inst.account_id and hooks[inst.account_id]) or nil
end

local function check_env(env, where)
  if type(env) ~= "table" then
    return nil, where .. ": env must be a table"
  end
  local out = {}
  for k, v in pairs(env) do
    if type(k) ~= "string" or not validate.env_key(k) then
      return nil, where .. ": invalid environment key " .. tostring(k)
    end
    local ok, why = validate.env_value(v)
    if not ok then
      return nil, where .. ": invalid value for " .. k .. ": " .. tostring(why)
    end
    out[k] = v
  end
  return out
end

local function check_domains(list, where)
  if type(list) ~= "table" then
    return nil, where .. ": domains must be a list"
  end
  local out = {}
  for i, d in ipairs(list) do
    local ok = type(d) == "string" and validate.domain(d)
    if not ok then
      return nil, where .. ": invalid domain " .. tostring(d)
    end
    out[i] = ok
  end
  return out
end

-- Takes from the hook's copy only what a hook may change, validated.
local function merge(state, changed)
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
        local env, err = check_env(c.env, where)
        if not env then
          return nil, err
        end
        if a.secret_keys then
          for k in pairs(a.secret_keys) do
            if env[k] ~= a.env[k] then
              return nil, where .. ": a hook may not change " .. k
            end
          end
        end
        a.env = env
      end
      if c.domains ~= nil then
        local d, err = check_domains(c.domains, where)
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
        local mem, cpu = math.tointeger(c.limits.memory_mb), tonumber(c.limits.cpu)
        if not mem or mem < 64 or not cpu or cpu <= 0 or cpu > 64 then
          return nil, where .. ": limits need memory_mb (integer >= 64) and cpu (0..64]"
        end
        a.limits = { memory_mb = mem, cpu = cpu }
      end
    end
  end
  return state
end

-- Applies hook.desired to the state; returns the new state or nil, err.
function M.apply_desired(hook, state, ctx)
  if not hook or not hook.desired then
    return state
  end
  local c = copy(state)
  local ok, err = sandbox.run(hook.desired, M.INSTRUCTIONS, M.MEMORY, c, copy(ctx))
  if not ok then
    return nil, hook.file .. ": desired(): " .. tostring(err)
  end
  local pok, clean = pcall(plain, c, 0, { n = 100000 })
  if not pok then
    return nil, hook.file .. ": desired(): " .. tostring(clean)
  end
  local merged, merr = merge(copy(state), clean)
  if not merged then
    return nil, hook.file .. ": desired(): " .. merr
  end
  return merged
end

-- The names a hook's Dokku handle may touch: the instance's own.
function M.scope(state)
  local names = {}
  for _, a in ipairs(state.apps) do
    names[a.name] = true
  end
  for _, s in ipairs(state.services) do
    names[s.name] = true
  end
  return names
end

-- Checks argv for the scoped handle; nil, why when refused.
function M.check_argv(argv, names)
  if type(argv) ~= "table" or #argv == 0 then
    return nil, "a command is a list of strings"
  end
  if type(argv[1]) ~= "string" or not argv[1]:match("^[a-z0-9-]+:[a-z0-9:-]+$") then
    return nil, "the first word must be a Dokku subcommand like config:set"
  end
  local own = false
  for i, a in ipairs(argv) do
    if type(a) ~= "string" then
      return nil, "argument " .. i .. " is not a string"
    end
    if a == "--global" or a == "--all" then
      return nil, a .. " reaches beyond this instance"
    end
    if names[a] then
      own = true
    elseif a:match("^mr%-") then
      return nil, a .. " is not one of this instance's apps or services"
    end
  end
  local first
  for i = 2, #argv do
    if argv[i]:sub(1, 1) ~= "-" then
      first = argv[i]
      break
    end
  end
  if not own or not names[first] then
    return nil, "the command must name one of this instance's apps or services first"
  end
  return true
end

-- Runs hook.after with a handle whose run(argv) goes through runner (the
-- worker's journaled executor) after the scope check.
function M.run_after(hook, state, ctx, runner)
  local names = M.scope(state)
  local handle = readonly({
    run = function(argv)
      local ok, why = M.check_argv(argv, names)
      if not ok then
        error("dokku.run refused: " .. why, 2)
      end
      local args = {}
      for i, a in ipairs(argv) do
        args[i] = a
      end
      return runner(args)
    end,
    apps = function()
      local list = {}
      for n in pairs(names) do
        list[#list + 1] = n
      end
      table.sort(list)
      return list
    end,
  }, "the dokku handle")
  local ok, err = sandbox.run(hook.after, M.INSTRUCTIONS, M.MEMORY, handle, copy(ctx))
  if not ok then
    return nil, hook.file .. ": after(): " .. tostring(err)
  end
  return true
end

return M
