-- Specs for lua/hosts.lua: host files (HOSTS_DIR/<name>.lua) loaded into
-- their normalized shape, the implicit host without any, and `file:line`
-- for every kind of broken file.
local helper = require "helper"
local hosts = require "hosts"

local DEFAULTS = { key_path = "ssh/dokku_key", known_hosts = "ssh/known_hosts" }

local function load_files(files)
  return hosts.load_dir("hosts", helper.memfs(files), DEFAULTS)
end

describe("hosts.load_dir", function()
  it("is the implicit host alone without host files", function()
    local list = assert(load_files({}))
    assert.are.equal(1, #list)
    assert.are.equal("default", list[1].name)
    assert.is_true(list[1].implicit)
  end)

  it("loads host files into the normalized shape, with the defaults filled in, sorted by name", function()
    local list = assert(load_files({
      ["hosts/b.lua"] = 'return { host = "10.0.0.2", port = 2222, user = "dokku2", key_path = "/k", '
        .. 'known_hosts = "/kh", capacity = { memory_mb = 65536, cpu = 16, instances = 100 }, '
        .. 'labels = { region = "eu", dedicated = true }, draining = true }\n',
      ["hosts/a.lua"] = 'return { name = "a", host = "dokku-a.example.com" }\n',
    }))
    assert.same({
      { name = "a", host = "dokku-a.example.com", port = 22, user = "dokku", key_path = "ssh/dokku_key",
        known_hosts = "ssh/known_hosts", capacity = {}, labels = {}, draining = false, file = "hosts/a.lua" },
      { name = "b", host = "10.0.0.2", port = 2222, user = "dokku2", key_path = "/k", known_hosts = "/kh",
        capacity = { memory_mb = 65536, cpu = 16, instances = 100 }, labels = { region = "eu", dedicated = true },
        draining = true, file = "hosts/b.lua" },
    }, list)
    assert.same({ { name = "a", host = "dokku-a.example.com", port = 22, user = "dokku",
                    key_path = "ssh/dokku_key", known_hosts = "ssh/known_hosts" } },
      hosts.connections({ list[1] }))
    assert.same({}, hosts.connections({ hosts.implicit() }))
  end)

  it("refuses a broken host file with file:line", function()
    local cases = {
      { 'return {\n  host = "h",\n  port = "22",\n}\n', "hosts/x.lua:3: port: expected an integer 1..65535" },
      { 'return {\n  host = "h; rm -rf /",\n}\n', "hosts/x.lua:2: host: expected a DNS name or an IP address" },
      { 'return {\n  host = "h",\n  colour = "blue",\n}\n', "hosts/x.lua:3: unknown field 'colour'" },
      { 'return {\n  name = "y",\n  host = "h",\n}\n', "hosts/x.lua:2: name 'y' must be the file's name, 'x'" },
      { 'return {\n  host = "h",\n  capacity = {\n    disk = 3 },\n}\n',
        "hosts/x.lua:4: capacity: unknown key 'disk'" },
      { 'return {\n  host = "h",\n  capacity = { instances = 0 },\n}\n',
        "hosts/x.lua:3: capacity.instances: expected an integer >= 1" },
      { 'return {\n  host = "h",\n  draining = "yes",\n}\n', "hosts/x.lua:3: draining: expected true or false" },
      { 'return {\n  host = "h",\n  labels = { Region = "eu" },\n}\n', "hosts/x.lua:3: labels: 'Region'" },
      { 'return {\n  host = "h",\n  key_path = "a b",\n}\n', "hosts/x.lua:3: key_path: expected a file path" },
      { 'return "h"\n', "hosts/x.lua:1: a host file must return a table" },
      { 'return {\n  host = \n', "hosts/x.lua:" },
    }
    for _, c in ipairs(cases) do
      local list, err = load_files({ ["hosts/x.lua"] = c[1] })
      assert.is_nil(list, c[1])
      assert.are.equal(c[2], err:sub(1, #c[2]), c[1])
    end
    local _, err = load_files({ ["hosts/Bad.lua"] = 'return { host = "h" }\n' })
    assert.matches("^hosts/Bad%.lua:1: a host file is named <name>%.lua", err)
  end)
end)
