-- Integration (issue 14): config.yaml reaches the app's persistent storage by
-- Dokku commands only. The real binary deploys an app with `seed_config`
-- through a real sshd whose forced command is the Dokku simulator:
-- `git:from-archive --archive-type tar APP --` with the build context on
-- stdin; the simulator runs the context's converge script for real (python3)
-- on each container start against the storage's stand-in directory. Until
-- profiles/mindroom.lua exists, a fixture profile in a temporary
-- PROFILES_DIR carries the seed_config.
local H = require "harness"
local D = require "dokku_harness"
local cjson = require "cjson"
local lyaml = require "lyaml"

local TIER_A = [[
agents:
  general: {display_name: General, model: default}
  research: {display_name: Research, model: default}
models:
  default: {provider: openrouter, id: a/small}
router: {model: default}
defaults: {tools: [scheduler]}
]]

local TIER_B = [[
agents:
  general: {display_name: General, model: default, tools: [calculator]}
models:
  default: {provider: openrouter, id: a/large}
router: {model: default}
]]

local PROFILE = [[
-- one app whose config.yaml is seeded and converged by mrprov
local TIER_A = %q
local TIER_B = %q
return {
  description = "seeded config",
  build = function(ctx)
    local n = ctx.names
    return {
      apps = {
        { name = n.app, role = "main", image = ctx.settings.backend_image,
          storage = { dir = n.app, host_path = ctx.settings.instance_data_base .. "/" .. n.app,
                      container_path = "/mindroom_data", chown = "heroku" },
          seed_config = { content = ctx.tier == "sfree" and TIER_A or TIER_B,
                          path = "/mindroom_data/config/config.yaml",
                          command = { "/app/.venv/bin/mindroom", "run" } } },
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

local function wait_job(srv, sub, job_id)
  return H.wait_for(srv, "/api/v1/status/" .. sub, function(s)
    return s.job ~= cjson.null and s.job.id == job_id and (s.job.state == "succeeded" or s.job.state == "failed")
  end, 60)
end

local mutating = D.mutating

local function count(list, pattern)
  local n = 0
  for _, l in ipairs(list) do
    if l:find(pattern, 1, true) then
      n = n + 1
    end
  end
  return n
end

for _, version in ipairs({ "0.35.20", "current" }) do
  describe("seed_config over SSH (Dokku " .. version .. ") #integration", function()
    local h, srv, app
    local sub = "sub_seed"

    setup(function()
      h = D.start({ settings = version == "current" and { version = "current" } or nil })
      local dir = H.tmpdir()
      local tiers, profiles = dir .. "/tiers", dir .. "/profiles"
      os.execute("mkdir -p " .. tiers .. " " .. profiles .. " && cp " .. H.root .. "/tiers/*.lua " .. tiers
        .. "/ && cp " .. H.root .. "/profiles/*.lua " .. profiles .. "/")
      write(profiles .. "/seeded.lua", PROFILE:format(TIER_A, TIER_B))
      write(tiers .. "/sfree.lua",
        'return { name = "sfree", display_name = "S", extends = "free", profile = "seeded" }\n')
      write(tiers .. "/sstarter.lua",
        'return { name = "sstarter", display_name = "S2", extends = "starter", profile = "seeded" }\n')
      srv = H.start({ env = D.mrprov_env(h, { TIERS_DIR = tiers, PROFILES_DIR = profiles }) })
    end)
    teardown(function()
      H.cleanup()
      D.stop_all()
    end)

    local function config_path()
      return h.state .. "/fs/var/lib/dokku/data/storage/" .. app .. "/config/config.yaml"
    end

    it("first start: the tier's config is seeded through git:from-archive, one container at a time", function()
      local code, j = H.request(srv, "POST", "/api/v1/provision", { subscription_id = sub, account_id = "acc_seed",
        tier = "sfree" })
      assert.are.equal(202, code, cjson.encode(j))
      app = j.app_name
      local st = wait_job(srv, sub, j.job_id)
      assert.are.equal("succeeded", st.job.state, cjson.encode(st))
      assert.are.equal(TIER_A, H.read_file(config_path()))
      local a = D.state(h).apps[app]
      assert.are.equal("tar", a.deploy.source)
      assert.are.equal("--", a.deploy.source_metadata)
      assert.are.equal(64, #a.env.MRPROV_CONTEXT_SHA256)
      local m = mutating(h, 0)
      assert.are.equal(1, count(m, "git:from-archive --archive-type tar " .. app .. " --"))
      assert.are.equal(1, count(m, "checks:disable " .. app))
      -- the template is in no log: the step log shows its size and digest
      assert.is_nil(H.log_text(srv):find("Research", 1, true))
    end)

    it("plans nothing when nothing changed", function()
      local before = #D.log(h)
      local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = sub, app_name = app })
      assert.are.equal(202, code)
      assert.are.equal("succeeded", wait_job(srv, sub, j.job_id).job.state)
      assert.are.same({}, mutating(h, before))
    end)

    it("a tier change redeploys once: owned parts change, the customer's edits survive", function()
      -- dashboard-side edits in the storage directory
      local c = lyaml.load(H.read_file(config_path()))
      c.agents.mine = { display_name = "Mine", model = "default" }
      c.timezone = "Europe/Berlin"
      write(config_path(), lyaml.dump({ c }))
      local before = #D.log(h)
      local code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = sub, app_name = app,
                                                                  tier = "sstarter" })
      assert.are.equal(202, code)
      local st = wait_job(srv, sub, j.job_id)
      assert.are.equal("succeeded", st.job.state, cjson.encode(st))
      local m = mutating(h, before)
      assert.are.equal(1, count(m, "git:from-archive"), table.concat(m, "\n"))
      c = lyaml.load(H.read_file(config_path()))
      assert.are.same({ "calculator" }, c.agents.general.tools)
      assert.is_nil(c.agents.research)
      assert.is_nil(c.defaults)
      assert.are.equal("a/large", c.models.default.id)
      assert.are.same({ display_name = "Mine", model = "default" }, c.agents.mine)
      assert.are.equal("Europe/Berlin", c.timezone)
      -- zero downtime off: the old container was stopped before the new one started
      local a = D.state(h).apps[app]
      assert.is_false(a.observed.overlapped)
      assert.is_true(a.observed.starts >= 2)
      -- and again: nothing to do
      before = #D.log(h)
      code, j = H.request(srv, "PUT", "/api/v1/update", { subscription_id = sub, app_name = app })
      assert.are.equal(202, code)
      assert.are.equal("succeeded", wait_job(srv, sub, j.job_id).job.state)
      assert.are.same({}, mutating(h, before))
    end)
  end)
end
