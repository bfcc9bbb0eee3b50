-- lua/tar.lua checked against the system's GNU tar (issue 14 item 2).
local tar = require "tar"

local function tmpfile(bytes)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
  return path
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

describe("tar.archive", function()
  local files = {
    { name = "Dockerfile", content = "FROM example/image:1\n", mode = 420 },
    { name = "converge.py", content = string.rep("x", 513), mode = 493 },
    { name = "empty", content = "" },
  }

  it("writes an archive GNU tar lists with the names, modes, sizes, owners and mtime 0", function()
    local bytes = assert(tar.archive(files))
    assert.are.equal(0, #bytes % 512)
    local path = tmpfile(bytes)
    local out, code = sh("TZ=UTC tar --numeric-owner -tvf " .. path)
    os.remove(path)
    assert.are.equal(0, code)
    local lines = {}
    for l in out:gmatch("[^\n]+") do
      lines[#lines + 1] = l
    end
    assert.are.equal(3, #lines)
    assert.matches("^%-rw%-r%-%-r%-%- 0/0%s+21 1970%-01%-01 00:00 Dockerfile$", lines[1])
    assert.matches("^%-rwxr%-xr%-x 0/0%s+513 1970%-01%-01 00:00 converge.py$", lines[2])
    assert.matches("^%-rw%-r%-%-r%-%- 0/0%s+0 1970%-01%-01 00:00 empty$", lines[3])
  end)

  it("holds the contents byte for byte (tar -xOf)", function()
    local bytes = assert(tar.archive(files))
    local path = tmpfile(bytes)
    for _, f in ipairs(files) do
      local out, code = sh("tar -xOf " .. path .. " " .. f.name)
      assert.are.equal(0, code)
      assert.are.equal(f.content, out)
    end
    os.remove(path)
  end)

  it("is deterministic", function()
    assert.are.equal(tar.archive(files), tar.archive(files))
  end)

  it("refuses names that are not plain relative file names", function()
    for _, bad in ipairs({ "/etc/passwd", "../x", "..", ".", "a/b", "", "a b", "x\0y", string.rep("a", 101), 7 }) do
      local bytes, err = tar.archive({ { name = bad, content = "" } })
      assert.is_nil(bytes)
      assert.matches("not a plain relative file name", err)
    end
    local bytes, err = tar.archive({ { name = "a", content = "" }, { name = "a", content = "" } })
    assert.is_nil(bytes)
    assert.matches("named twice", err)
    assert.is_nil((tar.archive({ { name = "a", content = "", mode = 4095 } })))
    assert.is_nil((tar.archive({})))
  end)
end)
