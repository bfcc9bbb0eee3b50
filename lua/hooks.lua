-- Per-customer hooks (SPEC §6): `HOOKS_DIR/subscription.<id>.lua` or
-- `HOOKS_DIR/account.<id>.lua` returns a table with optional functions
--   desired(state, ctx)  change the desired instance before it is planned
--                        (extra environment, domains, images, an extra app);
--                        it sees placeholders for secret values
--   after(dokku, ctx)    run extra steps after provisioning through a Dokku
--                        handle that runs only allowlisted subcommands on
--                        this instance's own apps (lua/hook_handle.lua)
--   pinned(ctx)          true (or a reason string) keeps the instance on its
--                        image: fleet rollouts skip it (lua/rollout.lua).
-- Hooks run sandboxed: an allowlisted, read-only environment (no io, os
-- beyond time, require, load, debug, string.dump, collectgarbage), and
-- bounded instructions, memory and time (src/lua/sandbox.c; the string
-- library's pattern functions count too, src/lua/strmatch.c). A hook that
-- breaks a bound fails its step with a clear error; nothing else is affected.
local desired = require "desired"
local hook_handle = require "hook_handle"
local hook_merge = require "hook_merge"
local sandbox = require "mrprov.sandbox"
local tier_check = require "tier_check"
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
        if k ~= "desired" and k ~= "after" and k ~= "pinned" and k ~= "description"
            and k ~= "host_labels" then
          return nil, path .. ":1: unknown hook field " .. tostring(k)
            .. " (desired, after, pinned, description, host_labels)"
        end
        if k ~= "description" and k ~= "host_labels" and type(v) ~= "function" then
          return nil, path .. ":1: hook field " .. k .. " must be a function"
        end
      end
      -- host_labels: what the customer's Dokku host must carry (lua/placement.lua)
      local lok, labels = pcall(tier_check.check_host_labels, hook.host_labels, "host_labels")
      if not lok then
        return nil, path .. ":1: " .. (type(labels) == "table" and labels.message or tostring(labels))
      end
      out[stem] = { id = id, kind = kind, file = path, desired = hook.desired, after = hook.after,
                    pinned = hook.pinned, description = hook.description, host_labels = labels }
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

-- A hook's copy of the state shows placeholders for secret values
-- (lua/hook_merge.lua).
M.placeholder = hook_merge.placeholder

-- Applies hook.desired to the state; returns the new state or nil, err.
-- rules: { base_domain = BASE_DOMAIN } for the domain rules.
function M.apply_desired(hook, state, ctx, rules)
  if not hook or not hook.desired then
    return state
  end
  assert(rules and rules.base_domain, "apply_desired needs the base domain")
  local c = copy(state)
  local secrets = hook_merge.hide_secrets(c)
  local ok, err = sandbox.run(hook.desired, M.INSTRUCTIONS, M.MEMORY, M.SECONDS, c, copy(ctx))
  if not ok then
    return nil, hook.file .. ": desired(): " .. tostring(err)
  end
  local pok, clean = pcall(plain, c, 0, { n = 100000 })
  if not pok then
    return nil, hook.file .. ": desired(): " .. tostring(clean)
  end
  local merged, merr = hook_merge.merge(copy(state), clean, secrets, rules)
  if not merged then
    return nil, hook.file .. ": desired(): " .. merr
  end
  local _, derr = desired.domains(merged)
  if derr then
    return nil, hook.file .. ": desired(): " .. derr
  end
  return merged
end

-- The handle's scope and allowlist grammar (lua/hook_handle.lua).
M.scope = hook_handle.scope
M.check_argv = hook_handle.check_argv
M.effects = hook_handle.effects
M.GLOBAL_FLAGS = hook_handle.GLOBAL_FLAGS

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
