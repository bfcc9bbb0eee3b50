-- M.bulk of the resource modules (resources/lib/contract.lua): for the same
-- app state, what a module's bulk reading of the all-apps reports
-- (resources/lib/reports.lua) answers is exactly what its per-app probe
-- answers, whenever the bulk reading answers at all. The state and every
-- answer come from the Dokku simulator (tests/fixtures/dokku-sim, run as a
-- local command like `dokku`), in both modelled releases.
local engine = require "engine"
local reports = require "resources.lib.reports"
local contract = require "resources.lib.contract"

local SIM = "tests/fixtures/dokku-sim"

local function shq(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs the simulator as `dokku ARGV...` in state dir `dir`: {exit, stdout, stderr}.
local function sim(dir, version, argv)
  local words = {}
  for i, a in ipairs(argv) do words[i] = shq(a) end
  local err = dir .. "/stderr.txt"
  local cmd = ("DOKKU_SIM_STATE=%s DOKKU_SIM_VERSION=%s lua5.4 %s %s 2>%s; printf '\n%%s\n' \"$?\""):format(
    shq(dir), shq(version), SIM, table.concat(words, " "), shq(err))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  local stdout, code = out:match("^(.*)\n(%d+)\n$")
  local f = io.open(err, "rb")
  local stderr = f and f:read("a") or ""
  if f then f:close() end
  return { exit = tonumber(code), stdout = stdout or "", stderr = stderr }
end

local function fresh_dir()
  local p = io.popen("mktemp -d /tmp/mrprov-bulk-spec-XXXXXX")
  local dir = p:read("l")
  p:close()
  return dir
end

-- The app state: apps web (deployed from an image, domains, ports, linked
-- to postgres db, checks disabled, a mount), plain (created only), and a
-- postgres service; `gone`, `nope` do not exist.
local SETUP = {
  { "apps:create", "web" }, { "apps:create", "plain" },
  { "domains:set", "web", "web.example.com", "www.example.com" },
  { "ports:set", "web", "http:80:8765" },
  { "config:set", "--no-restart", "web", "A=1" },
  { "resource:limit", "--memory", "512m", "web" },
  { "storage:ensure-directory", "web-data" },
  { "storage:mount", "web", "/var/lib/dokku/data/storage/web-data:/data" },
  { "checks:disable", "web" },
  { "postgres:create", "db" }, { "postgres:link", "db", "web", "--no-restart" },
  { "git:from-image", "web", "nginx:1" },
  { "letsencrypt:set", "web", "email", "ops@example.com" }, { "letsencrypt:enable", "web" },
}

local APPS = { "web", "plain", "gone" }

-- The specs each module is checked with (the fields its probe reads).
local function specs_of(mtype)
  local out = {}
  if mtype == "app" then
    for _, a in ipairs(APPS) do out[#out + 1] = { name = a } end
  elseif mtype == "service" then
    out = { { kind = "postgres", name = "db" }, { kind = "postgres", name = "nope" }, { kind = "redis", name = "db" } }
  elseif mtype == "link" then
    for _, a in ipairs(APPS) do
      out[#out + 1] = { kind = "postgres", service = "db", app = a }
      out[#out + 1] = { kind = "postgres", service = "nope", app = a }
      out[#out + 1] = { kind = "redis", service = "db", app = a }
    end
  else
    for _, a in ipairs(APPS) do
      out[#out + 1] = { app = a, host_path = "/var/lib/dokku/data/storage/web-data", container_path = "/data",
                        dir = "web-data", image = "nginx:1", disabled = "_all_", domains = {}, container_port = 8765 }
    end
    if mtype == "image" then
      out[#out + 1] = { app = "web", image = "nginx:1", archive = "x", context = "abc" }
      out[#out + 1] = { app = "gone", image = "nginx:1", archive = "x", context = "abc" }
    end
  end
  return out
end

for _, version in ipairs({ "0.35.20", "current" }) do
  describe("bulk readings against per-app probes (Dokku " .. version .. ")", function()
    local dir, reps

    setup(function()
      if #engine.list == 0 then
        assert(engine.load())
      end
      dir = fresh_dir()
      for _, argv in ipairs(SETUP) do
        local res = sim(dir, version, argv)
        assert(res.exit == 0, table.concat(argv, " ") .. ": " .. res.stderr)
      end
      reps = {}
      for name, r in pairs(reports.REPORTS) do
        local res = sim(dir, version, r.argv)
        assert(res.exit == 0, name .. ": " .. res.stderr)
        reps[name] = reports.parse(name, res.stdout)
      end
    end)
    teardown(function()
      if dir then os.execute("rm -rf " .. shq(dir)) end
    end)

    local function run(argv)
      local full = { "--quiet" }
      for i, a in ipairs(argv) do full[i + 1] = a end
      return sim(dir, version, full)
    end

    it("every module with M.bulk answers as its probe does, and answers what the reports can tell", function()
      local answered, checked = {}, 0
      for _, mod in ipairs(engine.list) do
        if mod.bulk then
          assert(contract.check(mod, mod.type))
          for _, spec in ipairs(specs_of(mod.type)) do
            local bulk = mod.bulk.current(spec, reps)
            if bulk ~= nil then
              local probed, err = mod.probe(run, spec)
              assert.is_nil(err)
              if bulk == reports.NOTHING then
                assert.is_nil(probed, mod.type .. " " .. (spec.app or spec.name))
              else
                assert.are.same(probed, bulk, mod.type .. " " .. (spec.app or spec.name))
              end
              answered[mod.type .. ":" .. (spec.app or spec.name) .. ":" .. (spec.service or "")] = true
              checked = checked + 1
            end
          end
        end
      end
      -- what the reports must tell without a per-app probe
      for _, k in ipairs({ "app:web:", "app:gone:", "service:db:", "service:nope:", "link:gone:db", "link:web:nope",
                           "config:gone:", "limits:gone:", "storage:gone:", "letsencrypt:gone:",
                           "zero_downtime:gone:", "domains:web:", "domains:plain:", "domains:gone:", "ports:web:",
                           "ports:plain:", "processes:web:", "processes:plain:", "image:web:", "image:plain:",
                           "image:gone:",
                           "limits:web:", "limits:plain:", "storage:web:", "storage:plain:", "zero_downtime:web:",
                           "zero_downtime:plain:", "letsencrypt:web:", "letsencrypt:plain:" }) do
        assert.is_true(answered[k] == true, k .. " not answered in bulk")
      end
      assert.is_true(checked > 25)
    end)

    it("an app missing from a report but listed is probed (nil), one in neither is absent", function()
      local r = { apps = { web = true }, domains_report = {} }
      assert.is_nil(engine.modules.domains.bulk.current({ app = "web" }, r))
      assert.are.equal(reports.NOTHING, engine.modules.domains.bulk.current({ app = "gone" }, r))
      -- a report that failed: nothing is told but absence by the list
      assert.is_nil(engine.modules.ports.bulk.current({ app = "web" }, { apps = { web = true } }))
      assert.is_nil(engine.modules.config.bulk.current({ app = "web" }, {}))
    end)

    it("letsencrypt, limits, storage and checks are read from their all-apps reports, both key forms", function()
      assert.are.same({ active = true }, engine.modules.letsencrypt.bulk.current({ app = "web" }, reps))
      assert.are.same({ active = false }, engine.modules.letsencrypt.bulk.current({ app = "plain" }, reps))
      local lim = engine.modules.limits.bulk.current({ app = "web" }, reps)
      assert.are.same({ memory = "512m" }, lim)
      assert.are.same({ disabled = "_all_" }, engine.modules.zero_downtime.bulk.current({ app = "web" }, reps))
      assert.are.same({ disabled = "none" }, engine.modules.zero_downtime.bulk.current({ app = "plain" }, reps))
      local st = engine.modules.storage.bulk.current({ app = "web", host_path = "/var/lib/dokku/data/storage/web-data",
                                                       container_path = "/data" }, reps)
      assert.are.same({ mounts = { "/var/lib/dokku/data/storage/web-data:/data" }, mounted = true, deployed = true },
        st)
      -- a deploy-mounts row that is not `-v <mount>` pairs is not guessed at
      local odd = { apps = { web = true }, storage_report = { web = { ["deploy mounts"] = "-v /a:/b /c:/d" } } }
      assert.is_nil(engine.modules.storage.bulk.current({ app = "web", host_path = "/a", container_path = "/b" }, odd))
      -- mounted, but the apps report is missing: probed
      local half = { apps = { web = true }, storage_report = { web = { ["deploy mounts"] = "-v /a:/b" } } }
      assert.is_nil(engine.modules.storage.bulk.current({ app = "web", host_path = "/a", container_path = "/b" }, half))
      assert.are.same({ mounts = { "/a:/b" }, mounted = false },
        engine.modules.storage.bulk.current({ app = "web", host_path = "/x", container_path = "/y" }, half))
    end)
  end)
end

describe("reports.blocks", function()
  it("reads both releases' key forms and skips warnings", function()
    local text = "=====> a ports information\n       Ports map:                     http:80:5000 https:443:5000\n" ..
      " !     a warning\n=====> b ports information\n       Map:                           \n"
    local b = reports.blocks(text, "ports")
    assert.are.same({ map = "http:80:5000 https:443:5000" }, b.a)
    assert.are.same({ map = "" }, b.b)
    -- resource:report: v0.35.20 trims the plugin's prefix, v0.38.27 keeps it
    local r35 = reports.blocks("=====> a resource information\n       _default_ limit memory:        512m\n",
      "resource")
    local r38 = reports.blocks("=====> a resource information\n       resource _default_ limit memory: 512m\n",
      "resource")
    assert.are.same({ ["_default_ limit memory"] = "512m" }, r35.a)
    assert.are.same(r35, r38)
  end)
end)
