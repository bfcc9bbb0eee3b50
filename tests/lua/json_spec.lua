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
