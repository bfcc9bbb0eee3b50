-- JSON for mrprov: decoding by lua-cjson (bounded depth), encoding here so
-- that output is deterministic (sorted keys), arrays can be empty
-- (json.array), and "/" is not escaped.
local cjson = require "cjson"

local M = {}

M.null = cjson.null
local array_mt = { __name = "json.array" }

-- Marks t as a JSON array even when empty.
function M.array(t)
  return setmetatable(t or {}, array_mt)
end

local decoder = cjson.new()
decoder.decode_max_depth(32)
decoder.decode_invalid_numbers(false)

-- The first key that appears twice in one object of text (already known to
-- be valid JSON), or nil; keys compare as decoded. cjson keeps the last
-- silently; a request that says two things at once is refused instead.
function M.duplicate_key(text)
  local stack = {} -- one entry per open container: a key set (object) or false (array)
  local i, n = 1, #text
  local expect_key = false
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' then
      local j = i + 1
      while true do
        local q = text:find('["\\]', j)
        if not q then
          return nil
        end
        if text:sub(q, q) == "\\" then
          j = q + 2
        else
          j = q
          break
        end
      end
      local top = stack[#stack]
      if top and expect_key then
        local key = text:sub(i + 1, j - 1)
        if key:find("\\", 1, true) then
          -- Compare keys as decoded: "ti\u0065r" is "tier".
          key = decoder.decode(text:sub(i, j))
        end
        if top[key] then
          return key
        end
        top[key] = true
        expect_key = false
      end
      i = j + 1
    else
      if c == "{" then
        stack[#stack + 1] = {}
        expect_key = true
      elseif c == "[" then
        stack[#stack + 1] = false
      elseif c == "}" or c == "]" then
        stack[#stack] = nil
      elseif c == "," then
        expect_key = stack[#stack] ~= false and stack[#stack] ~= nil
      end
      i = i + 1
    end
  end
  return nil
end

-- Returns the value, or nil and a message. Refuses invalid UTF-8, NUL bytes
-- and duplicate keys.
function M.decode(text)
  if not utf8.len(text) then
    return nil, "the body is not valid UTF-8"
  end
  -- JSON text never holds a raw NUL, and cjson stops reading at one: what
  -- follows it would be accepted unread.
  if text:find("\0", 1, true) then
    return nil, "the body contains a NUL byte"
  end
  local ok, v = pcall(decoder.decode, text)
  if not ok then
    return nil, (tostring(v):gsub("^.-:%d+: ", ""))
  end
  local dup = type(v) == "table" and M.duplicate_key(text)
  if dup then
    return nil, "duplicate key in an object: " .. (dup:match("^[%w_.-]+$") and dup or "(not shown)")
  end
  return v
end

-- Decodes JSON this service wrote itself with M.encode (the store's JSON
-- columns). The UTF-8 and duplicate-key checks of M.decode are for input
-- from outside; on a 3 KB stored spec the duplicate-key scan costs more
-- than everything else a status read does, so stored text skips them.
function M.decode_stored(text)
  local ok, v = pcall(decoder.decode, text)
  if not ok then
    return nil, (tostring(v):gsub("^.-:%d+: ", ""))
  end
  return v
end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function encode_string(s)
  if not s:find('[%c"\\]') then -- most strings: nothing to escape, no gsub
    return '"' .. s .. '"'
  end
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function is_array(t)
  if getmetatable(t) == array_mt then
    return true
  end
  local n = #t
  if n == 0 then
    return false
  end
  local count = 0
  for _ in pairs(t) do
    count = count + 1
  end
  return count == n
end

local encode_value

local function encode_table(t, out, depth)
  if depth > 64 then
    error("json: nesting too deep", 0)
  end
  if is_array(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then
        out[#out + 1] = ","
      end
      encode_value(t[i], out, depth + 1)
    end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then
      error("json: object keys must be strings, got " .. type(k), 0)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then
      out[#out + 1] = ","
    end
    out[#out + 1] = encode_string(k)
    out[#out + 1] = ":"
    encode_value(t[k], out, depth + 1)
  end
  out[#out + 1] = "}"
end

function encode_value(v, out, depth)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = encode_string(v)
  elseif tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      error("json: cannot encode " .. tostring(v), 0)
    end
    out[#out + 1] = math.type(v) == "integer" and string.format("%d", v) or string.format("%.14g", v)
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == nil or v == cjson.null then
    out[#out + 1] = "null"
  elseif tv == "table" then
    encode_table(v, out, depth)
  else
    error("json: cannot encode a " .. tv, 0)
  end
end

-- The encoder in Lua: the definition of the output. mrprov.json (C,
-- src/lua/bind_json.c) writes the same bytes several times faster and is
-- used when present (always in the mrprov binary); it hands back here any
-- table with a metatable other than json.array's, with its depth.
function M.encode_lua(v)
  local out = {}
  encode_value(v, out, 0)
  return table.concat(out)
end

local function encode_at(t, depth)
  local out = {}
  encode_value(t, out, depth)
  return table.concat(out)
end

local has_c, cjson_mrprov = pcall(require, "mrprov.json")
M.encode = has_c and cjson_mrprov.encoder(M.null, array_mt, encode_at) or M.encode_lua
M.encoder = has_c and "c" or "lua"

return M
