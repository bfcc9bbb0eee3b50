-- The deployment files parse and reference only files that exist (no Docker
-- engine or systemd runs on the development machines: this is what can be
-- checked here). The built .deb: tests/packaging/deb_spec.lua.
local lyaml = require "lyaml"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then
    f:close()
    return true
  end
  return os.execute("test -d '" .. path .. "'") == true
end

describe("docker/Dockerfile", function()
  local text = read("docker/Dockerfile")

  it("builds on Debian 12 slim in two stages and runs as a non-root user", function()
    local froms = {}
    for image in text:gmatch("\nFROM (%S+)") do
      froms[#froms + 1] = image
    end
    assert.are.same({ "debian:12-slim", "debian:12-slim" }, froms)
    assert.matches("\nUSER mrprov\n", text)
    assert.matches("HEALTHCHECK[^\n]*/live", text)
  end)

  it("copies only files of the repository that exist", function()
    local n = 0
    for line in text:gmatch("\n(COPY [^\n]+)") do
      if not line:find("--from=", 1, true) then
        local words = {}
        for w in line:gmatch("%S+") do
          words[#words + 1] = w
        end
        for i = 2, #words - 1 do
          assert.is_true(exists(words[i]), words[i] .. " does not exist")
          n = n + 1
        end
      end
    end
    assert.is_true(n >= 6)
  end)

  it("ships the profiles and points PROFILES_DIR at them, like the tiers", function()
    assert.matches("\nCOPY profiles %./profiles\n", text)
    assert.matches("PROFILES_DIR=/app/profiles", text, 1, true)
    assert.matches("\nCOPY tiers %./tiers\n", text)
  end)

  it("ships the console and the docs where UI_DIR and DOCS_DIR point by default (./ui, ./docs under /app)", function()
    assert.matches("\nWORKDIR /app\n", text)
    assert.matches("\nCOPY ui %./ui\n", text)
    assert.matches("\nCOPY docs %./docs\n", text)
  end)
end)

describe("docker/docker-compose.yml", function()
  local doc = lyaml.load(read("docker/docker-compose.yml"))

  it("parses and builds from the repository with docker/Dockerfile", function()
    local svc = doc.services.mrprov
    assert.are.equal("..", svc.build.context)
    assert.is_true(exists("docker/" .. svc.build.context .. "/" .. svc.build.dockerfile))
  end)

  it("mounts tiers, profiles and hooks from the repository, the SSH key read-only", function()
    local mounts = {}
    for _, v in ipairs(doc.services.mrprov.volumes) do
      local host, target, mode = v:match("^([^:]+):([^:]+):?(%a*)$")
      mounts[target] = { host = host, mode = mode }
    end
    for _, t in ipairs({ "/app/tiers", "/app/profiles", "/app/hooks" }) do
      assert.is_table(mounts[t], t)
      assert.is_true(exists("docker/" .. mounts[t].host), mounts[t].host)
      assert.are.equal("ro", mounts[t].mode, t)
    end
    assert.are.equal("ro", mounts["/app/ssh"].mode)
    assert.is_table(mounts["/app/data"])
  end)
end)

describe("docker/mrprov.service", function()
  local unit = read("docker/mrprov.service")

  it("reloads with SIGHUP, restarts on failure and is hardened", function()
    for _, want in ipairs({ "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "NoNewPrivileges=yes",
                            "ProtectSystem=strict", "ReadWritePaths=/opt/mrprov/data", "User=mrprov" }) do
      assert.is_truthy(unit:find("\n" .. want .. "\n", 1, true), want)
    end
  end)

  it("is Type=notify: mrprov speaks sd_notify once it listens", function()
    assert.is_truthy(unit:find("\nType=notify\nNotifyAccess=main\n", 1, true))
  end)
end)

-- The .deb's files (cmake/install.cmake; tests/packaging/deb_spec.lua checks
-- the built package).
describe("packaging/", function()
  local unit = read("packaging/mrprov.service.in")
  local env = read("packaging/mrprov.env")

  it("the packaged unit is hardened like docker/mrprov.service, Type=notify, state in /var/lib/mrprov", function()
    local docker = read("docker/mrprov.service")
    for line in docker:gmatch("\n([%w]+=[^\n]*)") do
      local key = line:match("^(%w+)=")
      if not ({ Type = 1, WorkingDirectory = 1, EnvironmentFile = 1, ExecStart = 1, ReadWritePaths = 1 })[key] then
        assert.is_truthy(unit:find("\n" .. line .. "\n", 1, true), line)
      end
    end
    for _, want in ipairs({ "Type=notify", "NotifyAccess=main", "ExecStart=@MRPROV_BINDIR@/mrprov serve",
                            "Environment=MRPROV_ENV_FILE=@MRPROV_SYSCONFDIR@/mrprov.env", "StateDirectory=mrprov",
                            "StateDirectoryMode=0700", "WorkingDirectory=/var/lib/mrprov",
                            "ReadWritePaths=/var/lib/mrprov" }) do
      assert.is_truthy(unit:find("\n" .. want .. "\n", 1, true), want)
    end
    -- only the two placeholders install.cmake fills
    for name in unit:gmatch("@([%w_]+)@") do
      assert.is_truthy(name == "MRPROV_BINDIR" or name == "MRPROV_SYSCONFDIR", name)
    end
  end)

  it("the default settings hold no secret and put state and configuration where the unit allows", function()
    local set = {}
    for line in env:gmatch("[^\n]+") do
      if not line:match("^#") then
        local name, value = line:match("^([A-Z_]+)=(.*)$")
        assert.is_truthy(name, "not NAME=value: " .. line)
        assert.is_falsy(name:find("SECRET") or (name:find("KEY") and not name:find("_PATH$")), line)
        set[name] = value
      end
    end
    assert.are.equal("127.0.0.1", set.HOST)
    assert.is_nil(set.DOKKU_HOST) -- a fresh install runs dry
    for _, name in ipairs({ "STATE_DB", "BACKUP_DIR", "DOKKU_SSH_KEY_PATH", "DOKKU_KNOWN_HOSTS" }) do
      assert.matches("^/var/lib/mrprov/", set[name], 1, false)
    end
    for _, name in ipairs({ "TIERS_DIR", "HOOKS_DIR", "HOSTS_DIR" }) do
      assert.matches("^/etc/mrprov/", set[name])
    end
    -- the package's own data is found beside the binary (SHARE_DIR)
    assert.is_nil(set.LUA_DIR)
    assert.is_nil(set.PROFILES_DIR)
  end)

  it("the maintainer scripts are POSIX sh with set -e", function()
    for _, name in ipairs({ "postinst", "prerm", "postrm" }) do
      local text = read("packaging/" .. name)
      assert.matches("^#!/bin/sh\n", text)
      assert.is_truthy(text:find("\nset %-e\n"), name)
    end
  end)
end)
