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

local function state()
  local tiers = helper.shipped_tiers()
  return desired.build({ instance = { app_name = A, subscription_id = "sub_1", tier = "enterprise" },
                         tier = tiers.enterprise, settings = settings, admin_password = "pw" })
end

local function load(files)
  return hooks.load_dir("h", helper.memfs(files))
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
    assert.is_function(h.acc_acme.desired)
    assert.is_function(h.sub_worker1.after)
  end)

  it("finds a hook by subscription id first, then account id", function()
    local h = { sub_1 = { id = "sub_1" }, acc_1 = { id = "acc_1" } }
    assert.are.equal("sub_1", hooks.find(h, { subscription_id = "sub_1", account_id = "acc_1" }).id)
    assert.are.equal("acc_1", hooks.find(h, { subscription_id = "sub_2", account_id = "acc_1" }).id)
    assert.is_nil(hooks.find(h, { subscription_id = "sub_3" }))
  end)

  it("refuses bad hook files with file:line", function()
    local _, e1 = load({ ["h/sub_x.lua"] = "return {" })
    assert.matches("^h/sub_x%.lua:%d+:", e1)
    local _, e2 = load({ ["h/bad name.lua"] = "return {}" })
    assert.matches("named after an account or subscription id", e2)
    local _, e3 = load({ ["h/sub_x.lua"] = "return { desired = 1 }" })
    assert.matches("must be a function", e3)
    local _, e4 = load({ ["h/sub_x.lua"] = "return { other = function() end }" })
    assert.matches("unknown hook field", e4)
    local _, e5 = load({ ["h/sub_x.lua"] = "x = 1 return {}" })
    assert.matches("cannot set globals", e5)
    local _, e6 = load({ ["h/sub_x.lua"] = "return 42" })
    assert.matches("must return a table", e6)
  end)

  it("sees no io, os beyond time, require, load or debug", function()
    local h = assert(load({ ["h/sub_x.lua"] = [[
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
      h.sub_x.description)
  end)

  it("cannot replace the API it was given", function()
    local h = assert(load({ ["h/sub_x.lua"] = [[
      return { desired = function() string.upper = nil end }
    ]] }))
    local st, err = hooks.apply_desired(h.sub_x, state(), {})
    assert.is_nil(st)
    assert.matches("read%-only", err)
    assert.is_function(string.upper)
  end)

  it("applies env, domains and an extra app; keeps what it may not change", function()
    local h = assert(hooks.load_dir("hooks/examples", helper.realfs()))
    local st = assert(hooks.apply_desired(h.acc_acme, state(), { subscription_id = "sub_1" }))
    assert.are.same({ "ai.acme.example" }, app(st, A .. "-frontend").domains)
    assert.are.equal("https://sso.acme.example", app(st, A .. "-backend").env.ACME_SSO_ISSUER)
    assert.are.equal("pw", app(st, A .. "-backend").env.MINDROOM_ADMIN_PASSWORD)
    local w = assert(hooks.apply_desired(h.sub_worker1, state(), {}))
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
      -- issue 12 item 17: values Dokku 0.38 would store changed, with why
      { "state.apps[2].env.PIN = '0042'", "invalid value for PIN: would be stored changed by Dokku 0.38" },
      { "state.apps[2].env.DIR = 'C:\\\\'", "invalid value for DIR: must not end with a backslash" },
    }
    for _, c in ipairs(cases) do
      local h = assert(load({ ["h/sub_x.lua"] = "return { desired = function(state) " .. c[1] .. " end }" }))
      local st, err = hooks.apply_desired(h.sub_x, state(), {})
      assert.is_nil(st, c[1])
      assert.matches(c[2], err, 1, true)
    end
  end)

  it("scopes the Dokku handle to the instance's own apps and services", function()
    local names = hooks.scope(state())
    assert.is_true(hooks.check_argv({ "config:set", A .. "-backend", "X=1" }, names))
    assert.is_true(hooks.check_argv({ "postgres:info", A .. "-db" }, names))
    for _, bad in ipairs({
      { "config:set", "mr-other-12345678-backend", "X=1" },
      { "apps:list" },
      { "config:set", "--global", "X=1" },
      { "ps:restart", "--all" },
      { "config:set", A .. "-backend", "mr-other-12345678" },
      { "not a subcommand" },
      {},
    }) do
      assert.is_nil((hooks.check_argv(bad, names)), table.concat(bad, " "))
    end
  end)

  it("runs after() through the scoped runner", function()
    local h = assert(hooks.load_dir("hooks/examples", helper.realfs()))
    local st = assert(hooks.apply_desired(h.sub_worker1, state(), {}))
    local sent = {}
    assert.is_true(hooks.run_after(h.sub_worker1, st, { app_name = A }, function(argv)
      sent[#sent + 1] = table.concat(argv, " ")
      return { exit = 0 }
    end))
    assert.are.same({ "config:set --no-restart " .. A .. "-worker WORKER_BOOTSTRAPPED=1" }, sent)
    local evil = assert(load({ ["h/sub_x.lua"] =
      "return { after = function(d) d.run({ 'apps:destroy', '--force', 'mr-victim-12345678' }) end }" }))
    local ok, err = hooks.run_after(evil.sub_x, st, {}, function() error("must not run") end)
    assert.is_nil(ok)
    assert.matches("refused", err)
  end)
end)
