-- The Dokku hosts (issue 16): HOSTS_DIR/<name>.lua, plain data like a tier
-- file, each returning { host, port, user, key_path, known_hosts, capacity,
-- labels, draining }. Loaded and checked with the tiers (boot.lua), every
-- error `file:line: message`. No host files: DOKKU_HOST is the one host,
-- the implicit "default", and nothing changes for a service without them.
-- What each host holds (used, free, drained) is lua/host_usage.lua's.
local tier_check = require "tier_check"
local tiers = require "tiers"

local M = {}

M.IMPLICIT = "default"
-- The fields of a host file; name, when given, must be the file's name.
local FIELDS = { name = true, host = true, port = true, user = true, key_path = true, known_hosts = true,
                 capacity = true, labels = true, draining = true }
-- The capacity a host declares, in the tiers' units (tier_check LIMITS):
-- kind, minimum, whether the minimum itself is excluded.
local CAPACITY = { memory_mb = { "int", 1 }, cpu = { "number", 0, true }, instances = { "int", 1 } }
M.CAPACITY_ORDER = { "memory_mb", "cpu", "instances" }

local find_line, word = tier_check.find_line, tier_check.word

function M.name_ok(s)
  return type(s) == "string" and #s <= 63 and s:match("^[a-z][a-z0-9_-]*$") ~= nil
end

local function path_ok(p)
  return type(p) == "string" and #p <= 1024 and p:match("^[A-Za-z0-9._/~-]+$") ~= nil
end

-- A DNS name or an IP address (v4, or v6 without brackets).
local function address_ok(h)
  return type(h) == "string" and #h >= 1 and #h <= 253 and h:match("^[A-Za-z0-9.:-]+$") ~= nil
    and h:sub(1, 1) ~= "-"
end

local function bad(patterns, message)
  error({ patterns = patterns, message = message }, 0)
end

local function number_ok(v, spec)
  local kind, min, open = spec[1], spec[2], spec[3]
  if type(v) ~= "number" or v ~= v or v == math.huge then return false end
  if kind == "int" and math.type(v) ~= "integer" and v ~= math.floor(v) then return false end
  if open then return v > min end
  return v >= min
end

-- Checks one host file's table; returns the normalized host or raises
-- { patterns, message } (turned into file:line by load_dir).
local function normalize(t, base, defaults)
  for k in pairs(t) do
    if not FIELDS[k] then
      bad({ word(k) }, ("unknown field '%s' (name, host, port, user, key_path, known_hosts, capacity, labels, "
        .. "draining)"):format(tostring(k)))
    end
  end
  if t.name ~= nil and t.name ~= base then
    bad({ word("name") }, ("name '%s' must be the file's name, '%s'"):format(tostring(t.name), base))
  end
  if not address_ok(t.host) then
    bad({ word("host") }, "host: expected a DNS name or an IP address")
  end
  local port = t.port == nil and 22 or t.port
  if math.type(port) ~= "integer" or port < 1 or port > 65535 then
    bad({ word("port") }, "port: expected an integer 1..65535")
  end
  local user = t.user == nil and "dokku" or t.user
  if type(user) ~= "string" or not user:match("^[a-z_][a-z0-9_-]*$") or #user > 32 then
    bad({ word("user") }, "user: expected a user name ([a-z_][a-z0-9_-]*)")
  end
  local key_path = t.key_path == nil and defaults.key_path or t.key_path
  if not path_ok(key_path) then
    bad({ word("key_path") }, "key_path: expected a file path of letters, digits, '.', '_', '-', '~' and '/'")
  end
  local known_hosts = t.known_hosts == nil and defaults.known_hosts or t.known_hosts
  if not path_ok(known_hosts) then
    bad({ word("known_hosts") }, "known_hosts: expected a file path of letters, digits, '.', '_', '-', '~' and '/'")
  end
  local capacity = {}
  if t.capacity ~= nil then
    if type(t.capacity) ~= "table" then
      bad({ word("capacity") }, "capacity: expected a table { memory_mb = ..., cpu = ..., instances = ... }")
    end
    for k, v in pairs(t.capacity) do
      local spec = CAPACITY[k]
      if not spec then
        bad({ word(k), word("capacity") },
          ("capacity: unknown key '%s' (memory_mb, cpu, instances)"):format(tostring(k)))
      end
      if not number_ok(v, spec) then
        bad({ word(k), word("capacity") }, ("capacity.%s: expected %s %s %s"):format(k,
          spec[1] == "int" and "an integer" or "a number", spec[3] and ">" or ">=", spec[2]))
      end
      capacity[k] = spec[1] == "int" and math.tointeger(v) or v
    end
  end
  local labels = {}
  if t.labels ~= nil then
    if type(t.labels) ~= "table" then
      bad({ word("labels") }, "labels: expected a table of name = value")
    end
    for k, v in pairs(t.labels) do
      if type(k) ~= "string" or not k:match("^[a-z][a-z0-9_]*$") or #k > 63 then
        bad({ word(k), word("labels") }, ("labels: '%s' is not a label name ([a-z][a-z0-9_]*)"):format(tostring(k)))
      end
      local tv = type(v)
      if not (tv == "boolean" or (tv == "string" and #v <= 253 and v:match("^[%w._:/-]*$")) or tv == "number") then
        bad({ word(k), word("labels") }, ("labels.%s: expected a boolean, a number or a short string"):format(k))
      end
      labels[k] = v
    end
  end
  if t.draining ~= nil and type(t.draining) ~= "boolean" then
    bad({ word("draining") }, "draining: expected true or false")
  end
  return {
    name = base, host = t.host, port = port, user = user, key_path = key_path, known_hosts = known_hosts,
    capacity = capacity, labels = labels, draining = t.draining == true,
  }
end

-- The implicit host: DOKKU_HOST, no declared capacity, no labels.
function M.implicit()
  return { name = M.IMPLICIT, implicit = true, capacity = {}, labels = {}, draining = false }
end

-- A generation's hosts: its host files', or the implicit host alone.
function M.list(cfg)
  return cfg.hosts or { M.implicit() }
end

-- load_dir(dir, fs, defaults) → list of hosts (sorted by name), or nil,
-- "file:line: message". fs: as tiers.load_dir's. defaults: { key_path,
-- known_hosts } (DOKKU_SSH_KEY_PATH, DOKKU_KNOWN_HOSTS). No directory or no
-- *.lua in it: the implicit host alone.
function M.load_dir(dir, fs, defaults)
  dir = dir:gsub("/+$", "")
  local names = fs.list(dir)
  local files = {}
  for _, f in ipairs(names or {}) do
    if f:match("%.lua$") then files[#files + 1] = f end
  end
  table.sort(files)
  if #files == 0 then
    return { M.implicit() }
  end
  local list = {}
  for _, f in ipairs(files) do
    local path = dir .. "/" .. f
    local base = f:sub(1, -5)
    if not M.name_ok(base) then
      return nil, ("%s:1: a host file is named <name>.lua, the name [a-z][a-z0-9_-]* (at most 63)"):format(path)
    end
    local src, rerr = fs.read(path)
    if not src then
      return nil, ("%s:1: cannot read: %s"):format(path, tostring(rerr))
    end
    local value, err = tiers.run_file(path, src, fs.run, "host")
    if not value then
      return nil, err
    end
    local ok, host = pcall(normalize, value, base, defaults or {})
    if not ok then
      if type(host) ~= "table" then
        return nil, ("%s:1: %s"):format(path, tostring(host))
      end
      return nil, ("%s:%d: %s"):format(path, find_line(src, host.patterns), host.message)
    end
    host.file = path
    list[#list + 1] = host
  end
  return list
end

-- What the transport needs of each host file (mrprov.dokku set_hosts); {}
-- for the implicit host alone (the transport has DOKKU_HOST's).
function M.connections(list)
  local out = {}
  for _, h in ipairs(list) do
    if not h.implicit then
      out[#out + 1] = { name = h.name, host = h.host, port = h.port, user = h.user, key_path = h.key_path,
                        known_hosts = h.known_hosts }
    end
  end
  return out
end

function M.by_name(list)
  local out = {}
  for _, h in ipairs(list) do out[h.name] = h end
  return out
end

return M
