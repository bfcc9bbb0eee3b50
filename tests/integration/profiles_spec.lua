-- Instance layouts as drop-in files (issue 13): a new profile and a tier
-- naming it, dropped into a running server's PROFILES_DIR and TIERS_DIR,
-- plan after SIGHUP with no other file edited; a broken profile is refused
-- with file:line while the old generation keeps serving.
local H = require "harness"

-- One app only: the main app with its own image, an environment variable
-- and a domain; no backend, frontend, Matrix or services.
local SOLO = [[
-- one app holds the whole instance
return {
  description = "everything in one app",
  build = function(ctx)
    return {
      apps = {
        { name = ctx.names.app, role = "main", image = ctx.settings.backend_image,
          env = { SOLO_INSTANCE = ctx.app, SOLO_PASSWORD = ctx.secrets.admin_password },
          domains = { ctx.names.domain }, letsencrypt = { email = ctx.settings.letsencrypt_email } },
      },
    }
  end,
}
]]

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function plan(s, tier, sub)
  local code, j = H.request(s, "POST", "/api/v1/plan", { subscription_id = sub, tier = tier })
  assert.are.equal(200, code, tier)
  return j, table.concat(j.commands, "\n")
end

describe("profiles as drop-in files #integration", function()
  teardown(function()
    H.cleanup()
  end)

  it("plans a dropped-in profile after SIGHUP and refuses a broken one, keeping the old generation", function()
    local dir = H.tmpdir()
    local tiers, profiles = dir .. "/tiers", dir .. "/profiles"
    os.execute("mkdir -p " .. tiers .. " " .. profiles .. " && cp " .. H.root .. "/tiers/*.lua " .. tiers
      .. "/ && cp " .. H.root .. "/profiles/*.lua " .. profiles .. "/")
    local s = H.start({ env = { TIERS_DIR = tiers, PROFILES_DIR = profiles, LETSENCRYPT_EMAIL = "ops@example.com" } })
    -- before: the tier does not exist, the shipped tiers plan the split layout
    local code = H.request(s, "POST", "/api/v1/plan", { subscription_id = "sub_solo", tier = "solo" })
    assert.are.equal(422, code)
    local _, split = plan(s, "starter", "sub_split")
    assert.is_truthy(split:find("-backend", 1, true))

    write(profiles .. "/solo.lua", SOLO)
    write(tiers .. "/solo.lua",
      'return { name = "solo", display_name = "Solo", extends = "starter", profile = "solo" }\n')
    os.execute("kill -HUP " .. s.pid)
    local h = H.wait_for(s, "/health", function(j) return j.config_generation == 2 end)
    assert.are.equal(2, h.config_generation)

    local j, cmds = plan(s, "solo", "sub_solo")
    local app = j.app_name
    assert.is_truthy(cmds:find("apps:create " .. app .. "\n", 1, true), cmds)
    assert.is_truthy(cmds:find("SOLO_INSTANCE=[set]", 1, true), cmds)
    assert.is_truthy(cmds:find("SOLO_PASSWORD=[REDACTED]", 1, true), cmds) -- a secret through the marker
    assert.is_truthy(cmds:find("git:from-image " .. app .. " mindroom/backend:latest", 1, true), cmds)
    assert.is_truthy(cmds:find("domains:set " .. app .. " " .. app .. ".mindroom.chat", 1, true), cmds)
    for _, gone in ipairs({ "-backend", "-frontend", "-matrix", "postgres:", "redis:" }) do
      assert.is_nil(cmds:find(gone, 1, true), gone .. " in\n" .. cmds)
    end
    -- the other tiers keep the default profile
    local _, again = plan(s, "starter", "sub_split")
    assert.is_truthy(again:find("-backend", 1, true))

    -- a broken profile: refused on SIGHUP with file:line; generation 2 serves on
    write(profiles .. "/solo.lua", SOLO:gsub("role = \"main\",", "role = \"main\"", 1))
    os.execute("kill -HUP " .. s.pid)
    local r = H.wait_for(s, "/ready", function(x) return x.checks.config_error ~= nil end)
    assert.matches("profiles/solo%.lua:7:", r.checks.config_error)
    assert.are.equal(2, r.checks.config_generation)
    local j2, still = plan(s, "solo", "sub_solo") -- a plan names a fresh app each time
    local function anon(text, name) return (text:gsub(name:gsub("%p", "%%%0"), "APP")) end
    assert.are.equal(anon(cmds, app), anon(still, j2.app_name))

    -- one whose build() breaks only for some instances: caught by the sample build at load
    write(profiles .. "/solo.lua", SOLO:gsub("return {\n      apps", "assert(not ctx.matrix, 'no Matrix here')\n"
      .. "    return {\n      apps", 1))
    os.execute("kill -HUP " .. s.pid)
    r = H.wait_for(s, "/ready", function(x)
      return x.checks.config_error ~= nil and x.checks.config_error:find("Matrix", 1, true) ~= nil
    end)
    assert.matches("profiles/solo%.lua:5: no Matrix here", r.checks.config_error)
    assert.are.equal(2, r.checks.config_generation)
    H.stop(s)
  end)

  it("lists the profiles in `mrprov check` and refuses a broken one there with file:line", function()
    local dir = H.tmpdir()
    local tiers, profiles = dir .. "/tiers", dir .. "/profiles"
    os.execute("mkdir -p " .. tiers .. " " .. profiles .. " && cp " .. H.root .. "/tiers/*.lua " .. tiers
      .. "/ && cp " .. H.root .. "/profiles/*.lua " .. profiles .. "/")
    write(profiles .. "/solo.lua", SOLO)
    write(tiers .. "/solo.lua", 'return { name = "solo", display_name = "Solo", extends = "free", profile = "solo" }\n')
    local env = { TIERS_DIR = tiers, PROFILES_DIR = profiles, LUA_DIR = H.root .. "/lua" }
    local code, out = H.run({ "check" }, env)
    assert.are.equal(0, code)
    -- the shipped profiles (mindroom, split) and solo
    assert.matches("profiles %(3%) from " .. profiles:gsub("%p", "%%%0") .. ", default split:", out)
    assert.matches("\n  solo +[^\n]*/profiles/solo%.lua %(tiers: solo%)\n", out)
    assert.matches("\n  split +[^\n]*/profiles/split%.lua %(tiers: enterprise, free, professional, starter%)\n", out)

    local err, _
    env.PROFILE = "nowhere"
    code, _, err = H.run({ "check" }, env)
    assert.are.equal(1, code)
    assert.matches("PROFILE: no profile 'nowhere' in", err)
    env.PROFILE = nil
    write(profiles .. "/solo.lua", SOLO:gsub("ctx%.names%.app, role", "ctx.names.app .. '-x-', role", 1))
    code, _, err = H.run({ "check" }, env)
    assert.are.equal(1, code)
    assert.matches("profiles/solo%.lua:4: build%(%): app 1: name \"mr%-check%-00000000%-x%-\" must be", err)
  end)
end)
