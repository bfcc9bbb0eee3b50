-- Specs for lua/profiles.lua (instance layouts), the shipped profiles/, a
-- tier naming its profile (lua/tiers.lua), desired.lua's checks of what a
-- profile answers and boot.lua's sample build at load.
local fakes = require "fakes"
local helper = require "helper"
local profiles = require "profiles"
local tiers = require "tiers"

fakes.install()
local desired = require "desired"
local boot = require "boot"

local settings = {
  base_domain = "mindroom.chat", backend_image = "mindroom/backend:1", frontend_image = "mindroom/frontend:1",
  tuwunel_image = "ghcr.io/tulir/tuwunel:1", synapse_image = "matrixdotorg/synapse:1",
  instance_data_base = "/var/lib/dokku/data/storage", letsencrypt_email = "ops@example.com",
}
local APP = "mr-sub123-abcd1234"

-- A one-app layout whose line numbers the error specs rely on.
local SOLO = {
  'return {',                                                                          -- 1
  '  description = "one app",',                                                         -- 2
  '  build = function(ctx)',                                                            -- 3
  '    local env = { SOLO = "1", PASSWORD = ctx.secrets.admin_password }',              -- 4
  '    return { apps = { { name = ctx.names.app, role = "main", image = ctx.settings.backend_image,', -- 5
  '      env = env, domains = { ctx.names.domain } } } }',                               -- 6
  '  end,',                                                                             -- 7
  '}',                                                                                  -- 8
}

local function source(edits)
  local lines = {}
  for i, l in ipairs(SOLO) do lines[i] = (edits and edits[i]) or l end
  return table.concat(lines, "\n") .. "\n"
end

local function load(files)
  return profiles.load_dir("profiles", helper.memfs(files))
end

local function build_with(profile, inst)
  inst = inst or {}
  inst.app_name, inst.subscription_id, inst.tier = APP, "sub_123", "starter"
  return desired.build({ instance = inst, tier = helper.shipped_tiers().starter, settings = settings,
                         admin_password = "pw", profile = profile })
end

describe("profiles.load_dir", function()
  it("loads the shipped profiles; every shipped tier uses the default given (split here)", function()
    local p = helper.shipped_profiles()
    assert.are.same({ "mindroom", "split" }, profiles.names(p))
    assert.are.equal("profiles/mindroom.lua", p.mindroom.file)
    assert.are.equal("profiles/split.lua", p.split.file)
    for name, t in pairs(helper.shipped_tiers()) do
      assert.are.equal("split", t.profile, name)
      assert.are.equal(p.split.file, t.layout.file, name)
    end
  end)

  it("refuses an empty or missing directory", function()
    local _, err = load({})
    assert.matches("^profiles: cannot list profiles", err)
    _, err = load({ ["profiles/notes.txt"] = "x" })
    assert.matches("no profile files", err)
  end)

  local cases = {
    { "a syntax error", { [4] = '    local env = { SOLO = "1" PASSWORD = 1 }' }, "^profiles/solo%.lua:4: .*expected" },
    { "a runtime error at the top", { [2] = '  description = nil .. "x",' },
      "^profiles/solo%.lua:2: attempt to concatenate" },
    { "an endless loop", { [1] = 'while true do end return {' }, "^profiles/solo%.lua:1: .*instruction budget" },
    { "a global set", { [1] = 'x = 1 return {' }, "^profiles/solo%.lua:1: a profile cannot set globals" },
    { "no build", { [3] = '  build = 42, f = function(ctx)' }, "^profiles/solo%.lua:1: unknown profile field 'f'" },
    { "os and io out of reach", { [1] = 'local _ = os.time() return {' }, "^profiles/solo%.lua:1: .*os" },
  }
  for _, c in ipairs(cases) do
    it("reports " .. c[1] .. " as file:line", function()
      local p, err = load({ ["profiles/solo.lua"] = source(c[2]) })
      assert.is_nil(p)
      assert.matches(c[3], err)
    end)
  end

  it("refuses a file name that is no profile name", function()
    local _, err = load({ ["profiles/Solo X.lua"] = source() })
    assert.matches("^profiles/Solo X%.lua:1: a profile is named", err)
  end)
end)

describe("a tier's profile", function()
  local function load_tiers(tier_src)
    local files = {}
    for _, n in ipairs({ "free", "starter" }) do
      files["tiers/" .. n .. ".lua"] = helper.realfs().read("tiers/" .. n .. ".lua")
    end
    files["tiers/solo.lua"] = tier_src
    local p = assert(load({ ["profiles/solo.lua"] = source(), ["profiles/split.lua"] =
      helper.realfs().read("profiles/split.lua") }))
    return tiers.load_dir("tiers", helper.memfs(files), { by_name = p, default = "split", dir = "profiles" })
  end

  it("is the one it names, inherited through extends, else PROFILE's", function()
    local t = assert(load_tiers('return { name = "solo", display_name = "Solo", extends = "starter",\n'
      .. '  profile = "solo" }\n'))
    assert.are.equal("solo", t.solo.profile)
    assert.are.equal("profiles/solo.lua", t.solo.layout.file)
    assert.are.equal("split", t.starter.profile)
  end)

  it("must exist when the tiers load: file:line of the tier", function()
    local t, err = load_tiers('return { name = "solo", display_name = "Solo", extends = "starter",\n'
      .. '  profile = "nowhere" }\n')
    assert.is_nil(t)
    assert.matches("^tiers/solo%.lua:2: profile 'nowhere' is not one of the profiles in profiles %(solo, split%)", err)
    t, err = load_tiers('return { name = "solo", display_name = "Solo", extends = "starter",\n  profile = 7 }\n')
    assert.is_nil(t)
    assert.matches("^tiers/solo%.lua:2: profile must be a profile name", err)
  end)
end)

describe("desired.build with a profile", function()
  it("plans the profile's layout, with the secret behind a marker it never sees", function()
    local p = assert(load({ ["profiles/solo.lua"] = source() })).solo
    local s = assert(build_with(p))
    assert.are.equal(1, #s.apps)
    local a = s.apps[1]
    assert.are.same({ SOLO = "1", PASSWORD = "pw" }, a.env)
    assert.are.same({ PASSWORD = true }, a.secret_keys)
    assert.are.same({}, s.services)
    assert.are.equal(APP, s.app)
    -- the profile sees a marker: no text of it holds the value
    local seen = assert(load({ ["profiles/peek.lua"] = 'return { build = function(ctx)\n'
      .. '  error(tostring(ctx.secrets.admin_password) .. " " .. ctx.config_yaml:sub(1, 10)) end }\n' })).peek
    local none, err = build_with(seen)
    assert.is_nil(none)
    assert.matches("^profiles/peek%.lua:2: table: ", err)
    assert.is_nil(err:find("pw", 1, true))
    -- and cannot join it into text
    local join = assert(load({ ["profiles/join.lua"] = 'return { build = function(ctx)\n'
      .. '  return { apps = { { name = ctx.app, role = "main", env = { X = "p=" .. ctx.secrets.admin_password } } } }\n'
      .. 'end }\n' })).join
    none, err = build_with(join)
    assert.is_nil(none)
    assert.matches("^profiles/join%.lua:2: attempt to concatenate", err)
  end)

  it("keeps a request's text that looks like a placeholder as text", function()
    local p = helper.shipped_profiles().split
    local s = assert(build_with(p, { config_updates = { X = "[secret:MINDROOM_ADMIN_PASSWORD]" } }))
    local b = s.apps[2]
    assert.are.equal("[secret:MINDROOM_ADMIN_PASSWORD]", b.env.X)
    assert.are.same({ MINDROOM_ADMIN_PASSWORD = true }, b.secret_keys)
  end)

  local bad = {
    { "another instance's app", '{ apps = { { name = "mr-other-00000000", role = "main" } } }',
      "must be mr%-sub123%-abcd1234 or mr%-sub123%-abcd1234%-<name>" },
    { "an unknown field", '{ apps = { { name = ctx.app, role = "main", volumes = {} } } }',
      "app 1: unknown field 'volumes'" },
    { "storage outside INSTANCE_DATA_BASE", '{ apps = { { name = ctx.app, role = "main", storage = { dir = "x",'
      .. ' host_path = "/etc", container_path = "/data" } } } }', "storage%.host_path must be /var/lib/dokku" },
    { "a link to no app", '{ apps = { { name = ctx.app, role = "main" } }, services = { { kind = "postgres",'
      .. ' name = ctx.app .. "-db", links = { ctx.app .. "-api" } } } }', "service 1: links: invalid entry" },
    { "an unknown service kind", '{ apps = { { name = ctx.app, role = "main" } }, services = {'
      .. ' { kind = "mysql", name = ctx.app .. "-db" } } }', "kind must be postgres or redis" },
    { "a shared domain", '{ apps = { { name = ctx.app, role = "a", domains = { "x.example.com" } },'
      .. ' { name = ctx.app .. "-b", role = "b", domains = { "x.example.com" } } } }',
      "domain x%.example%.com is on both" },
    { "no apps", '{ apps = {} }', "apps must be a non%-empty list" },
    { "an env value that is no text", '{ apps = { { name = ctx.app, role = "main", env = { X = 1 } } } }',
      "env X must be text" },
    { "no table", '42', "the answer must be a table" },
  }
  for _, c in ipairs(bad) do
    it("refuses " .. c[1] .. " with the profile's file:line", function()
      local p = assert(load({ ["profiles/bad.lua"] = 'return {\n  build = function(ctx)\n    return ' .. c[2]
        .. '\n  end }\n' })).bad
      local s, err = build_with(p)
      assert.is_nil(s)
      assert.matches("^profiles/bad%.lua:2: build%(%): ", err)
      assert.matches(c[3], err)
    end)
  end

  it("refuses a tier with no profile loaded rather than guessing one", function()
    local t = assert(tiers.load_dir("tiers", helper.realfs())).starter
    local s, err = desired.build({ instance = { app_name = APP, subscription_id = "s", tier = "starter" },
                                   tier = t, settings = settings, admin_password = "pw" })
    assert.is_nil(s)
    assert.matches("no profile", err)
  end)
end)

describe("boot.try_profiles", function()
  it("builds every used profile for a sample instance when it loads, with Matrix off and on", function()
    assert.is_true(boot.try_profiles(helper.shipped_tiers(), settings))
    local p = assert(load({ ["profiles/solo.lua"] = 'return { build = function(ctx)\n'
      .. '  if ctx.matrix and ctx.matrix.type == "synapse" then return nil end\n'
      .. '  return { apps = { { name = ctx.app, role = "main" } } } end }\n' }))
    local t = helper.shipped_tiers()
    t.starter.layout, t.starter.profile = p.solo, "solo"
    local ok, err = boot.try_profiles(t, settings)
    assert.is_nil(ok)
    assert.matches("^profiles/solo%.lua:1: build%(%): the answer must be a table %(profile solo, a sample instance "
      .. "of tier starter with synapse%)", err)
  end)
end)
