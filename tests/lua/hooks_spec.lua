local fakes = require "fakes"
local helper = require "helper"
local desired = require "desired"
local hooks = require "hooks"

local settings = {
  base_domain = "mindroom.chat", backend_image = "mindroom/backend:1", frontend_image = "mindroom/frontend:1",
  tuwunel_image = "ghcr.io/tulir/tuwunel:1", synapse_image = "matrixdotorg/synapse:1",
  instance_data_base = "/srv", letsencrypt_email = "ops@example.com",
}
local A = "mr-sub1-abcd1234"
local B = A .. "-backend"
local PW = "pw-Secret-7f3c9a"

local function state()
  local tiers = helper.shipped_tiers()
  return desired.build({ instance = { app_name = A, subscription_id = "sub_1", tier = "enterprise" },
                         tier = tiers.enterprise, settings = settings, admin_password = PW })
end

local function load(files)
  return hooks.load_dir("h", helper.memfs(files))
end

local RULES = { base_domain = "mindroom.chat" }

local function apply(h, st, ctx)
  return hooks.apply_desired(h, st, ctx or {}, RULES)
end

-- A hook from source, as subscription.sub_x.lua.
local function hook(src)
  return assert(load({ ["h/subscription.sub_x.lua"] = src }))["subscription.sub_x"]
end

local function app(st, name)
  for _, a in ipairs(st.apps) do
    if a.name == name then
      return a
    end
  end
end

describe("hooks", function()
  assert(fakes)

  it("loads the shipped examples", function()
    local h = assert(hooks.load_dir("hooks/examples", helper.realfs()))
    assert.is_function(h["account.acc_acme"].desired)
    assert.is_function(h["subscription.sub_worker1"].after)
  end)

  it("finds a hook by subscription id first, then account id", function()
    local h = assert(load({ ["h/subscription.sub_1.lua"] = "return {}", ["h/account.acc_1.lua"] = "return {}" }))
    local both = { subscription_id = "sub_1", account_id = "acc_1" }
    assert.are.equal("h/subscription.sub_1.lua", hooks.find(h, both).file)
    assert.are.equal("h/account.acc_1.lua", hooks.find(h, { subscription_id = "sub_2", account_id = "acc_1" }).file)
    assert.is_nil(hooks.find(h, { subscription_id = "sub_3" }))
  end)

  -- issue 12 item 11: one namespace for both kinds of id let a subscription
  -- whose id equals an account id pick up that account's hook.
  it("keeps subscription and account ids apart", function()
    local h = assert(load({ ["h/account.shared1.lua"] = "return { description = 'account' }",
                            ["h/subscription.other.lua"] = "return { description = 'subscription' }" }))
    assert.is_nil(hooks.find(h, { subscription_id = "shared1", account_id = "acc_9" }))
    assert.are.equal("account", hooks.find(h, { subscription_id = "sub_9", account_id = "shared1" }).description)
    assert.is_nil(hooks.find(h, { subscription_id = "sub_9", account_id = "other" }))
    -- the old, ambiguous form is refused with the names to choose from
    local _, err = load({ ["h/shared1.lua"] = "return {}" })
    assert.matches("h/shared1.lua:1: a hook file is named subscription.<id>.lua or account.<id>.lua", err, 1, true)
    assert.matches("subscription.shared1.lua or account.shared1.lua", err, 1, true)
    local _, err2 = load({ ["h/customer.x.lua"] = "return {}" })
    assert.matches("not customer.<id>.lua", err2, 1, true)
  end)

  it("refuses bad hook files with file:line", function()
    local _, e1 = load({ ["h/subscription.sub_x.lua"] = "return {" })
    assert.matches("^h/subscription%.sub_x%.lua:%d+:", e1)
    local _, e2 = load({ ["h/subscription.bad name.lua"] = "return {}" })
    assert.matches("named after an account or subscription id", e2)
    local _, e3 = load({ ["h/subscription.sub_x.lua"] = "return { desired = 1 }" })
    assert.matches("must be a function", e3)
    local _, e4 = load({ ["h/subscription.sub_x.lua"] = "return { other = function() end }" })
    assert.matches("unknown hook field", e4)
    local _, e5 = load({ ["h/subscription.sub_x.lua"] = "x = 1 return {}" })
    assert.matches("cannot set globals", e5)
    local _, e6 = load({ ["h/subscription.sub_x.lua"] = "return 42" })
    assert.matches("must return a table", e6)
  end)

  it("sees no io, os beyond time, require, load or debug", function()
    local h = assert(load({ ["h/subscription.sub_x.lua"] = [[
      local seen = {}
      for _, name in ipairs({ "io", "require", "load", "loadfile", "dofile", "debug", "collectgarbage",
                              "setmetatable", "getmetatable", "rawset" }) do
        seen[#seen + 1] = name .. "=" .. type(_ENV[name])
      end
      seen[#seen + 1] = "os.execute=" .. type(os.execute)
      seen[#seen + 1] = "os.time=" .. type(os.time)
      seen[#seen + 1] = "string.dump=" .. type(string.dump)
      return { description = table.concat(seen, " ") }
    ]] }))
    assert.are.equal("io=nil require=nil load=nil loadfile=nil dofile=nil debug=nil collectgarbage=nil "
      .. "setmetatable=nil getmetatable=nil rawset=nil os.execute=nil os.time=function string.dump=nil",
      h["subscription.sub_x"].description)
  end)

  it("moves and sorts like Lua's table library (run as Lua, or charged, in the sandbox)", function()
    local h = assert(load({ ["h/subscription.sub_x.lua"] = [[
      local t = { 1, 2, 3, 4, 5 }
      table.move(t, 1, 3, 2)
      local u = table.move({ 7, 8 }, 1, 2, 3, { 1, 2 })
      local v = { 1, 2, 3, 4, 5 }
      table.move(v, 2, 5, 1)
      local w = { "b", "c", "a" }
      table.sort(w)
      table.sort(v, function(a, b) return a > b end)
      local ok = pcall(table.move, {}, 1, "x", 1)
      return { description = table.concat(t, ",") .. " " .. table.concat(u, ",") .. " " .. table.concat(v, ",")
        .. " " .. table.concat(w, ",") .. " " .. tostring(ok) .. " " .. #table.move({}, 3, 1, 1) }
    ]] }))
    assert.are.equal("1,1,2,3,5 1,2,7,8 5,5,4,3,2 a,b,c false 0", h["subscription.sub_x"].description)
  end)

  it("cannot replace the API it was given", function()
    local h = assert(load({ ["h/subscription.sub_x.lua"] = [[
      return { desired = function() string.upper = nil end }
    ]] }))
    local st, err = apply(h["subscription.sub_x"], state())
    assert.is_nil(st)
    assert.matches("read%-only", err)
    assert.is_function(string.upper)
  end)

  it("applies env, domains and an extra app; keeps what it may not change", function()
    local h = assert(hooks.load_dir("hooks/examples", helper.realfs()))
    local st = assert(apply(h["account.acc_acme"], state(), { subscription_id = "sub_1" }))
    assert.are.same({ "ai.acme.example" }, app(st, A .. "-frontend").domains)
    assert.are.equal("https://sso.acme.example", app(st, A .. "-backend").env.ACME_SSO_ISSUER)
    assert.are.equal(PW, app(st, A .. "-backend").env.MINDROOM_ADMIN_PASSWORD)
    local w = assert(apply(h["subscription.sub_worker1"], state()))
    local worker = app(w, A .. "-worker")
    assert.are.equal("mindroom/worker:latest", worker.image)
    assert.are.same({ memory_mb = 512, cpu = 0.5 }, worker.limits)
  end)

  it("refuses changes a hook may not make", function()
    local cases = {
      { "state.apps[#state.apps + 1] = { name = 'mr-other-12345678-x' }", "extra app must be named" },
      { "state.apps[2].env.MINDROOM_ADMIN_PASSWORD = 'mine'", "may not change MINDROOM_ADMIN_PASSWORD" },
      { "state.apps[2].env['bad key'] = 'x'", "invalid environment key" },
      { "state.apps[3].domains = { 'bad domain;rm' }", "invalid domain" },
      { "state.apps[2].image = 'Not An Image'", "invalid image" },
      { "state.apps[#state.apps + 1] = { name = state.app .. '-w', image = 'mindroom/worker:latest', "
        .. "limits = { memory_mb = 512, cpu = 1e-300 } }", "cpu must be at least 0.001" },
      { "state.apps[#state.apps + 1] = { name = state.app .. '-w', image = 'mindroom/worker:latest', "
        .. "limits = { memory_mb = 1e9, cpu = 1 } }", "memory_mb must be an integer from 64 to 262144" },
      -- issue 12 item 17: values Dokku 0.38 would store changed, with why
      { "state.apps[2].env.PIN = '0042'", "invalid value for PIN: would be stored changed by Dokku 0.38" },
      { "state.apps[2].env.DIR = 'C:\\\\'", "invalid value for DIR: must not end with a backslash" },
    }
    for _, c in ipairs(cases) do
      local st, err = apply(hook("return { desired = function(state) " .. c[1] .. " end }"), state())
      assert.is_nil(st, c[1])
      assert.matches(c[2], err, 1, true)
    end
  end)

  -- issue 12 item 8: an allowlist of subcommands, each with its grammar.
  it("lets the Dokku handle run the allowlisted commands on the instance's own apps", function()
    local sc = hooks.scope(state())
    for _, good in ipairs({
      { "config:set", B, "X=1" },
      { "config:set", "--no-restart", B, "X=1", "Y=two" },
      { "config:set", "--encoded", "--no-restart", A .. "-frontend", "X=aGVsbG8=" },
      { "config:unset", "--no-restart", B, "X", "Y" },
      { "ps:restart", B }, { "ps:start", B }, { "ps:stop", B }, { "ps:rebuild", B },
      { "letsencrypt:enable", A .. "-frontend" },
      { "storage:mount", B, "/srv/" .. A .. ":/data" },
      { "storage:mount", B, "/srv/" .. A .. "/reports/:/app/reports:ro" },
      { "storage:unmount", B, "/srv/" .. A .. "/reports:/app/reports" },
    }) do
      local ok, why = hooks.check_argv(good, sc)
      assert.is_true(ok, table.concat(good, " ") .. ": " .. tostring(why))
    end
  end)

  it("refuses every command outside the allowlist or its grammar, naming it", function()
    local sc = hooks.scope(state())
    local other = "mr-other-12345678"
    for _, c in ipairs({
      -- host paths: the root, another instance's storage, a sibling, a way out, a named entry
      { { "storage:mount", B, "/:/host" }, "storage:mount: the host path / is not under this instance's storage" },
      { { "storage:mount", B, "/srv/" .. other .. ":/data" }, "not under this instance's storage" },
      { { "storage:mount", B, "/srv/" .. A .. "-evil:/data" }, "not under this instance's storage" },
      { { "storage:mount", B, "/srv/" .. A .. "/../" .. other .. ":/data" }, "not under this instance's storage" },
      { { "storage:mount", B, "/var/run/docker.sock:/var/run/docker.sock" }, "not under this instance's storage" },
      { { "storage:mount", B, "shared-entry" }, "host-path:container-path" },
      { { "storage:mount", B, "/srv/" .. A .. ":/data:rw,z" }, "host-path:container-path" },
      { { "storage:mount", B, "--container-dir", "/data", "entry" }, "flag --container-dir is not allowed" },
      -- Docker options, global and server-wide subcommands
      { { "docker-options:add", B, "deploy,run", "--privileged" }, "docker-options:add is not allowed in a hook" },
      { { "docker-options:add", B, "deploy", "-v" }, "docker-options:add is not allowed in a hook" },
      { { "apps:clone", B, B .. "2" }, "apps:clone is not allowed in a hook" },
      { { "nginx:stop", B }, "nginx:stop is not allowed in a hook" },
      { { "domains:set-global", B }, "domains:set-global is not allowed in a hook" },
      { { "letsencrypt:cron-job", B, "--remove" }, "letsencrypt:cron-job is not allowed in a hook" },
      { { "domains:add", B, "evil.example" }, "domains:add is not allowed in a hook" },
      { { "apps:destroy", B, "--force" }, "apps:destroy is not allowed in a hook" },
      -- reads that hand values back: the DSN with its password, the environment
      { { "postgres:info", A .. "-db" }, "postgres:info is not allowed in a hook" },
      { { "config:get", B, "MINDROOM_ADMIN_PASSWORD" }, "config:get is not allowed in a hook" },
      { { "config:export", B }, "config:export is not allowed in a hook" },
      { { "run", B, "env" }, "the first word must be a Dokku subcommand" },
      -- Dokku's global flags, anywhere in argv, in both forms
      { { "config:set", B, "--app", other .. "-backend", "X=1" }, "--app is a Dokku global flag" },
      { { "ps:restart", "--app", other .. "-backend", B }, "--app is a Dokku global flag" },
      { { "ps:restart", B, "--app=" .. other .. "-backend" }, "--app=" .. other .. "-backend is a Dokku global flag" },
      { { "config:set", "--trace", B, "X=1" }, "--trace is a Dokku global flag" },
      { { "config:set", B, "X=1", "--trace" }, "--trace is a Dokku global flag" },
      { { "ps:stop", B, "--force" }, "--force is a Dokku global flag" },
      { { "config:unset", "--quiet", B, "X" }, "--quiet is a Dokku global flag" },
      { { "config:set", "--global", "X=1" }, "--global is a Dokku global flag" },
      { { "ps:restart", "--all" }, "--all is a Dokku global flag" },
      { { "ps:rebuild", B, "--rm" }, "--rm is a Dokku global flag" },
      -- flags only where the grammar has them
      { { "config:set", B, "--no-restart", "X=1" }, "flag --no-restart is not allowed after the app" },
      { { "ps:restart", "-p", B }, "flag -p is not allowed" },
      { { "config:set", "--merged", B, "X=1" }, "flag --merged is not allowed" },
      -- apps: only the instance's own, existing ones
      { { "config:set", other .. "-backend", "X=1" }, other .. "-backend is not one of this instance's apps" },
      { { "ps:restart", A .. "-matrix" }, A .. "-matrix is not one of this instance's apps" },
      { { "ps:restart", A .. "-db" }, A .. "-db is not one of this instance's apps" },
      { { "ps:restart", B, other .. "-backend" }, "takes exactly one argument" },
      -- keys the provisioner owns
      { { "config:set", B, "MINDROOM_ADMIN_PASSWORD=mine" }, "MINDROOM_ADMIN_PASSWORD is managed by the provisioner" },
      { { "config:set", B, "DATABASE_URL=postgres://evil" }, "DATABASE_URL is managed" },
      -- values follow the API's rule, also when base64-encoded (Dokku decodes them)
      { { "config:set", B, "PIN=0042" }, "config:set: PIN: would be stored changed by Dokku 0.38" },
      { { "config:set", "--encoded", B, "PIN=MDA0Mg==" }, "config:set: PIN: would be stored changed by Dokku 0.38" },
      { { "config:set", "--encoded", B, "PIN=not base64" }, "the value of PIN is not base64" },
      { { "config:unset", B, "DOKKU_PROXY_PORT" }, "DOKKU_PROXY_PORT is managed" },
      { { "config:set", B, "X" }, "is not KEY=VALUE" },
      { { "config:set", "--encoded", B, "X=not base64!" }, "not base64" },
      { { "config:set", B }, "at least one KEY=VALUE" },
      { { "not a subcommand" }, "Dokku subcommand" },
      { { "config:set", B, 42 }, "argument 3 is not a string" },
      { {}, "a command is a list" },
    }) do
      local ok, why = hooks.check_argv(c[1], sc)
      assert.is_nil(ok, table.concat(c[1], " ") .. " was allowed")
      assert.matches(c[2], why, 1, true)
    end
  end)

  it("runs after() through the scoped runner", function()
    local h = assert(hooks.load_dir("hooks/examples", helper.realfs()))
    local st = assert(apply(h["subscription.sub_worker1"], state()))
    local sent = {}
    assert.is_true(hooks.run_after(h["subscription.sub_worker1"], st, { app_name = A }, function(argv)
      sent[#sent + 1] = table.concat(argv, " ")
      return { exit = 0 }
    end))
    assert.are.same({ "config:set --no-restart " .. A .. "-worker WORKER_BOOTSTRAPPED=1" }, sent)
    local evil = hook("return { after = function(d) d.run({ 'storage:mount', d.apps()[1], '/:/host' }) end }")
    local ok, err = hooks.run_after(evil, st, {}, function() error("must not run") end)
    assert.is_nil(ok)
    assert.matches("dokku.run refused: storage:mount: the host path / is not under this instance's storage", err,
      1, true)
  end)

  -- issue 13 item 1: what a hook's command does to its app is journaled
  -- with the step (a resumed job reads it, never the command text).
  it("tells the runner what each command does to its app", function()
    local st = state()
    local got = {}
    assert.is_true(hooks.run_after(hook([[return { after = function(d)
      local a = d.apps()[1]
      d.run({ "config:set", "--no-restart", a, "X=1" })
      d.run({ "config:unset", "--no-restart", a, "X" })
      d.run({ "ps:stop", a })
      d.run({ "ps:start", a })
      d.run({ "ps:rebuild", a })
      d.run({ "ps:restart", a })
      d.run({ "letsencrypt:enable", a })
    end }]]), st, {}, function(argv, effects)
      got[#got + 1] = argv[1] .. (effects.restart and " restart" or "") .. (effects.deploys and " deploys" or "")
      return { exit = 0 }
    end))
    assert.are.same({ "config:set restart", "config:unset restart", "ps:stop", "ps:start", "ps:rebuild deploys",
                      "ps:restart deploys", "letsencrypt:enable" }, got)
    assert.are.same({ restart = true, deploys = false }, hooks.effects({ "storage:mount", B, "/x:/y" }))
    assert.are.same({ restart = true, deploys = false }, hooks.effects({ "storage:unmount", B, "/x:/y" }))
  end)

  -- issue 12 item 3: hooks see placeholders, never a secret value.
  it("gives desired() placeholders for secret values and puts the values back into env only", function()
    -- what the hook sees: the placeholder, in the state and in an error it raises
    local _, err = apply(hook([[return { desired = function(state)
      for _, a in ipairs(state.apps) do
        if a.env and a.env.MINDROOM_ADMIN_PASSWORD then error("leak " .. a.env.MINDROOM_ADMIN_PASSWORD) end
      end
    end }]]), state())
    assert.matches("leak [secret:MINDROOM_ADMIN_PASSWORD]", err, 1, true)
    assert.is_nil(err:find(PW, 1, true))
    -- a placeholder in a domain, an image or a limit stays a placeholder (and is refused)
    for _, src in ipairs({
      "state.apps[3].domains = { state.apps[2].env.MINDROOM_ADMIN_PASSWORD }",
      "state.apps[3].image = state.apps[2].env.MINDROOM_ADMIN_PASSWORD",
    }) do
      local st, e = apply(hook("return { desired = function(state) " .. src .. " end }"), state())
      assert.is_nil(st)
      assert.matches("[secret:MINDROOM_ADMIN_PASSWORD]", e, 1, true)
      assert.is_nil(e:find(PW, 1, true))
    end
    -- in env the value is put back, and the key holding it becomes a secret key
    local st = assert(apply(hook([[return { desired = function(state)
      state.apps[#state.apps + 1] = { name = state.app .. "-worker", image = "mindroom/worker:1",
        env = { WORKER_AUTH = "admin:" .. state.apps[2].env.MINDROOM_ADMIN_PASSWORD, PLAIN = "x" } }
    end }]]), state()))
    local w = app(st, A .. "-worker")
    assert.are.equal("admin:" .. PW, w.env.WORKER_AUTH)
    assert.are.same({ WORKER_AUTH = true }, w.secret_keys)
    assert.are.equal(PW, app(st, B).env.MINDROOM_ADMIN_PASSWORD)
    -- so the config:set shown in plans and step logs hides it
    local cmd = require("resources.config").diff({ app = w.name, env = w.env, secret_keys = w.secret_keys })[1]
    assert.matches("WORKER_AUTH=[REDACTED]", cmd.display, 1, true)
    assert.is_nil(cmd.display:find(require("mrprov.crypto").base64(w.env.WORKER_AUTH), 1, true))
    -- after() gets no state, and its commands carry the placeholder as it is
    local sent
    assert.is_true(hooks.run_after(hook([[return { after = function(d)
      d.run({ "config:set", "--no-restart", d.apps()[1], "X=[secret:MINDROOM_ADMIN_PASSWORD]" })
    end }]]), st, {}, function(argv) sent = table.concat(argv, " ") return { exit = 0 } end))
    assert.are.equal("config:set --no-restart " .. A .. " X=[secret:MINDROOM_ADMIN_PASSWORD]", sent)
  end)

  -- issue 12 item 9: a hook's domains follow the API's rules.
  it("applies the API's domain rules to the domains a hook sets", function()
    for _, c in ipairs({
      { "mr-other-12345678.mindroom.chat", "must not be under mindroom.chat other than " .. A .. ".mindroom.chat" },
      { "api.mr-other-12345678.mindroom.chat", "must not be under mindroom.chat" },
      { "mindroom.chat", "must not be under mindroom.chat" },
      { "x" .. A .. ".mindroom.chat", "must not be under mindroom.chat" },
      { "MR-OTHER-12345678.MINDROOM.CHAT", "domain mr-other-12345678.mindroom.chat must not be under" },
    }) do
      local st, err = apply(hook("return { desired = function(state) state.apps[3].domains = { '" .. c[1]
        .. "' } end }"), state())
      assert.is_nil(st, c[1])
      assert.matches(c[2], err, 1, true)
    end
    -- the instance's own names and custom domains are fine
    local st = assert(apply(hook("return { desired = function(state) state.apps[3].domains = { 'docs." .. A
      .. ".mindroom.chat', 'ai.acme.example' } end }"), state()))
    assert.are.same({ "docs." .. A .. ".mindroom.chat", "ai.acme.example" }, app(st, A .. "-frontend").domains)
    -- one domain on two of the instance's apps
    local _, err = apply(hook([[return { desired = function(state)
      state.apps[#state.apps + 1] = { name = state.app .. "-worker", image = "mindroom/worker:1",
                                      domains = { state.apps[3].domains[1] } }
    end }]]), state())
    assert.matches("domain " .. A .. ".mindroom.chat is on both " .. A .. "-frontend and " .. A .. "-worker", err, 1,
      true)
  end)
end)
