-- The Dokku simulator through a real OpenSSH sshd and the real ssh client:
-- dokku.md §7 line by line, Dokku's re-splitting of SSH_ORIGINAL_COMMAND,
-- --quiet, --encoded, deploys, links, destroy rules, export streaming, fault
-- injection, the command log and concurrent sessions.
local D = require "dokku_harness"
local cjson = require "cjson"
local socket = require "socket"

local q = D.quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end

local function b64(s)
  local abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local chunk = { (n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63 }
    for k = 1, 4 do
      out[#out + 1] = abc:sub(chunk[k] + 1, chunk[k] + 1)
    end
    if not b then
      out[#out], out[#out - 1] = "=", "="
    elseif not c then
      out[#out] = "="
    end
  end
  return table.concat(out)
end

-- the simulator processes still running for this harness
local function sim_processes(h)
  local n = 0
  local p = io.popen("ls /proc")
  for pid in p:lines() do
    if pid:match("^%d+$") then
      local c = read_file("/proc/" .. pid .. "/cmdline")
      if c and c:find("dokku-sim", 1, true) then
        local e = read_file("/proc/" .. pid .. "/environ")
        if e and e:find(h.state, 1, true) then
          n = n + 1
        end
      end
    end
  end
  p:close()
  return n
end

-- runs several ssh clients at once (separate connections); returns their exit codes
local function parallel(h, cmds)
  local p = io.popen("mktemp -d /tmp/mrprov-par-XXXXXX")
  local tmp = p:read("l")
  p:close()
  local parts = {}
  for i, c in ipairs(cmds) do
    parts[#parts + 1] = "( " .. D.ssh_argv(h) .. " -- " .. q(c) .. " </dev/null >" .. q(tmp .. "/out" .. i) ..
      " 2>" .. q(tmp .. "/err" .. i) .. "; echo $? >" .. q(tmp .. "/rc" .. i) .. " ) &"
  end
  os.execute(table.concat(parts, " ") .. " wait")
  local res = {}
  for i = 1, #cmds do
    res[i] = {
      code = tonumber(read_file(tmp .. "/rc" .. i)),
      out = read_file(tmp .. "/out" .. i) or "",
      err = read_file(tmp .. "/err" .. i) or "",
    }
  end
  os.execute("rm -rf " .. q(tmp))
  return res
end

describe("dokku-sim over a real sshd #integration", function()
  local h

  local function run(cmdline, opts)
    opts = opts or {}
    if opts.mux == nil then
      opts.mux = true
    end
    return D.ssh(h, cmdline, opts)
  end

  local function ok(cmdline, opts)
    local code, out, err = run(cmdline, opts)
    assert.are.equal(0, code, cmdline .. " → " .. tostring(code) .. "\n" .. out .. err)
    return out, err
  end

  setup(function()
    h = D.start()
  end)

  teardown(function()
    D.stop(h)
  end)

  describe("the harness #integration", function()
    it("starts sshd on a random loopback port with Dokku's authorized_keys line", function()
      assert.is_true(h.port >= 20000 and h.port < 60000)
      assert.are.equal(io.popen("id -un"):read("l"), h.user)
      local ak = read_file(h.dir .. "/authorized_keys")
      local cmd = ak:match('^command="FINGERPRINT=SHA256:%S+ NAME=\\"mrprov\\" DOKKU_SIM_STATE=(%S+) (%S+) ' ..
        '%$SSH_ORIGINAL_COMMAND",no%-agent%-forwarding,no%-user%-rc,no%-X11%-forwarding,no%-port%-forwarding ' ..
        "ssh%-ed25519 AAAA")
      assert.are.equal(h.state, cmd)
      assert.matches("^%[127%.0%.0%.1%]:" .. h.port .. " ssh%-ed25519 AAAA%S+\n$", read_file(h.known_hosts))
      local env = read_file(h.dir .. "/harness.env")
      assert.matches("MRPROV_SSH_PORT=" .. h.port, env)
      assert.matches("LogLevel VERBOSE", read_file(h.dir .. "/sshd_config"))
    end)

    it("the simulator refuses to run without DOKKU_SIM_STATE", function()
      local p = io.popen("env -u DOKKU_SIM_STATE -u SSH_ORIGINAL_COMMAND " .. q(D.sim) .. " version 2>&1; echo rc=$?")
      local out = p:read("a")
      p:close()
      assert.matches("DOKKU_SIM_STATE", out)
      assert.matches("rc=1", out)
    end)

    it("runs from the compiled copy only while it was compiled from the simulator's source as it is", function()
      local cache = h.state .. "/.dokku-sim.luac"
      local code, out = D.run_local(h, { "version" })
      assert.are.equal(0, code)
      assert.matches("^dokku version ", out)
      local kept = read_file(cache)
      local src = read_file(D.root .. "/tests/fixtures/dokku-sim")
      assert.are.equal(#src .. "\n" .. src, kept:sub(1, #tostring(#src) + 1 + #src))
      -- a copy of another source (an edited simulator) is not used: its
      -- "bytecode" here would print something else, or fail to load
      local f = assert(io.open(cache, "wb"))
      f:write("3\nold", string.dump(load("io.write('stale copy') os.exit(0)")))
      f:close()
      code, out = D.run_local(h, { "version" })
      assert.are.equal(0, code)
      assert.matches("^dokku version ", out)
      assert.are.equal(kept, read_file(cache)) -- compiled again and kept
    end)

    it("stops sshd with its sessions and restarts it on the same port and host key", function()
      local kh = read_file(h.known_hosts)
      local port = h.port
      D.stop_sshd(h)
      local code = run("version", { mux = false })
      assert.are.equal(255, code)
      D.start_sshd(h)
      assert.are.equal(port, h.port)
      assert.are.equal(kh, read_file(h.known_hosts))
      local out = ok("version")
      assert.are.equal("dokku version 0.35.20\n", out)
    end)
  end)

  describe("dokku.md §7 cheat-sheet #integration", function()
    setup(function()
      D.reset(h)
    end)

    local function check(cmdline, exit, stdout, stderr, opts)
      local code, out, err = run(cmdline, opts)
      assert.are.equal(exit, code, cmdline .. "\n" .. out .. err)
      if stdout then
        assert.are.equal(stdout, out, cmdline)
      end
      if stderr then
        assert.are.equal(stderr, err, cmdline)
      end
      return out, err
    end

    it("version", function()
      check("version", 0, "dokku version 0.35.20\n", "")
    end)

    it("--quiet apps:list with no apps warns and exits 0", function()
      check("--quiet apps:list", 0, "", " !     You haven't deployed any applications yet\n")
    end)

    it("apps:create new / existing / Bad_Name", function()
      check("apps:create new", 0, "-----> Creating new...\n-----> Creating new app virtual host file...\n", "")
      check("apps:create new", 1, "", " !     Name is already taken\n")
      check("apps:create Bad_Name", 1, "", " !     App name must begin with lowercase alphanumeric character, and " ..
        "cannot include uppercase characters, colons, or underscores\n")
      check("--quiet apps:list", 0, "new\n", "")
    end)

    it("apps:exists missing / existing", function()
      check("apps:exists missing", 20, "", " !     App missing does not exist\n")
      check("apps:exists new", 0, "", "")
    end)

    it("config:set --no-restart prints the values; --encoded with bad base64 fails", function()
      check("config:set --no-restart new K=v", 0, "-----> Setting config vars\n       K:  v\n", "")
      check("config:set --encoded --no-restart new K=!!!", 1, "",
        " !     illegal base64 data at input byte 0 for key 'K'\n")
    end)

    it("config:get of a missing key prints nothing and exits 1", function()
      check("config:get new MISSING", 1, "", "")
      check("config:get new K", 0, "v\n", "")
    end)

    it("resource:limit --memory 512", function()
      check("resource:limit --memory 512 new", 0, "=====> Setting resource limits for new\n       memory: 512\n", "")
    end)

    it("storage:mount twice", function()
      check("storage:mount new /a:/b", 0, "", "")
      check("storage:mount new /a:/b", 1, "", " !     Mount path already exists.\n")
    end)

    it("domains:set on an undeployed app", function()
      check("domains:set new a.example.com", 0, "-----> Set a.example.com for new\n",
        " !     No web listeners specified for new\n" ..
        " !     Please run dokku letsencrypt:enable to add https support to the new domain\n")
    end)

    it("letsencrypt:enable without an e-mail; letsencrypt:active", function()
      check("letsencrypt:enable new", 1, "=====> Enabling letsencrypt for new\n",
        " !     ERROR: Cannot request a certificate without an e-mail address!\n" ..
        " !       please provide your e-mail address using\n" ..
        " !       dokku letsencrypt:set new email <e-mail>\n")
      check("letsencrypt:active new", 0, "false\n", "")
    end)

    it("ps:restart of an undeployed app", function()
      check("ps:restart new", 0, "", " !     App new has not been deployed\n")
    end)

    it("postgres: create twice, link twice, unlink when not linked, exists, destroy linked", function()
      local out = check("postgres:create db", 0, nil, "")
      assert.matches("=====> Postgres container created: db\n", out, 1, true)
      check("postgres:create db", 1, "", " !     Postgres service db already exists\n")
      check("postgres:unlink db new", 1, "", " !     Not linked to app new\n")
      check("postgres:link db new --no-restart", 0)
      check("postgres:link db new --no-restart", 1, "", " !     Already linked as DATABASE_URL\n")
      check("postgres:exists nope", 1, "", " !     Postgres service nope does not exist\n")
      check("postgres:exists db", 0, "-----> Service db exists\n", "")
      check("postgres:destroy db -f", 1, "", " !     Cannot delete linked service\n")
    end)

    it("network:create of an existing network", function()
      check("network:create net", 0, "-----> Creating network net\n", "")
      -- the message is printed before docker is asked (LogInfo1Quiet), so stdout is not empty
      check("network:create net", 1, "-----> Creating network net\n",
        " !     Unable to create network: Error response from daemon: " ..
        "network with name net already exists\n")
    end)

    it("git:from-image with the image of the last deploy exits 1", function()
      local out = check("git:from-image new img:1", 0)
      assert.matches("=====> Application deployed:", out, 1, true)
      check("git:from-image new img:1", 1,
        "-----> Generating build context\n-----> Image exists on host, skipping pull\n" ..
        "-----> Updating git repository with specified build context\n",
        " !     No changes detected, skipping git commit\n" ..
        " !     Call 'ps:rebuild' on app to rebuild the app from existing source\n")
    end)

    it("an unknown command", function()
      check("foo:bar", 1, "", " !     `foo:bar` is not a dokku command.\n" ..
        " !     See `dokku help` for a list of available commands.\n")
      check("foo:bar x y", 1, "", " !     `foo:bar x y` is not a dokku command.\n" ..
        " !     See `dokku help` for a list of available commands.\n")
    end)

    it("apps:destroy --force", function()
      local out = check("apps:destroy new --force", 0)
      assert.matches("^%-%-%-%-%-> Destroying new %(including all add%-ons%)\n", out)
      assert.matches("       Unlinking from db\n", out, 1, true)
      check("apps:exists new", 20)
    end)
  end)

  describe("re-splitting of SSH_ORIGINAL_COMMAND #integration", function()
    setup(function()
      D.reset(h)
      ok("apps:create app")
    end)

    it("groups quoted words like xargs: config:set app 'K=a b'", function()
      ok("config:set --no-restart app 'K=a b' \"Q=it's\" 'S=it'\\''s' E=a\\\\b")
      assert.are.equal("a b\n", ok("config:get app K"))
      assert.are.equal("it's\n", ok("config:get app Q"))
      assert.are.equal("it's\n", ok("config:get app S"))
      assert.are.equal("a\\b\n", ok("config:get app E"))
      local log = D.log(h)
      assert.are.same({ "config:set", "--no-restart", "app", "K=a b", "Q=it's", "S=it's", "E=a\\b" },
        log[#log - 4].argv)
    end)

    it("an unmatched quote: xargs complains and Dokku runs the truncated command", function()
      local code, out, err = run("config:set --no-restart app 'K=a b")
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.are.equal("xargs: unmatched single quote; by default quotes are special to xargs unless you use " ..
        "the -0 option\n !     At least one env pair must be given\n", err)
    end)

    it("echo eats -n: postgres:link ... -n restarts the app, --no-restart does not", function()
      ok("postgres:create pg1")
      ok("postgres:create pg2")
      local out, err = ok("postgres:link pg1 app -n")
      assert.matches("-----> Restarting app app", out, 1, true)
      assert.matches("App image (dokku/app:latest) not found", err, 1, true)
      local log = D.log(h)
      assert.are.same({ "postgres:link", "pg1", "app" }, log[#log].argv)
      out = ok("postgres:link pg2 app --no-restart")
      assert.matches("Skipping restart of linked app", out, 1, true)
      assert.is_nil(out:find("Restarting", 1, true))
      -- the second postgres service gets a colour alias
      local env = D.state(h).apps.app.env
      assert.matches("@dokku%-postgres%-pg1:5432/pg1$", env.DATABASE_URL)
      assert.matches("@dokku%-postgres%-pg2:5432/pg2$", env.DOKKU_POSTGRES_AQUA_URL)
    end)

    it("git:* commands are split on whitespace only, quotes stay", function()
      local out = ok("git:from-image app 'my img:1'")
      assert.matches("Pulling image", out, 1, true)
      local log = D.log(h)
      assert.are.same({ "git:from-image", "app", "'my", "img:1'" }, log[#log].argv)
      assert.are.equal("'my\n", ok("apps:report app --app-deploy-source-metadata"))
    end)

    it("matches GNU xargs + coreutils echo exactly (differential)", function()
      if not io.popen("command -v xargs"):read("l") then
        pending("xargs is not installed")
        return
      end
      local cases = {
        "config:set app 'K=a b'", [[a 'it'\''s' "it's" a\\b]], "a '' b", "x -n y", "-e -E -ne z -nq",
        "a 'b", [[a "b c]], [[a\ b 'c d'"e f"g]], "--help", "a --version", "  lead  trail  ", "tab\there",
        "'-n'", "a\\\nb", "\r a\vb", "a ''", "''", "x\\", "a 'x\ny' c", "don't",
      }
      for _, c in ipairs(cases) do
        local p = io.popen("bash -c " .. q([[readarray -t a < <(printf '%s' "$1" | xargs -n 1 2>/dev/null); ]] ..
          [[printf '%s\n' "${#a[@]}"; for x in "${a[@]}"; do printf '%s' "$x" | base64 -w0; echo; done]]) ..
          " _ " .. q(c))
        local n = tonumber(p:read("l"))
        local want = {}
        for i = 1, n do
          local line = p:read("l")
          local d = io.popen("printf '%s' " .. q(line) .. " | base64 -d")
          want[i] = d:read("a")
          d:close()
        end
        p:close()
        local before = #D.log(h)
        D.run_local(h, { "foo:bar" }, { ssh_original_command = c })
        local log = D.log(h)
        assert.are.equal(before + 1, #log)
        assert.are.same(want, log[#log].argv, "re-split of " .. string.format("%q", c))
      end
    end)

    it("a command line over 128 KiB cannot reach Dokku (the kernel's limit on SSH_ORIGINAL_COMMAND)", function()
      -- two 70 KB words: each fits the client's argv, together they exceed the server's env limit
      local p = io.popen("v=$(head -c 70000 /dev/zero | tr '\\0' A); " .. D.ssh_argv(h) ..
        " -- config:set --no-restart app K=$v L=$v </dev/null 2>&1; echo rc=$?")
      local out = p:read("a")
      p:close()
      assert.matches("Argument list too long", out, 1, true)
      assert.matches("rc=1\n$", out)
    end)

    it("global flags: --quiet anywhere, leading flags shifted, a trailing --quiet breaks Go commands", function()
      local code, _, err = run("apps:create other --quiet")
      assert.are.equal(2, code)
      assert.matches("^unknown flag: %-%-quiet\nUsage of apps:create:\n", err)
      assert.are.equal("", (ok("--quiet apps:create other")))
      assert.matches("^%-%-%-%-%-> Destroying other", (ok("--quiet --force apps:destroy other")))
    end)
  end)

  describe("--quiet and --encoded #integration", function()
    setup(function()
      D.reset(h)
      ok("apps:create sec")
      ok("postgres:create sdb")
    end)

    it("--quiet hides the values config:set would print", function()
      local out, err = ok("--quiet config:set --no-restart sec SECRET=hunter2")
      assert.are.equal("", out)
      assert.are.equal("", err)
      out = ok("config:set --no-restart sec OTHER=visible")
      assert.matches("OTHER:  visible", out, 1, true)
      assert.are.equal("hunter2", D.state(h).apps.sec.env.SECRET)
    end)

    it("--quiet hides the database URL postgres:link would print", function()
      local out = ok("--quiet postgres:link sdb sec --no-restart")
      assert.are.equal("       Skipping restart of linked app\n", out)
      local url = D.state(h).apps.sec.env.DATABASE_URL
      assert.matches("^postgres://postgres:%x+@dokku%-postgres%-sdb:5432/sdb$", url)
      assert.are.equal(32, #url:match("postgres:(%x+)@"))
      assert.are.equal(url .. "\n", ok("postgres:info sdb --dsn"))
    end)

    it("config:set --encoded round-trips any bytes (newlines, quotes, UTF-8, binary)", function()
      local values = {
        A = "line1\nline2\n", B = [[it's "quoted" $HOME `x` \ back]], C = "ünïcødé ✓", D = "\0\1\2\255\254 end",
        E = "", F = "agents:\n  - name: x\n    text: 'a b'\n",
      }
      local pairs_ = {}
      for k, v in pairs(values) do
        pairs_[#pairs_ + 1] = k .. "=" .. b64(v)
      end
      table.sort(pairs_)
      local out = ok("config:set --encoded --no-restart sec " .. table.concat(pairs_, " "))
      assert.matches("-----> Setting config vars", out, 1, true)
      local env = D.state(h).apps.sec.env
      for k, v in pairs(values) do
        assert.are.equal(v, env[k], k)
      end
      assert.are.equal("ünïcødé ✓\n", ok("config:get sec C"))
      local js = cjson.decode((ok("config:export --format json sec")))
      assert.are.equal(values.A, js.A)
      assert.are.equal(values.B, js.B)
      -- Go's encoder: invalid UTF-8 becomes U+FFFD, < > & are escaped
      assert.are.equal("\0\1\2\239\191\189\239\191\189 end", js.D)
    end)

    it("config:set --encoded follows Go's StdEncoding: padding required, \\n ignored, no URL alphabet", function()
      assert.are.equal("ABC\n", (function()
        ok("config:set --encoded --no-restart sec X=QUJD")
        return ok("config:get sec X")
      end)())
      ok("config:set --encoded --no-restart sec X=QUI=")
      assert.are.equal("AB\n", ok("config:get sec X"))
      local code, _, err = run("config:set --encoded --no-restart sec Y=QQ")
      assert.are.equal(1, code)
      assert.are.equal(" !     illegal base64 data at input byte 0 for key 'Y'\n", err)
      code, _, err = run("config:set --encoded --no-restart sec Y=QUJD-A==")
      assert.are.equal(1, code)
      assert.are.equal(" !     illegal base64 data at input byte 4 for key 'Y'\n", err)
      code, _, err = run("config:set --encoded --no-restart sec OK=QUJD BAD=QQ=")
      assert.are.equal(1, code)
      assert.are.equal(" !     illegal base64 data at input byte 3 for key 'BAD'\n", err)
      assert.is_nil(D.state(h).apps.sec.env.OK, "nothing is written when one pair is bad")
      code, _, err = run("config:set --no-restart sec 1BAD=x")
      assert.are.equal(1, code)
      assert.are.equal(" !     Invalid key name: '1BAD'\n", err)
    end)
  end)

  -- issue 12 item 17: Dokku v0.38.27 pins godotenv v1.5.1 (plugins/config/
  -- go.mod; v0.35.20: v1.2.0), whose Marshal writes an Atoi-able value as a
  -- bare integer and whose parser reads `\\"` at a value's end as an escaped
  -- quote: the simulator ports Marshal and the parser (parseBytes).
  describe("Dokku 0.38 ENV files (godotenv v1.5.1) #integration", function()
    setup(function()
      D.reset(h)
      ok("apps:create genv")
    end)

    after_each(function()
      D.settings(h, {})
    end)

    local function set(app, k, v)
      return run("config:set --encoded --no-restart " .. app .. " " .. k .. "=" .. b64(v))
    end

    it("normalises numbers and mangles a trailing quote on v0.38, keeps them on v0.35", function()
      D.settings(h, { version = "current" })
      assert.are.equal(0, (set("genv", "A", "007")))
      assert.are.equal(0, (set("genv", "B", "+5")))
      assert.are.equal(0, (set("genv", "D", "-0")))
      assert.are.equal(0, (set("genv", "E", "$HOME ${X} \\n `x` !")))
      assert.are.equal(0, (set("genv", "F", "99999999999999999999")))
      local js = cjson.decode((ok("config:export --format json genv")))
      assert.are.equal("7", js.A)
      assert.are.equal("5", js.B)
      assert.are.equal("0", js.D)
      assert.are.equal("$HOME ${X} \\n `x` !", js.E)
      assert.are.equal("99999999999999999999", js.F)
      assert.matches("\nA=7\n", "\n" .. ok("config:export --format envfile genv"))
      -- a trailing quote comes back as a trailing backslash, which the next write cannot survive
      ok("apps:create genv4")
      assert.are.equal(0, (set("genv4", "C", 'say "hi"')))
      assert.are.equal('say "hi\\', cjson.decode((ok("config:export --format json genv4"))).C)
      assert.are.equal(0, (set("genv4", "OTHER", "x")))
      assert.are.equal(1, (run("config:export --format json genv4")))
      D.settings(h, {})
      assert.are.equal(0, (set("genv", "A", "007")))
      assert.are.equal("007\n", ok("config:get genv A"))
      assert.matches('\nA="007"\n', "\n" .. ok("config:export --format envfile genv"))
    end)

    it("a value ending in a backslash leaves the app's ENV unreadable on v0.38", function()
      D.settings(h, { version = "current" })
      ok("apps:create genv2")
      assert.are.equal(0, (set("genv2", "Z", "C:\\")))
      local code, _, err = run("config:export --format json genv2")
      assert.are.equal(1, code)
      assert.matches('^ !     unterminated quoted value "C:\\\\"\n$', err)
      -- every config command of the app fails from now on, config:set included
      code = set("genv2", "OTHER", "x")
      assert.are.equal(1, code)
      -- with a key after it, the value runs into the next line instead
      ok("apps:create genv3")
      ok("config:set --encoded --no-restart genv3 A=" .. b64("x\\") .. " B=" .. b64("y"))
      code, _, err = run("config:export --format json genv3")
      assert.are.equal(1, code)
      assert.matches("^ !     ", err)
    end)
  end)

  describe("the Dsn postgres:create and redis:create print under --quiet #integration", function()
    setup(function()
      D.reset(h)
    end)

    it("carries the service password, like dokku-postgres/dokku-redis service_info", function()
      local out = ok("--quiet postgres:create dsndb")
      local pw = D.state(h).services.postgres.dsndb.password
      assert.matches("\n       Dsn:                 postgres://postgres:" .. pw .. "@dokku%-postgres%-dsndb:5432/dsndb",
        out)
      out = ok("--quiet redis:create dsnr")
      pw = D.state(h).services.redis.dsnr.password
      assert.matches("\n       Dsn:                 redis://:" .. pw .. "@dokku%-redis%-dsnr:6379", out)
    end)
  end)

  describe("deploys, reports and links #integration", function()
    setup(function()
      D.reset(h)
      ok("apps:create web")
    end)

    it("git:from-image sets the deploy source to docker-image and its metadata to the image", function()
      assert.are.equal("\n", ok("apps:report web --app-deploy-source"))
      ok("git:from-image web ghcr.io/acme/web:1.0")
      assert.are.equal("docker-image\n", ok("apps:report web --app-deploy-source"))
      assert.are.equal("ghcr.io/acme/web:1.0\n", ok("apps:report web --app-deploy-source-metadata"))
      local js = cjson.decode((ok("apps:report web --format json")))
      assert.are.equal("docker-image", js["app-deploy-source"])
      assert.are.equal("/home/dokku/web", js["app-dir"])
      local code = run("git:from-image web ghcr.io/acme/web:1.0")
      assert.are.equal(1, code)
      ok("git:from-image web ghcr.io/acme/web:1.1")
      assert.are.equal("ghcr.io/acme/web:1.1\n", ok("apps:report web --app-deploy-source-metadata"))
      assert.are.equal("true\n", ok("ps:report web --running"))
      local code2, _, err = run("apps:report web --nope")
      assert.are.equal(1, code2)
      assert.are.equal(" !     Invalid flag passed, valid flags: --app-created-at, --app-deploy-source, " ..
        "--app-deploy-source-metadata, --app-dir, --app-locked\n", err)
    end)

    it("resource:report --format json uses Dokku's keys; storage:list and domains:report", function()
      ok("resource:limit --memory 512m --cpu 0.5 web")
      assert.are.same({ ["_default_.limit.memory"] = "512m", ["_default_.limit.cpu"] = "0.5" },
        cjson.decode((ok("resource:report web --format json"))))
      ok("resource:limit --process-type worker --memory 1g web")
      assert.are.equal("1g\n", ok("resource:report web --resource-worker.limit.memory"))
      ok("storage:ensure-directory --chown false web-data")
      ok("storage:mount web /var/lib/dokku/data/storage/web-data:/data")
      assert.are.equal("/var/lib/dokku/data/storage/web-data:/data\n", ok("storage:list web"))
      assert.are.same({ { host_path = "/var/lib/dokku/data/storage/web-data", container_path = "/data",
        volume_options = "" } }, cjson.decode((ok("storage:list web --format json"))))
      ok("domains:set web api.example.com www.example.com")
      assert.are.equal("api.example.com www.example.com\n", ok("domains:report web --domains-app-vhosts"))
      assert.are.same({ "api.example.com", "www.example.com" }, D.state(h).apps.web.domains)
      local code, out = run("storage:ensure-directory --chown root web-root")
      assert.are.equal(1, code)
      assert.matches(" !     Unsupported chown permissions. Supported values: 32767, 1000, 2000\n$", out)
    end)

    it("letsencrypt: email from the app or --global, then active is true", function()
      ok("letsencrypt:set --global email ops@example.com")
      local out = ok("letsencrypt:enable web")
      assert.matches("Certificate retrieved successfully.", out, 1, true)
      assert.are.equal("true\n", ok("letsencrypt:active web"))
      ok("domains:set web other.example.com")
      assert.are.equal("false\n", ok("letsencrypt:active web"))
    end)

    it("link / linked / unlink for postgres and redis", function()
      ok("postgres:create wdb")
      ok("redis:create wcache")
      local code, _, err = run("postgres:linked wdb web")
      assert.are.equal(1, code)
      assert.are.equal(" !     Service wdb is not linked to web\n", err)
      local out = ok("postgres:link wdb web --no-restart")
      assert.matches("DATABASE_URL:  postgres://postgres:", out, 1, true)
      ok("redis:link wcache web --no-restart")
      assert.are.equal("-----> Service wdb is linked to web\n", ok("postgres:linked wdb web"))
      assert.are.equal("web\n", ok("postgres:links wdb"))
      local env = D.state(h).apps.web.env
      assert.matches("^redis://:%x+@dokku%-redis%-wcache:6379$", env.REDIS_URL)
      assert.are.equal(64, #env.REDIS_URL:match("://:(%x+)@"))
      out = ok("postgres:unlink wdb web --no-restart")
      assert.are.equal("-----> Unsetting DATABASE_URL\n       Skipping restart of linked app\n", out)
      assert.is_nil(D.state(h).apps.web.env.DATABASE_URL)
      assert.are.equal(1, (run("postgres:linked wdb web")))
      assert.are.equal("", ok("postgres:links wdb"))
    end)
  end)

  describe("ports, limits cleared, the storage root #integration", function()
    setup(function()
      D.reset(h)
      ok("apps:create pw")
    end)
    teardown(function()
      D.settings(h, {})
    end)

    it("ports:set and ports:report in v0.35.20 and the current release; EXPOSE gives http:P:P", function()
      for _, version in ipairs({ "0.35.20", "current" }) do
        D.settings(h, { version = version, exposed_ports = { ["img:1"] = { 8008 } } })
        ok("ports:clear pw")
        assert.are.equal("\n", ok("ports:report pw --ports-map"))
        assert.are.equal("http:80:5000\n", ok("ports:report pw --ports-map-detected"))
        local code, _, err = run("ports:set pw http:80:x")
        assert.are.equal(1, code)
        assert.are.equal(' !     Invalid port map http:80:x [err=strconv.Atoi: parsing "x": invalid syntax]\n', err)
        code, _, err = run("ports:set pw http:80:1 http:80:2")
        assert.are.equal(1, code)
        assert.matches("The same scheme:host%-port is being reused: http:80", err)
        ok("ports:set pw http:80:8008")
        assert.are.equal("http:80:8008\n", ok("ports:report pw --ports-map"))
        local js = cjson.decode((ok("ports:report pw --format json")))
        if version == "current" then
          assert.are.equal("http:80:8008", js.map) -- TrimPrefix, plus the legacy key
          assert.are.equal("http:80:8008", js["ports-map"])
        else
          assert.is_nil(js.map)
          assert.are.equal("http:80:8008", js["ports-map"])
        end
      end
    end)

    it("a deploy detects EXPOSEd ports; a certificate adds https:443 next to http:80", function()
      D.settings(h, { exposed_ports = { ["img:1"] = { 8008 } } })
      ok("domains:set pw pw.example.com")
      ok("git:from-image pw img:1")
      assert.are.equal("http:8008:8008\n", ok("ports:report pw --ports-map-detected"))
      ok("letsencrypt:set pw email ops@example.com")
      ok("letsencrypt:enable pw")
      assert.are.equal("http:80:8008 https:443:8008\n", ok("ports:report pw --ports-map"))
      -- active compares the certificate of the current first domain only
      ok("domains:set pw pw.example.com more.example.com")
      assert.are.equal("true\n", ok("letsencrypt:active pw"))
      ok("domains:set pw new.example.com")
      assert.are.equal("false\n", ok("letsencrypt:active pw"))
      ok("letsencrypt:disable pw")
      assert.are.equal("http:80:8008\n", ok("ports:report pw --ports-map"))
    end)

    it("resource:limit clear removes the limit from resource:report", function()
      ok("resource:limit --memory 512m --cpu 0.5 pw")
      local out = ok("resource:limit --memory clear --cpu clear pw")
      assert.matches("memory: cleared", out, 1, true)
      assert.are.equal("{}\n", ok("resource:report pw --format json"))
    end)

    it("storage:ensure-directory creates under DOKKU_LIB_ROOT/data/storage", function()
      D.settings(h, { lib_root = "/opt/dokku" })
      assert.matches("-----> Ensuring /opt/dokku/data/storage/pw-data exists", ok("storage:ensure-directory pw-data"),
        1, true)
    end)
  end)

  describe("destroy rules #integration", function()
    setup(function()
      D.reset(h)
      ok("apps:create keep")
      ok("postgres:create ddb")
      ok("postgres:link ddb keep --no-restart")
    end)

    it("a linked service cannot be destroyed, even with -f", function()
      assert.are.equal(1, (run("postgres:destroy ddb -f")))
      assert.are.equal(1, (run("--force postgres:destroy ddb")))
    end)

    it("without force the confirmation is read from stdin (EOF → exit 1)", function()
      ok("postgres:unlink ddb keep --no-restart")
      local code, out, err = run("postgres:destroy ddb")
      assert.are.equal(1, code)
      assert.are.equal("\n", out)
      assert.are.equal(" !     WARNING: Potentially Destructive Action\n" ..
        " !     This command will destroy ddb Postgres service.\n" ..
        ' !     To proceed, type "ddb"\n', err)
      code, out, err = run("postgres:destroy ddb", { stdin = "nope\n" })
      assert.are.equal("\n", out)
      assert.are.equal(1, code)
      assert.matches(" !     Confirmation did not match ddb. Aborted.\n$", err)
      code, out = run("postgres:destroy ddb", { stdin = "ddb\n" })
      assert.are.equal(0, code)
      assert.matches("=====> Postgres container deleted: ddb\n$", out)
      assert.are.equal(1, (run("postgres:destroy ddb -f")))
    end)

    it("apps:destroy without --force reads a confirmation; with it, it unlinks every service", function()
      local code, out, err = run("apps:destroy keep")
      assert.are.equal(1, code)
      assert.are.equal("> ", out)
      assert.matches(' !     To proceed, type "keep"\n !     EOF\n$', err)
      code, out, err = run("apps:destroy keep", { stdin = "wrong\n" })
      assert.are.equal("> ", out)
      assert.are.equal(1, code)
      assert.matches("Confirmation did not match test. Aborted.\n$", err)
      ok("postgres:create ddb2")
      ok("postgres:link ddb2 keep --no-restart")
      ok("apps:destroy keep", { stdin = "keep\n" })
      assert.are.equal("", ok("postgres:links ddb2"))
      ok("postgres:destroy ddb2 -f")
      assert.are.equal(20, (run("apps:destroy keep --force")))
    end)
  end)

  describe("export #integration", function()
    setup(function()
      D.reset(h)
      ok("postgres:create edb")
      ok("redis:create ecache")
    end)

    it("streams deterministic binary dumps to stdout", function()
      local a = ok("postgres:export edb")
      local b = ok("postgres:export edb")
      assert.are.equal("PGDMP", a:sub(1, 5))
      assert.is_true(#a >= 40960, "size " .. #a)
      assert.truthy(a:find("\0", 1, true))
      assert.are.equal(a, b)
      local r = ok("redis:export ecache")
      assert.are.equal("REDIS", r:sub(1, 5))
      assert.is_true(#r >= 40960)
    end)

    it("streams large dumps completely", function()
      D.settings(h, { dump_size = 3 * 1024 * 1024 })
      local out = ok("postgres:export edb", { mux = false })
      D.settings(h, {})
      assert.are.equal(3 * 1024 * 1024, #out)
      local log = D.log(h)
      assert.is_false(log[#log].mutating)
    end)
  end)

  describe("fault injection #integration", function()
    before_each(function()
      D.reset(h)
    end)

    it("fail: prints stderr, exits with the code and does not act", function()
      D.set_faults(h, { { match = "^apps:create", action = "fail", exit = 42, stderr = " !     boom" } })
      local code, out, err = run("apps:create f1")
      assert.are.equal(42, code)
      assert.are.equal("", out)
      assert.are.equal(" !     boom\n", err)
      assert.is_nil(D.state(h).apps.f1)
      local log = D.log(h)
      assert.are.equal("fail", log[#log].fault)
      assert.are.equal(42, log[#log].exit)
      D.set_faults(h, {})
    end)

    it("times: the rule applies to that many matching invocations", function()
      D.set_faults(h, { { match = "apps:create f2", action = "fail", exit = 1, stderr = "x", times = 2 } })
      assert.are.equal(1, (run("apps:create f2")))
      assert.are.equal(20, (run("apps:exists f3"))) -- does not match, does not count
      assert.are.equal(1, (run("apps:create f2")))
      ok("apps:create f2")
      assert.are.equal(0, D.faults(h)[1].times)
    end)

    it("delay: takes ms longer, then acts", function()
      D.set_faults(h, { { match = "^apps:create f4$", action = "delay", ms = 400 } })
      local t0 = socket.gettime()
      ok("apps:create f4")
      local dt = socket.gettime() - t0
      assert.is_true(dt >= 0.4, "took " .. dt)
      assert.is_table(D.state(h).apps.f4)
      local log = D.log(h)
      assert.is_true(log[#log].ms >= 400)
      assert.are.equal("delay", log[#log].fault)
    end)

    it("hang: never answers; the client's timeout ends it and the session's command goes away", function()
      D.set_faults(h, { { match = "^apps:list", action = "hang" } })
      local t0 = socket.gettime()
      local code = run("apps:list", { mux = false, timeout = 2 })
      local dt = socket.gettime() - t0
      assert.are.equal(137, code)
      assert.is_true(dt >= 1.9 and dt < 4, "took " .. dt)
      local log = D.log(h)
      assert.are.equal("hang", log[#log].fault)
      assert.is_nil(log[#log].exit)
      local left
      for _ = 1, 30 do
        left = sim_processes(h)
        if left == 0 then
          break
        end
        socket.sleep(0.1)
      end
      assert.are.equal(0, left)
      D.set_faults(h, {})
    end)

    it("hang over a kept connection: closing the channel ends the command; ms caps a hang", function()
      D.set_faults(h, { { match = "^apps:list$", action = "hang" } })
      assert.are.equal(137, (run("apps:list", { mux = true, timeout = 1 })))
      local left
      for _ = 1, 30 do
        left = sim_processes(h)
        if left == 0 then
          break
        end
        socket.sleep(0.1)
      end
      assert.are.equal(0, left)
      ok("version") -- the connection is still there
      D.set_faults(h, { { match = "^apps:list$", action = "hang", ms = 300, exit = 7 } })
      local t0 = socket.gettime()
      assert.are.equal(7, (run("apps:list")))
      assert.is_true(socket.gettime() - t0 >= 0.3)
      D.set_faults(h, {})
    end)

    it("reads take no state lock (as real Dokku); a change waits for the lock", function()
      ok("apps:create rl")
      -- hold the state lock as a live command would: this process owns it
      local stat = read_file("/proc/self/stat")
      local pid = stat:match("^(%d+)")
      local fields = {}
      for w in stat:match("^%d+ %(.*%) (.*)$"):gmatch("%S+") do
        fields[#fields + 1] = w
      end
      assert.is_true(os.rename(h.state .. "/lock", h.state .. "/lock.held." .. pid))
      local f = assert(io.open(h.state .. "/lock.owner", "w"))
      f:write(pid .. " " .. fields[20] .. "\n")
      f:close()
      -- (bounded: a read that waited for the lock would wait for ever)
      local rp = io.popen("timeout 10 " .. D.ssh_argv(h) .. " -- apps:list </dev/null 2>&1; echo rc=$?")
      local read_out = rp:read("a")
      rp:close()
      -- a change started now waits for the lock
      local res
      local co = coroutine.wrap(function()
        res = parallel(h, { "apps:create rl2" })
      end)
      local pending = io.popen("sleep 1.2; mv " .. q(h.state .. "/lock.held." .. pid) .. " " .. q(h.state .. "/lock")
        .. " && echo released")
      local t0 = socket.gettime()
      co()
      local waited = socket.gettime() - t0
      local released = pending:read("a")
      pending:close()
      assert.matches("\nrl\n", read_out)
      assert.matches("rc=0\n$", read_out)
      assert.matches("released", released)
      assert.are.equal(0, res[1].code, res[1].err)
      assert.is_true(waited >= 1.0, "the change did not wait for the lock: " .. waited)
    end)

    it("git:from-archive unpacks its build context without the state lock: another app's change goes on", function()
      ok("apps:create fa1")
      ok("apps:create fa2")
      local p = io.popen("mktemp -d /tmp/mrprov-fa-XXXXXX")
      local tmp = p:read("l")
      p:close()
      -- a context, and a `tar` first in PATH that waits (bounded) for a
      -- file before it unpacks: the build is held mid-unpack
      os.execute("mkdir -p " .. q(tmp .. "/ctx") .. " " .. q(tmp .. "/bin"))
      local f = assert(io.open(tmp .. "/ctx/Dockerfile", "w"))
      f:write("FROM img:fa\n")
      f:close()
      os.execute("tar -C " .. q(tmp .. "/ctx") .. " -cf " .. q(tmp .. "/ctx.tar") .. " Dockerfile")
      f = assert(io.open(tmp .. "/bin/tar", "w"))
      f:write("#!/bin/sh\ncase \" $* \" in *' -x '*) touch " .. q(tmp .. "/unpacking") .. "; i=0; while [ ! -e "
        .. q(tmp .. "/go") .. " ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done ;; esac\n"
        .. "exec /usr/bin/tar \"$@\"\n")
      f:close()
      os.execute("chmod +x " .. q(tmp .. "/bin/tar"))
      local build = io.popen("env -u SSH_ORIGINAL_COMMAND PATH=" .. q(tmp .. "/bin") .. ":\"$PATH\" DOKKU_SIM_STATE="
        .. q(h.state) .. " " .. q(D.sim) .. " git:from-archive --archive-type tar fa1 -- <" .. q(tmp .. "/ctx.tar")
        .. " >/dev/null 2>&1; echo rc=$?")
      for _ = 1, 200 do
        if read_file(tmp .. "/unpacking") then break end
        socket.sleep(0.05)
      end
      assert.truthy(read_file(tmp .. "/unpacking"), "the build did not reach its unpacking")
      -- the build is held; a change of another app does not wait for it
      local cp = io.popen("timeout 5 " .. D.ssh_argv(h) .. " -- " .. q("config:set --no-restart fa2 K=v")
        .. " </dev/null >/dev/null 2>&1; echo rc=$?")
      local changed = cp:read("a")
      cp:close()
      local held = read_file(tmp .. "/go") == nil
      os.execute("touch " .. q(tmp .. "/go"))
      local built = build:read("a")
      build:close()
      os.execute("rm -rf " .. q(tmp))
      assert.matches("rc=0", changed)
      assert.is_true(held)
      assert.matches("rc=0", built)
      assert.are.equal("v\n", ok("config:get fa2 K"))
      assert.are.equal("img:fa", D.state(h).apps.fa1.git_context.from)
    end)

    it("a delayed git:from-image holds the app's deploy lock; the loser's commit stays (retry: no changes)", function()
      ok("apps:create dl")
      D.settings(h, { deploy_ms = 1500 })
      local res = parallel(h, { "git:from-image dl img:a", "git:from-image dl img:b" })
      D.settings(h, {})
      local winner, loser
      for i, r in ipairs(res) do
        if r.code == 0 then
          winner = i
        else
          loser = i
          assert.are.equal(1, r.code)
          assert.matches(" !     dl currently has a deploy lock in place. Exiting...\n" ..
            " !     Run 'apps:unlock' to release the existing deploy lock\n", r.err, 1, true)
        end
      end
      assert.truthy(winner and loser, cjson.encode(res))
      local img = ({ "img:a", "img:b" })[loser]
      local code, _, err = run("git:from-image dl " .. img)
      assert.are.equal(1, code)
      assert.matches("No changes detected", err, 1, true)
      assert.are.equal(({ "img:a", "img:b" })[winner] .. "\n", ok("apps:report dl --app-deploy-source-metadata"))
    end)
  end)

  describe("the command log #integration", function()
    setup(function()
      D.reset(h)
    end)

    it("records argv, exit, duration and whether the command changes state", function()
      local cmds = {
        { "version", false, 0 }, { "apps:exists lg", false, 20 }, { "apps:create lg", true, 0 },
        { "--quiet config:set --no-restart lg A=1", true, 0 }, { "config:get lg A", false, 0 },
        { "config:export --format json lg", false, 0 }, { "resource:limit lg", false, 0 },
        { "resource:limit --memory 1g lg", true, 0 }, { "resource:report lg --format json", false, 0 },
        { "storage:list lg", false, 0 }, { "domains:report lg --domains-app-vhosts", false, 0 },
        { "letsencrypt:active lg", false, 0 }, { "postgres:exists lgdb", false, 1 },
        { "postgres:create lgdb", true, 0 }, { "postgres:linked lgdb lg", false, 1 },
        { "postgres:link lgdb lg --no-restart", true, 0 }, { "ps:report lg --running", false, 0 },
        { "ps:restart lg", true, 0 }, { "apps:report lg --app-deploy-source-metadata", false, 0 },
        { "git:from-image lg img:9", true, 0 }, { "nope:cmd", false, 1 },
      }
      local before = #D.log(h)
      for _, c in ipairs(cmds) do
        run(c[1])
      end
      local log = D.log(h)
      assert.are.equal(before + #cmds, #log)
      local mutating = 0
      for i, c in ipairs(cmds) do
        local e = log[before + i]
        assert.are.equal(c[1], table.concat(e.argv, " "))
        assert.are.equal(c[2], e.mutating, c[1])
        assert.are.equal(c[3], e.exit, c[1])
        assert.is_number(e.t)
        assert.is_true(e.ms >= 0)
        if c[2] then
          mutating = mutating + 1
        end
      end
      assert.are.equal(mutating, D.mutating_count(h, before))
    end)
  end)

  describe("concurrent sessions #integration", function()
    setup(function()
      D.reset(h)
      ok("apps:create shared")
    end)

    it("parallel ssh clients do not corrupt the state", function()
      local cmds = {}
      for i = 1, 8 do
        cmds[#cmds + 1] = "config:set --no-restart shared K" .. i .. "=v" .. i
        cmds[#cmds + 1] = "apps:create par" .. i
      end
      for _ = 1, 4 do
        cmds[#cmds + 1] = "apps:create same"
      end
      local res = parallel(h, cmds)
      local same_ok = 0
      for i, r in ipairs(res) do
        if cmds[i] == "apps:create same" then
          if r.code == 0 then
            same_ok = same_ok + 1
          else
            assert.are.equal(" !     Name is already taken\n", r.err)
          end
        else
          assert.are.equal(0, r.code, cmds[i] .. ": " .. r.err)
        end
      end
      assert.are.equal(1, same_ok)
      local s = D.state(h)
      for i = 1, 8 do
        assert.are.equal("v" .. i, s.apps.shared.env["K" .. i])
        assert.is_table(s.apps["par" .. i])
      end
      assert.are.equal(10, #s.global.apps)
      local log = D.log(h)
      assert.are.equal(#cmds + 1, #log)
    end)
  end)
end)
