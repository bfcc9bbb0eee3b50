-- The Debian package (cmake/install.cmake, `make deb`): CPack builds it
-- from the build directory into a temporary one; it is unpacked into a
-- scratch root (dpkg-deb -x) and checked there: its control fields and
-- dependencies (every library the binary loads, by the package that ships
-- it), its conffiles, the unit (Type=notify), and the installed binary run
-- from the scratch root — `mrprov version`, and `mrprov check` finding the
-- installed Lua, profiles and tiers beside itself, then with the packaged
-- settings file relocated under the scratch root. ctest: packaging_deb.
local H = require "harness"

local q = H.sh_quote
local build = assert(os.getenv("MRPROV_BUILD"), "MRPROV_BUILD: the build directory")

-- Runs a shell command; its exit code and output (stderr too).
local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)\n$"))
  return rc, out:gsub("rc=%d+\n$", "")
end

local function must(cmd)
  local rc, out = sh(cmd)
  assert(rc == 0, cmd .. " failed:\n" .. out)
  return out
end

-- Runs the unpacked binary in cwd with only env (nothing of the caller's
-- environment: no setting leaks in).
local function mrprov(root, cwd, args, env)
  local parts = { "cd", q(cwd), "&&", "env", "-i", "PATH=/usr/bin:/bin" }
  for k, v in pairs(env or {}) do
    parts[#parts + 1] = q(k .. "=" .. v)
  end
  parts[#parts + 1] = q(root .. "/usr/bin/mrprov")
  for _, a in ipairs(args) do
    parts[#parts + 1] = q(a)
  end
  return sh(table.concat(parts, " "))
end

describe("the .deb", function()
  local tmp, deb, root, control, listing

  setup(function()
    tmp = H.tmpdir()
    must("cd " .. q(build) .. " && " .. q(os.getenv("CPACK") or "cpack") .. " -G DEB -B " .. q(tmp .. "/pkg"))
    deb = must("ls " .. q(tmp .. "/pkg") .. "/mrprov_*.deb"):match("[^\n]+")
    root = tmp .. "/root"
    must("dpkg-deb -x " .. q(deb) .. " " .. q(root))
    must("dpkg-deb -e " .. q(deb) .. " " .. q(tmp .. "/control"))
    control = H.read_file(tmp .. "/control/control")
    listing = must("dpkg-deb -c " .. q(deb))
  end)

  teardown(function()
    H.cleanup()
  end)

  local function field(name)
    return control:match("\n" .. name .. ": ([^\n]*)") or control:match("^" .. name .. ": ([^\n]*)")
  end

  it("has the control fields of a Debian package", function()
    assert.are.equal("mrprov", field("Package"))
    local version = must(q(build .. "/mrprov") .. " version"):match("^mrprov (%S+)")
    assert.are.equal(version .. "-1", field("Version"))
    assert.are.equal(must("dpkg --print-architecture"):match("%S+"), field("Architecture"))
    assert.matches("%S+ <[^>]+>", field("Maintainer"))
    assert.are.equal("admin", field("Section"))
    assert.is_truthy(field("Description"))
    assert.is_truthy(deb:find("mrprov_" .. version .. "-1_" .. field("Architecture") .. ".deb", 1, true))
  end)

  it("depends on the package of every library the binary loads, and on what it loads at run time", function()
    local depends = {}
    for dep in field("Depends"):gmatch("[^,]+") do
      depends[dep:match("^%s*([^%s(]+)")] = true
    end
    -- The libraries the binary links (its NEEDED entries; theirs are their
    -- packages' business), by the package that ships each.
    local bin = root .. "/usr/bin/mrprov"
    local where = {}
    for soname, path in must("ldd " .. q(bin)):gmatch("(%S+) => (/%S+)") do
      where[soname] = path
    end
    local n = 0
    for soname in must("readelf -d " .. q(bin)):gmatch("%(NEEDED%)%s+Shared library: %[([^%]]+)%]") do
      local path = assert(where[soname], soname .. ": not found by ldd")
      -- (merged /usr: dpkg may know the file by its other name)
      local real = must("readlink -f " .. q(path)):match("[^\n]+")
      local pkg
      for _, p in ipairs({ path, real, "/usr" .. path, (path:gsub("^/usr/", "/")), "/usr" .. real,
                           (real:gsub("^/usr/", "/")) }) do
        local rc, owner = sh("dpkg -S " .. q(p))
        if rc == 0 then
          pkg = owner:match("^([^:,]+)")
          break
        end
      end
      assert.is_truthy(pkg, path .. ": no package ships it")
      assert.is_true(depends[pkg] == true, pkg .. " (" .. path .. ") is not in Depends: " .. field("Depends"))
      n = n + 1
    end
    assert.is_true(n >= 5)
    -- dlopen'ed libcurl, the Lua modules lua/ requires, postinst's adduser.
    for _, pkg in ipairs({ "libcurl4", "lua-cjson", "lua-yaml", "adduser", "liblua5.4-0", "libmicrohttpd12",
                           "libssh2-1", "libsqlite3-0" }) do
      assert.is_true(depends[pkg] == true, pkg)
    end
  end)

  it("lays the files out: binary, unit, share/mrprov, docs, /etc/mrprov", function()
    for _, path in ipairs({ "./usr/bin/mrprov", "./usr/lib/systemd/system/mrprov.service",
                            "./usr/share/mrprov/lua/boot.lua", "./usr/share/mrprov/lua/resources/app.lua",
                            "./usr/share/mrprov/profiles/mindroom.lua", "./usr/share/mrprov/tiers/free.lua",
                            "./usr/share/mrprov/hooks/README.md", "./usr/share/doc/mrprov/env.example",
                            "./etc/mrprov/mrprov.env", "./etc/mrprov/tiers/free.lua", "./etc/mrprov/hooks/",
                            "./etc/mrprov/hosts/" }) do
      assert.is_truthy(listing:find(" " .. path .. "\n", 1, true), path)
    end
    -- the settings file: root:root 0640 in the archive (postinst gives it
    -- to group mrprov); nothing of the build tree
    assert.matches("\n%-rw%-r%-%-%-%-%- root/root +%d+ [^\n]* %./etc/mrprov/mrprov%.env\n", "\n" .. listing)
    assert.is_nil(listing:find("build/", 1, true))
    for _, dir in ipairs({ "ui", "docs" }) do
      if os.execute("test -d " .. q(H.root .. "/" .. dir)) then
        assert.is_truthy(listing:find(" ./usr/share/mrprov/" .. dir .. "/", 1, true), dir)
      end
    end
  end)

  it("marks the settings and the tiers as conffiles, and the settings hold no secret", function()
    local want = { "/etc/mrprov/mrprov.env" }
    for name in must("ls " .. q(H.root .. "/tiers")):gmatch("[^\n]+") do
      want[#want + 1] = "/etc/mrprov/tiers/" .. name
    end
    local got = {}
    for line in H.read_file(tmp .. "/control/conffiles"):gmatch("[^\n]+") do
      got[#got + 1] = line
    end
    table.sort(want)
    table.sort(got)
    assert.are.same(want, got)
    local env = H.read_file(root .. "/etc/mrprov/mrprov.env")
    for line in env:gmatch("[^\n]+") do
      local name = line:match("^%s*([A-Z_]+)=")
      if name then
        assert.is_falsy(name:find("SECRET") or (name:find("KEY") and not name:find("_PATH$")), line)
      end
    end
  end)

  it("ships a Type=notify unit running the installed binary as mrprov with /etc/mrprov/mrprov.env", function()
    local unit = H.read_file(root .. "/usr/lib/systemd/system/mrprov.service")
    for _, want in ipairs({ "Type=notify", "NotifyAccess=main", "User=mrprov", "Group=mrprov",
                            "ExecStart=/usr/bin/mrprov serve", "ExecReload=/bin/kill -HUP $MAINPID",
                            "Environment=MRPROV_ENV_FILE=/etc/mrprov/mrprov.env", "StateDirectory=mrprov",
                            "WorkingDirectory=/var/lib/mrprov", "ReadWritePaths=/var/lib/mrprov",
                            "WantedBy=multi-user.target" }) do
      assert.is_truthy(unit:find("\n" .. want .. "\n", 1, true), want)
    end
    local postinst = H.read_file(tmp .. "/control/postinst")
    assert.matches("adduser %-%-system", postinst)
    assert.matches("install %-d %-o mrprov %-g mrprov %-m 0700 /var/lib/mrprov", postinst)
    assert.matches("chown root:mrprov /etc/mrprov/mrprov.env", postinst, 1, true)
  end)

  it("runs from the scratch root: version, and check with the installed data found beside the binary", function()
    local cwd = H.tmpdir()
    local rc, out = mrprov(root, cwd, { "version" })
    assert.are.equal(0, rc, out)
    assert.matches("^mrprov %d+%.%d+%.%d+\nlua 5%.4", out)
    -- No settings at all: everything from <root>/usr/share/mrprov.
    rc, out = mrprov(root, cwd, { "check" })
    assert.are.equal(0, rc, out)
    local share = must("readlink -f " .. q(root .. "/usr/share/mrprov")):match("[^\n]+")
    assert.is_truthy(out:find("tiers (4) from " .. share .. "/tiers:", 1, true), out)
    assert.is_truthy(out:find("profiles (2) from " .. share .. "/profiles,", 1, true), out)
    assert.is_truthy(out:find("resources (", 1, true) and out:find(") from " .. share .. "/lua/resources:", 1, true),
      out)
    assert.is_truthy(out:find("\nlua: ok\n", 1, true), out)
  end)

  it("runs from the scratch root with the packaged settings file (relocated there)", function()
    local cwd, state = H.tmpdir(), H.tmpdir()
    local env = H.read_file(root .. "/etc/mrprov/mrprov.env")
    env = env:gsub("/etc/mrprov", root .. "/etc/mrprov"):gsub("/var/lib/mrprov", state)
    local f = assert(io.open(cwd .. "/mrprov.env", "w"))
    f:write(env)
    f:close()
    local rc, out = mrprov(root, cwd, { "check" }, { MRPROV_ENV_FILE = cwd .. "/mrprov.env" })
    assert.are.equal(0, rc, out)
    local share = must("readlink -f " .. q(root .. "/usr/share/mrprov")):match("[^\n]+")
    assert.is_truthy(out:find("tiers (4) from " .. root .. "/etc/mrprov/tiers:", 1, true), out)
    assert.is_truthy(out:find("hooks (0) from " .. root .. "/etc/mrprov/hooks:", 1, true), out)
    assert.is_truthy(out:find("profiles (2) from " .. share .. "/profiles,", 1, true), out)
    -- SHARE_DIR names the data explicitly; a settings file that is not
    -- there is an error, not silently no settings.
    rc, out = mrprov(root, cwd, { "check" }, { SHARE_DIR = root .. "/usr/share/mrprov" })
    assert.are.equal(0, rc, out)
    assert.is_truthy(out:find("tiers (4) from " .. root .. "/usr/share/mrprov/tiers:", 1, true), out)
    rc, out = mrprov(root, cwd, { "check" }, { MRPROV_ENV_FILE = cwd .. "/missing.env" })
    assert.are.equal(1, rc, out)
    assert.matches("MRPROV_ENV_FILE: cannot read .*missing%.env", out)
  end)
end)
