local json = require "json"

describe("json", function()
  it("encodes objects with sorted keys and does not escape slashes", function()
    assert.are.equal('{"a":1,"b":"https://x/y","c":[1,2]}', json.encode({ c = { 1, 2 }, b = "https://x/y", a = 1 }))
  end)

  it("encodes empty arrays when marked, empty objects otherwise", function()
    assert.are.equal('{"l":[],"o":{}}', json.encode({ l = json.array(), o = {} }))
  end)

  it("escapes quotes, backslashes and control characters", function()
    assert.are.equal('"a\\"b\\\\c\\n\\u0001"', json.encode('a"b\\c\n\1'))
  end)

  it("encodes null, booleans, integers and floats", function()
    assert.are.equal('[null,true,false,3,0.25]', json.encode({ json.null, true, false, 3, 0.25 }))
  end)

  it("refuses values JSON cannot carry", function()
    assert.has_error(function() json.encode({ f = print }) end)
    assert.has_error(function() json.encode(0 / 0) end)
    assert.has_error(function() json.encode({ [1] = "a", [3] = "c" }) end)
  end)

  it("round-trips through the decoder", function()
    local v = { name = "x", list = { 1, 2, 3 }, nested = { ok = true } }
    assert.are.same(v, json.decode(json.encode(v)))
  end)

  it("decodes with a bounded depth and reports malformed input", function()
    assert.is_nil((json.decode("{")))
    local deep = string.rep("[", 100) .. string.rep("]", 100)
    local v, err = json.decode(deep)
    assert.is_nil(v)
    assert.matches("nested", err)
    assert.is_nil((json.decode("[NaN]")))
  end)

  it("decodes stored text (its own encoding) the same, without the outside-input checks", function()
    local v = { name = "x", list = { 1, 2, 3 }, nested = { ok = true, s = "a/b" } }
    assert.are.same(v, json.decode_stored(json.encode(v)))
    assert.is_nil((json.decode_stored("{")))
    local deep = string.rep("[", 100) .. string.rep("]", 100)
    assert.is_nil((json.decode_stored(deep)))
  end)
end)

describe("json.decode refusals", function()
  it("refuses duplicate keys at any depth, not equal keys in different objects", function()
    assert.is_nil((json.decode('{"a":1,"a":2}')))
    assert.is_nil((json.decode('{"x":{"b":1,"c":{"d":1},"b":2}}')))
    local _, err = json.decode('{"tier":"free","tier":"free"}')
    assert.matches("duplicate key", err)
    assert.are.same({ a = { b = 1 }, c = { b = 2 }, l = { { k = 1 }, { k = 2 } } },
      json.decode('{"a":{"b":1},"c":{"b":2},"l":[{"k":1},{"k":2}]}'))
    assert.are.same({ ["a\"b"] = 1, ["a"] = 2 }, json.decode('{"a\\"b":1,"a":2}'))
    assert.are.same({ s = "x,\"y\":{" }, json.decode('{"s":"x,\\"y\\":{"}'))
  end)

  it("refuses a NUL byte: cjson would stop reading there and accept what follows unread (found by fuzz_request)",
    function()
      local v, err = json.decode('{"tier":"free"}\0{"tier":"enterprise"}')
      assert.is_nil(v)
      assert.matches("NUL", err)
      assert.is_nil((json.decode('{"a":"x\0y"}')))
    end)

  it("compares keys as decoded: an escape does not make a duplicate key new (found with fuzz_request)", function()
    local _, err = json.decode('{"tier":"free","ti\\u0065r":"enterprise"}')
    assert.matches("duplicate key in an object: tier", err)
    assert.is_nil((json.decode('{"a\\/b":1,"a/b":2}')))
    assert.is_nil((json.decode('{"x":{"\\ud83d\\ude00":1,"\\ud83d\\ude00":2}}')))
    assert.are.same({ ["a\\b"] = 1, ["a\\\\b"] = 2 }, json.decode('{"a\\\\b":1,"a\\\\\\\\b":2}'))
  end)

  it("refuses invalid UTF-8", function()
    local v, err = json.decode('{"a":"\255"}')
    assert.is_nil(v)
    assert.matches("UTF%-8", err)
  end)
end)

-- The C encoder (src/lua/bind_json.c, loaded here from the build's
-- lib/mrprov/json.so; ctest sets MRPROV_JSON_CPATH) must write exactly what
-- the Lua encoder writes, errors included.
describe("json.encode in C", function()
  local cpath = os.getenv("MRPROV_JSON_CPATH")
  local saved_cpath, saved_json = package.cpath, package.loaded.json
  local cj -- json.lua loaded with the C encoder

  setup(function()
    package.cpath = (cpath or "build/lib/?.so") .. ";" .. package.cpath
    package.loaded.json, package.loaded["mrprov.json"] = nil, nil
    cj = require "json"
  end)

  teardown(function()
    package.cpath, package.loaded.json = saved_cpath, saved_json
  end)

  local function same(v)
    local ok_l, out_l = pcall(cj.encode_lua, v)
    local ok_c, out_c = pcall(cj.encode, v)
    assert.are.equal(ok_l, ok_c, "ok of " .. tostring(out_l) .. " / " .. tostring(out_c))
    assert.are.equal(out_l, out_c)
    return ok_c, out_c
  end

  it("is the encoder json.lua uses (when the build is there)", function()
    if not cpath and cj.encoder ~= "c" then
      pending("build/lib/mrprov/json.so not built")
      return
    end
    assert.are.equal("c", cj.encoder)
  end)

  it("writes the same bytes for the cases the spec above names", function()
    local cases = table.pack(
      { c = { 1, 2 }, b = "https://x/y", a = 1 }, { l = cj.array(), o = {} }, 'a"b\\c\n\1\127\0x',
      { cj.null, true, false, 3, 0.25 }, {}, cj.array(), "", 0, -0.0, 1e300, -1e-320, 0.1, 1 / 3, 2 ^ 53, 1e15,
      1e14, -1e14, 1e14 - 1, 1 - 1e14, 256.0, -3.0, 0.0, 1e13 + 0.5,
      math.maxinteger, math.mininteger, nil, cj.null, true, "\xff\xfe\xc3\xa9",
      setmetatable({ 1, 2, x = "dropped" }, getmetatable(cj.array())),
      { [1] = "a", [2] = "b", [4] = "d" }, { [2] = "b", [3] = "c", x = 1 },
      { a = { b = { c = { d = cj.array({ cj.null, {} }) } } } },
      { ["a\0b"] = 1, ["a"] = 2, ["a\0"] = 3, ["a\0a"] = 4, ["\0"] = 5, [""] = 6, ["B"] = 7, ["b"] = 8 })
    for i = 1, cases.n do -- a nil among them: not ipairs
      same(cases[i])
    end
    assert.are.equal(34, cases.n)
  end)

  it("raises the same errors", function()
    local deep, too_deep = {}, {}
    local t = deep
    for _ = 1, 64 do
      t[1] = {}
      t = t[1]
    end
    t = too_deep
    for _ = 1, 65 do
      t.x = {}
      t = t.x
    end
    local cycle = {}
    cycle.self = cycle
    for _, v in ipairs({
      { f = print }, 0 / 0, math.huge, -math.huge, { n = 0 / 0 }, { [1] = "a", [3] = "c" }, { [true] = 1 },
      { 1, 2, [3.5] = 3 }, coroutine.create(function() end), io.stdout, { a = { b = print } }, too_deep, cycle,
    }) do
      local ok = same(v)
      assert.is_false(ok)
    end
    assert.is_true((same(deep)))
    assert.has_error(function() cj.encode(0 / 0) end, "json: cannot encode " .. tostring(0 / 0))
  end)

  it("hands a table with another metatable to the Lua encoder", function()
    local proxy = setmetatable({}, { __index = { a = 1 }, __pairs = function() return next, { a = 1 }, nil end })
    local indexed = setmetatable({ 1, 2 }, { __index = function() return "x" end })
    local named = setmetatable({ a = 1 }, { __name = "other" })
    local ok, out = same({ p = proxy, c = indexed, l = { named } })
    assert.is_true(ok)
    assert.are.equal('{"c":[1,2],"l":[{"a":1}],"p":{"a":1}}', out)
    assert.is_false((same({ setmetatable({ 1, 2 }, { __len = function() return 3 end }) })))
  end)

  it("writes the same bytes over many generated values", function()
    math.randomseed(20261128)
    local alphabet = { "a", "b", "z", "A", "_", "0", "9", "/", " ", '"', "\\", "\n", "\t", "\r", "\b", "\f", "\0",
                       "\1", "\31", "\127", "\128", "\xc3\xa9", "\xe2\x82\xac", "\xff", "{", "]", ":", "," }
    local function gen_string()
      local parts = {}
      for i = 1, math.random(0, 12) do
        parts[i] = alphabet[math.random(#alphabet)]
      end
      return table.concat(parts)
    end
    local gen
    local function gen_number()
      local r = math.random(6)
      if r == 1 then return math.random(-1000, 1000) end
      if r == 2 then return math.random(math.mininteger, math.maxinteger) end
      if r == 3 then return (math.random() - 0.5) * 10 ^ math.random(-320, 308) end
      if r == 4 then return math.random(-100, 100) / 8 end
      if r == 5 then return math.random(-1000, 1000) + 0.0 end
      return math.random()
    end
    gen = function(depth)
      local r = math.random(depth > 4 and 5 or 9)
      if r == 1 then return gen_string() end
      if r == 2 then return gen_number() end
      if r == 3 then return math.random(2) == 1 end
      if r == 4 then return cj.null end
      if r == 5 then return math.random(2) == 1 and {} or cj.array() end
      if r == 6 or r == 7 then
        local t = math.random(3) == 1 and cj.array() or {}
        for i = 1, math.random(0, 8) do
          t[i] = gen(depth + 1)
        end
        return t
      end
      local t = {}
      for _ = 1, math.random(0, (r == 9 and depth == 0) and 70 or 5) do -- past the 32 keys kept on the C stack
        t[gen_string()] = gen(depth + 1)
      end
      return t
    end
    local n = 0
    for _ = 1, 5000 do
      local ok, out = same(gen(0))
      if ok then
        n = n + #out
      end
    end
    assert.is_true(n > 100000) -- the values were not all trivial
  end)
end)
