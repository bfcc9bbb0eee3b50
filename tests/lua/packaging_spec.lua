-- The deployment files parse and reference only files that exist (no Docker
-- engine or systemd runs on the development machines: this is what can be
-- checked here).
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
end)
