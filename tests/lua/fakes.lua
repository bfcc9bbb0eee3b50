-- Fakes of the C bindings (mrprov.*) for unit specs of the Lua modules.
-- crypto.base64 is real (specs decode what the engine sends); the digest
-- is a readable stand-in, distinct for distinct inputs.
local M = {}

local b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for j = 3, 0, -1 do
      local idx = (n >> (6 * j)) & 63
      chars[#chars + 1] = b64:sub(idx + 1, idx + 1)
    end
    if not b then
      chars[3], chars[4] = "=", "="
    elseif not c then
      chars[4] = "="
    end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

function M.unbase64(s)
  s = s:gsub("=", "")
  local bits = {}
  for i = 1, #s do
    local v = b64:find(s:sub(i, i), 1, true) - 1
    for j = 5, 0, -1 do
      bits[#bits + 1] = (v >> j) & 1
    end
  end
  local out = {}
  for i = 1, #bits - 7, 8 do
    local n = 0
    for j = 0, 7 do
      n = n * 2 + bits[i + j]
    end
    out[#out + 1] = string.char(n)
  end
  return table.concat(out)
end

M.mode = "dry-run"
-- sys.config() as C answers it: every setting with its default (src/config.c
-- config_vars); Lua modules keep no copy of a default.
M.config = { SUPABASE_URL = nil, TIERS_DIR = "tiers", LUA_DIR = "lua", PROFILES_DIR = "profiles", PROFILE = "split",
             DOKKU_COMMAND_TIMEOUT = "900" }
local counter = 0

-- The sorted names in a directory of the repository (names are ours, so
-- quoting them for ls is enough); nil, why when it is empty or missing.
function M.list_dir(dir)
  local p = io.popen("ls -1 '" .. dir .. "' 2>/dev/null")
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  if #names == 0 then return nil, dir .. ": empty or missing" end
  table.sort(names)
  return names
end

function M.install()
  package.loaded["mrprov.crypto"] = {
    sha256_hex = function(s) return "digest(" .. s .. ")" end,
    base64 = M.base64,
    base64_decode = function(s)
      if #s % 4 ~= 0 or not s:match("^[A-Za-z0-9+/]*=?=?$") then
        return nil, "not base64"
      end
      return M.unbase64(s)
    end,
    derive = function(label) return "derived(" .. label .. ")" end,
    random_token = function(n)
      counter = counter + 1
      return string.format("%0" .. n .. "d", counter):sub(-n)
    end,
    ct_equal = function(a, b) return a == b end,
  }
  package.loaded["mrprov.dokku"] = {
    mode = function() return M.mode end,
    token_ok = function() return true end,
    run = function() error("no Dokku in unit specs") end,
    -- the Dokku hosts (src/dokku/transport.c): every host answers unless a
    -- spec says otherwise (M.hosts_down[name] = why)
    set_hosts = function() return true end,
    host_health = function(name)
      local why = M.hosts_down and M.hosts_down[name or "default"]
      if why then return false, why end
      return true
    end,
    hosts = function() return { "default" } end,
  }
  package.loaded["mrprov.log"] = {
    debug = function() end, info = function() end, warn = function() end, error = function() end,
  }
  package.loaded["mrprov.outbox"] = { enabled = function() return false end, notify = function() end }
  -- the C sandbox bounds time and memory; unit specs only need the call shape
  package.loaded["mrprov.sandbox"] = {
    run = function(fn, _, _, _, ...) return pcall(fn, ...) end,
    outside = function(fn, ...) return fn(...) end,
    charge = function() end,
    memory = function() return collectgarbage("count") * 1024 end,
  }
  package.loaded["mrprov.metrics"] = { inc = function() end, set = function() end, observe = function() end,
                                       drop = function() end }
  -- M.http_answers: url -> { status, body } or { nil, err } (no network in unit specs)
  package.loaded["mrprov.http"] = {
    request = function(r)
      local a = M.http_answers and M.http_answers[r.url]
      if not a then return nil, "no answer for " .. r.url end
      return a[1], a[2], {}, false
    end,
  }
  -- Supabase reads (src/lua/bind_supabase.c): none in unit specs; a spec
  -- that reads injects its own reader (subscriptions_sync.reader)
  package.loaded["mrprov.supabase"] = {
    enabled = function() return false end,
    select = function() return nil, "no Supabase in unit specs" end,
    MAX_QUERY = 1024,
  }
  package.loaded["mrprov.sys"] = {
    config = function() return M.config end,
    -- the C binding gives the values of CONFIG_VAR_INSTANCE_SECRET settings
    instance_secret = function(name) return M.instance_secrets and M.instance_secrets[name] end,
    iso_time = function() return "2026-01-01T00:00:00.000Z" end,
    now = function() return 0 end,
    webhook_tolerance_s = 300,
    monotonic = function() return 0 end,
    generation = function() return 1 end,
    -- the directory as it is (the C binding: as the generation read it)
    source_list = M.list_dir,
    -- the file as it is (the C binding: as the generation read it)
    source_read = function(path)
      local f, err = io.open(path, "rb")
      if not f then
        return nil, err
      end
      local text = f:read("a")
      f:close()
      return text
    end,
    current_generation = function() return 1 end,
  }
end

-- A `run` for probes: answers from a table keyed by the joined argv.
function M.runner(answers)
  local calls = {}
  return function(argv)
    local key = table.concat(argv, " ")
    calls[#calls + 1] = key
    local a = answers[key]
    if a == nil then
      return { exit = 1, stdout = "", stderr = " !     unexpected command " .. key }
    end
    if type(a) == "string" then
      return nil, a
    end
    return { exit = a.exit or 0, stdout = a.stdout or "", stderr = a.stderr or "" }
  end, calls
end

M.install()
return M
