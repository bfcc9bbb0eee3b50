-- Validators for every value that can reach a Dokku command, an environment
-- variable or the rendered config: each returns the normalized value, or nil and
-- a message. The request validators built on them are lua/validate_request.lua.
local M = {}

local MAX_ENV_VALUE = 16 * 1024
local MAX_CONFIG_UPDATES = 64
-- An instance's config_updates, all updates merged: at most this many bytes
-- of keys and values (and MAX_CONFIG_UPDATES keys). They cross to Dokku
-- base64-encoded in config:set commands of at most 32 KiB each
-- (resources/config.lua), so this is at most a dozen commands; it also
-- keeps the container's environment far below the kernel's argument limits.
M.MAX_CONFIG_TOTAL = 256 * 1024
M.MAX_CONFIG_UPDATES = MAX_CONFIG_UPDATES

M.MATRIX_TYPES = { tuwunel = true, synapse = true }

-- Keys the provisioner sets itself or Dokku owns; a customer override would
-- break the instance or leak into another one's wiring.
local RESERVED_KEYS = {
  DATABASE_URL = true, REDIS_URL = true, GIT_REV = true, PORT = true,
}

local function is_string(s)
  return type(s) == "string"
end

function M.utf8_valid(s)
  return is_string(s) and utf8.len(s) ~= nil
end

-- Ids start with an alphanumeric so that none can ever look like a flag (-n, --force).
local function id_rule(s)
  if not is_string(s) then return nil, "must be a string" end
  if #s < 1 or #s > 64 or not s:match("^[A-Za-z0-9][A-Za-z0-9_-]*$") then
    return nil, "must be 1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit"
  end
  return s
end

function M.subscription_id(s)
  return id_rule(s)
end

function M.account_id(s)
  return id_rule(s)
end

-- SPEC §4: first 8 characters, lower-cased, non-alphanumerics dropped.
function M.app_prefix(subscription_id)
  if not is_string(subscription_id) then return nil, "must be a string" end
  local p = subscription_id:sub(1, 8):lower():gsub("[^a-z0-9]", "")
  if p == "" then p = "sub" end
  return p
end

-- The random part of an instance's app name: [a-z0-9], this many characters.
local APP_SUFFIX_LEN = 8

-- SPEC §4: the one builder of a new instance's app name,
-- mr-{app_prefix}-{8 random [a-z0-9]}. random_token is crypto.random_token
-- (passed in, so this module stays free of bindings); M.app_name checks it.
function M.new_app_name(subscription_id, random_token)
  return "mr-" .. M.app_prefix(subscription_id) .. "-" .. random_token(APP_SUFFIX_LEN)
end

function M.app_name(s)
  if not is_string(s) then return nil, "must be a string" end
  if not s:match("^mr%-[a-z0-9]+%-[a-z0-9]+$") then
    return nil, "must look like mr-{prefix}-{suffix} in lower-case letters and digits"
  end
  local prefix, suffix = s:match("^mr%-([a-z0-9]+)%-([a-z0-9]+)$")
  if #prefix > 8 or #suffix ~= APP_SUFFIX_LEN then
    return nil, "must look like mr-{1-8 characters}-{8 characters}"
  end
  return s
end

-- dokku.md §3 recommended rule: a DNS label that starts with a letter, no dots, no "--".
function M.dokku_app(s)
  if not is_string(s) then return nil, "must be a string" end
  if not s:match("^[a-z][a-z0-9-]*[a-z0-9]$") or #s > 63 then
    return nil, "must be 2-63 characters of a-z 0-9 -, starting with a letter and ending with a letter or digit"
  end
  if s:find("--", 1, true) then
    return nil, "must not contain '--'"
  end
  return s
end

-- Postgres/Redis service names and storage directories accept [A-Za-z0-9_-];
-- the leading alphanumeric keeps a name from reading as a flag.
function M.service_name(s)
  if not is_string(s) then return nil, "must be a string" end
  if #s > 64 or not s:match("^[A-Za-z0-9][A-Za-z0-9_-]*$") then
    return nil, "must be 1-64 characters of A-Z a-z 0-9 _ -, starting with a letter or digit"
  end
  return s
end

function M.tier_name(s)
  if not is_string(s) then return nil, "must be a string" end
  if #s > 32 or not s:match("^[a-z][a-z0-9_-]*$") then
    return nil, "must be 1-32 characters of a-z 0-9 _ -, starting with a letter"
  end
  return s
end

-- An absolute path of plain characters, no empty, "." or ".." component
-- (container paths, and the shape of host paths, of profiles and hooks).
function M.plain_path(p)
  if type(p) ~= "string" or not p:match("^/[A-Za-z0-9._/-]*$") or p:find("//", 1, true) then
    return false
  end
  for comp in p:sub(2):gmatch("[^/]+") do
    if comp == "." or comp == ".." then
      return false
    end
  end
  return true
end

-- A table whose keys are exactly 1..#t (a Lua list).
function M.is_list(t)
  if type(t) ~= "table" then
    return false
  end
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  return n == #t
end

function M.domain(s)
  if not is_string(s) then return nil, "must be a string" end
  s = s:lower()
  if #s == 0 or #s > 253 then return nil, "must be 1-253 characters" end
  if s:sub(-1) == "." then return nil, "must not end with a dot" end
  local labels = 0
  -- Splitting on every dot (empty labels included) catches "a..b" and ".a".
  for label in (s .. "."):gmatch("([^.]*)%.") do
    labels = labels + 1
    if #label < 1 or #label > 63 then
      return nil, "each label must be 1-63 characters"
    end
    if not label:match("^[a-z0-9]$") and not label:match("^[a-z0-9][a-z0-9-]*[a-z0-9]$") then
      return nil, "labels may only contain a-z 0-9 and inner hyphens"
    end
  end
  if labels < 2 then return nil, "must have at least two labels" end
  -- No top-level domain is numeric: this refuses IP addresses, which get no certificate.
  if s:match("%.(%d+)$") then return nil, "must not be an IP address or end in a numeric label" end
  return s
end

-- Where a domain may be served (SPEC §4): under BASE_DOMAIN live the
-- instances' own names, so there a domain is allowed only as the instance's
-- own name ({app}.{base}) or below it; with app nil (a request's
-- custom_domain) nowhere under BASE_DOMAIN. Returns the normalized domain or
-- nil, why. The API's custom_domain and every domain a hook sets pass here.
function M.instance_domain(s, base, app)
  local d, err = M.domain(s)
  if not d then return nil, err end
  base = base:lower()
  if d == base or d:sub(-(#base + 1)) == "." .. base then
    local own = app and (app .. "." .. base)
    if not own or (d ~= own and d:sub(-(#own + 1)) ~= "." .. own) then
      return nil, "must not be under " .. base .. (own and (" other than " .. own .. " and its subdomains") or "")
    end
  end
  return d
end

function M.env_key(s)
  if not is_string(s) then return nil, "must be a string" end
  if #s > 64 or not s:match("^[A-Z_][A-Z0-9_]*$") then
    return nil, "must be 1-64 characters of A-Z 0-9 _, not starting with a digit"
  end
  return s
end

function M.reserved_env_key(k)
  if not is_string(k) then return false end
  return RESERVED_KEYS[k] == true or k:sub(1, 6) == "DOKKU_" or k:sub(1, 9) == "MINDROOM_"
end

-- What Dokku >= 0.38 reads back for an environment value it stored: it
-- writes the app's ENV file with godotenv v1.5.1 (Marshal: a value
-- strconv.Atoi accepts is written as the bare integer, anything else
-- double-quoted and backslash-escaped) and parses it on every later command
-- (dokku v0.38.27 plugins/config/environment.go, go.mod; joho/godotenv
-- v1.5.1 godotenv.go, parser.go). Returns the value read back; or nil and
-- why when it differs in a way that is no plain number. The cases, checked
-- exhaustively against a port of that code (tests/fixtures/dokku-sim):
-- "007" → "7", "+5" → "5", "-0" → "0"; a value ending in `\` makes the
-- closing quote read as escaped (the ENV file runs on or is unreadable); a
-- value ending in `"` comes back with a `\` in its place (and so breaks
-- the file at the next write).
function M.godotenv_stored(v)
  if v:find("^[+-]?%d+$") then
    local n = math.tointeger(tonumber(v)) -- nil beyond int64: Atoi fails, the value is quoted
    if n then
      return string.format("%d", n)
    end
  end
  if v:sub(-1) == "\\" then
    return nil, "must not end with a backslash: Dokku 0.38 and newer could not read the app's environment back"
  end
  if v:sub(-1) == '"' then
    return nil, "must not end with a double quote: Dokku 0.38 and newer would store it ending in a backslash " ..
      "instead, and could not read the app's environment back after the next change"
  end
  return v
end

function M.env_value(s)
  if not is_string(s) then return nil, "must be a string" end
  if #s > MAX_ENV_VALUE then return nil, "must be at most 16 KiB" end
  if s:find("\0", 1, true) then return nil, "must not contain NUL" end
  if not M.utf8_valid(s) then return nil, "must be valid UTF-8" end
  local stored, why = M.godotenv_stored(s)
  if stored ~= s then
    -- refused rather than normalised: the app would see another value than
    -- the customer sent, and mrprov would find it changed on every run
    return nil, why or ("would be stored changed by Dokku 0.38 and newer (a number with a leading + or " ..
      "leading zeros loses them); send it without them")
  end
  return s
end

-- The merged config_updates of an instance (what earlier updates set plus
-- this one's) within the totals; nil and why otherwise.
function M.config_updates_total(merged)
  local n, bytes = 0, 0
  for k, v in pairs(merged) do
    n = n + 1
    bytes = bytes + #k + #v
  end
  if n > MAX_CONFIG_UPDATES then
    return nil, ("would hold %d keys with those set earlier; at most %d in all"):format(n, MAX_CONFIG_UPDATES)
  end
  if bytes > M.MAX_CONFIG_TOTAL then
    return nil, ("would total %d bytes of keys and values with those set earlier; at most %d (256 KiB) in all")
      :format(bytes, M.MAX_CONFIG_TOTAL)
  end
  return true
end

local function host_port_ok(c)
  local host, port = c:match("^([^:]+):(%d+)$")
  if not host then
    if c:find(":", 1, true) then return false end
    host = c
  elseif #port > 5 or tonumber(port) > 65535 or tonumber(port) < 1 then
    return false
  end
  for label in (host .. "."):gmatch("([^.]*)%.") do
    if not label:match("^[a-z0-9]$") and not label:match("^[a-z0-9][a-z0-9-]*[a-z0-9]$") then
      return false
    end
  end
  return true
end

-- Docker's path component: alphanumeric runs joined by ".", "_", "__" or dashes.
local PATH_SEPARATORS = { ["."] = true, ["_"] = true, ["__"] = true }

local function path_component_ok(c)
  if not c:match("^[a-z0-9][a-z0-9._-]*$") or not c:match("[a-z0-9]$") then
    return false
  end
  for sep in c:gmatch("[^a-z0-9]+") do
    if not PATH_SEPARATORS[sep] and not sep:match("^%-+$") then
      return false
    end
  end
  return true
end

function M.image(s)
  if not is_string(s) then return nil, "must be a string" end
  if #s == 0 or #s > 255 then return nil, "must be 1-255 characters" end
  local bad = "must be a Docker image reference ([host[:port]/]path[:tag][@sha256:digest])"
  local name = s
  local at = name:find("@", 1, true)
  if at then
    if not name:sub(at + 1):match("^sha256:" .. ("%x"):rep(64) .. "$")
      or name:sub(at + 1):find("[A-F]") then
      return nil, bad
    end
    name = name:sub(1, at - 1)
  end
  -- A tag's colon comes after the last slash; a registry port's before it.
  local last_slash = 0
  for i in name:gmatch("()/") do last_slash = i end
  local colon = name:find(":", last_slash + 1, true)
  if colon then
    if not name:sub(colon + 1):match("^[A-Za-z0-9_][A-Za-z0-9_.-]*$") or #name - colon > 128 then
      return nil, bad
    end
    name = name:sub(1, colon - 1)
  end
  local parts = {}
  for part in (name .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = part end
  local first = 1
  if #parts > 1 and (parts[1]:find("[.:]") or parts[1] == "localhost") then
    if not host_port_ok(parts[1]) then return nil, bad end
    first = 2
  end
  for i = first, #parts do
    if not path_component_ok(parts[i]) then return nil, bad end
  end
  return s
end

-- The base URL of an outside API mrprov calls with a credential
-- (OPENROUTER_API_BASE): https, or http to a loopback address only (a test
-- stand-in: the credential must not cross a network in the clear); no user
-- info, query or fragment. Returned without a trailing '/'.
function M.api_base(s)
  if not is_string(s) or #s > 512 then return nil, "must be a URL of at most 512 characters" end
  local scheme, host, path = s:match("^(https?)://([^/?#@%s]+)(.*)$")
  if not scheme or not (path == "" or path:match("^/[^?#@%s%c]*$")) then
    return nil, "must be an http(s) URL without user info, query or fragment (e.g. https://openrouter.ai/api/v1)"
  end
  local name = host:gsub(":%d+$", "")
  if scheme == "http" and name ~= "127.0.0.1" and name ~= "localhost" and name ~= "[::1]" then
    return nil, "must be https (http only to a loopback address: 127.0.0.1, localhost, [::1])"
  end
  return (s:gsub("/+$", ""))
end

function M.email(s)
  if not is_string(s) then return nil, "must be a string" end
  if #s > 254 then return nil, "must be at most 254 characters" end
  local user, host = s:match("^([^@]+)@([^@]+)$")
  if not user or #user > 64 or not user:match("^[A-Za-z0-9][A-Za-z0-9._%%+-]*$")
    or user:find("..", 1, true) or user:sub(-1) == "." then
    return nil, "must be a valid e-mail address"
  end
  local d = M.domain(host)
  if not d then return nil, "must be a valid e-mail address" end
  return user .. "@" .. d
end

function M.matrix_type(s)
  if not is_string(s) or not M.MATRIX_TYPES[s] then
    return nil, "must be one of: synapse, tuwunel"
  end
  return s
end

-- A CPU limit as Dokku gets it (`resource:limit --cpu`, Docker's --cpus):
-- three decimals, trailing zeros dropped.
function M.format_cpu(cpu)
  return (string.format("%.3f", cpu):gsub("0+$", ""):gsub("%.$", ""))
end

M.MAX_CPU = 64
M.MAX_MEMORY_MB = 262144

-- A CPU limit that survives formatting: a positive number at most MAX_CPU
-- whose formatted value is not "0" (Docker reads --cpus 0 as "no limit",
-- so 1e-300 would lift the limit instead of setting a tiny one).
function M.cpu(v)
  if type(v) ~= "number" or v ~= v or v <= 0 or v > M.MAX_CPU then
    return nil, ("must be a number above 0 and at most %d"):format(M.MAX_CPU)
  end
  if M.format_cpu(v) == "0" then
    return nil, "must be at least 0.001 (Dokku gets three decimals; 0 would mean no limit)"
  end
  return v + 0.0
end

-- Limits of an app set by a hook: memory in MB (integer 64..MAX_MEMORY_MB)
-- and cpu (see M.cpu); the same caps a request's limits have.
function M.app_limits(memory_mb, cpu)
  local mem = math.tointeger(memory_mb)
  if not mem or mem < 64 or mem > M.MAX_MEMORY_MB then
    return nil, ("memory_mb must be an integer from 64 to %d"):format(M.MAX_MEMORY_MB)
  end
  local c, err = M.cpu(tonumber(cpu))
  if not c then
    return nil, "cpu " .. err
  end
  return { memory_mb = mem, cpu = c }
end

return M
