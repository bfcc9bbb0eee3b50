local fakes = require "fakes"
local image = require "resources.image"

describe("resource image", function()
  local spec = { app = "web", image = "mindroom/backend:1" }

  it("reads the deployed image; deploys only when it differs (git:from-image exits 1 when unchanged)", function()
    local run = fakes.runner({ ["apps:report web --app-deploy-source-metadata"] = { stdout = "mindroom/backend:1\n" } })
    local cur = image.probe(run, spec)
    assert.are.equal("mindroom/backend:1", cur.image)
    assert.are.same({}, image.diff(spec, cur))
    local cmd = image.diff(spec, { image = "mindroom/backend:0" })[1]
    assert.are.same({ "git:from-image", "web", "mindroom/backend:1" }, cmd.argv)
    assert.is_true(cmd.deploys)
    assert.are.equal("No changes detected", cmd.fallback.when)
    assert.are.same({ "ps:rebuild", "web" }, cmd.fallback.argv)
    local empty = fakes.runner({ ["apps:report web --app-deploy-source-metadata"] = { stdout = "\n" } })
    assert.is_nil(image.probe(empty, spec).image)
  end)

  it("remembers a deploy by the ps:rebuild fallback until the server's deploy source changes", function()
    local cmd = image.diff(spec, { image = "mindroom/backend:0" })[1]
    assert.are.same({ image = "mindroom/backend:1" }, image.model(spec, { image = "mindroom/backend:0" }, { cmd }))
    cmd.fell_back = true
    local rec = image.model(spec, { image = "mindroom/backend:0" }, { cmd })
    assert.are.same({ image = "mindroom/backend:1", rebuilt_over = "mindroom/backend:0" }, rec)
    -- the metadata still says :0 (ps:rebuild does not set it): deployed is :1
    assert.are.same({}, image.diff(spec, image.recall({ image = "mindroom/backend:0" }, rec)))
    -- a later deploy of anything changes the metadata: the probe is believed
    assert.are.same({ image = "other:2" }, image.recall({ image = "other:2" }, rec))
    assert.are.equal(1, #image.diff(spec, image.recall({ image = "other:2" }, rec)))
    -- never deployed before the rebuild: empty metadata
    local first = image.model(spec, nil, { cmd })
    assert.are.equal("", first.rebuilt_over)
    assert.are.same({}, image.diff(spec, image.recall({}, first)))
    assert.are.same({ image = "x" }, image.recall({ image = "x" }, nil))
  end)
end)


describe("resource image with seed_config (issue 14)", function()
  local tar = require "tar"
  local seed = require "resources.lib.seed"
  local app = { name = "web", image = "mindroom/backend:1",
                seed_config = { content = "agents: {}\n", path = "/mindroom_data/config/config.yaml",
                                command = { "/app/.venv/bin/mindroom", "run" } } }

  local function q(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
  end

  it("builds a tar of Dockerfile, template and script at the top level; real tar reads it", function()
    local spec = image.specs(app)[1].spec
    assert.are.equal(require("mrprov.crypto").sha256_hex(spec.archive), spec.context)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(spec.archive)
    f:close()
    local p = io.popen("tar -tf " .. q(path))
    assert.are.equal("Dockerfile\nconfig.template.yaml\nconverge_config.py\n", p:read("a"))
    p:close()
    p = io.popen("tar -xOf " .. q(path) .. " Dockerfile")
    local dockerfile = p:read("a")
    p:close()
    os.remove(path)
    assert.matches("\nFROM mindroom/backend:1\n", dockerfile, 1, true)
    assert.matches("\nCOPY %-%-chown=1000:1000 config.template.yaml converge_config.py /opt/mrprov/\n", dockerfile)
    assert.matches('\nCMD %["python3", "/opt/mrprov/converge_config.py", "%-%-template", '
      .. '"/opt/mrprov/config.template.yaml", "%-%-config", "/mindroom_data/config/config.yaml", "%-%-", '
      .. '"/app/.venv/bin/mindroom", "run"%]\n', dockerfile)
    assert.matches("ENV MINDROOM_CONFIG_TEMPLATE=/opt/mrprov/config.template.yaml", dockerfile, 1, true)
    assert.is_truthy(tar.plain_name(seed.SCRIPT))
    -- the image's ENTRYPOINT (MindRoom's tini) stays unless the app replaces it
    assert.is_nil(dockerfile:find("ENTRYPOINT", 1, true))
  end)

  it("replaces the image's ENTRYPOINT when seed_config names one ({} clears it: Synapse's /start.py)", function()
    local d = seed.dockerfile("matrixdotorg/synapse:v1", { content = "x: 1\n", path = "/data/homeserver.yaml",
      command = { "/bin/sh", "-c", "exec /start.py" }, entrypoint = {}, owner = "0:0" })
    assert.matches("\nENTRYPOINT %[%]\nCMD %[\"python3\"", d)
    assert.matches("\nCOPY %-%-chown=0:0 ", d)
    d = seed.dockerfile("x:1", { content = "x", path = "/c.yaml", command = { "run" }, entrypoint = { "tini", "--" } })
    assert.matches('\nENTRYPOINT %["tini", "%-%-"%]\n', d)
  end)

  it("deploys from the context on stdin, records its digest after, and plans nothing when in sync", function()
    local spec = image.specs(app)[1].spec
    local run = fakes.runner({
      ["apps:report web --app-deploy-source"] = { stdout = "docker-image\n" },
      ["config:export --format json web"] = { stdout = '{"OTHER":"x"}' },
    })
    local cur = image.probe(run, spec)
    assert.are.same({ source = "docker-image" }, cur)
    local cmds = image.diff(spec, cur)
    assert.are.equal(2, #cmds)
    assert.are.same({ "git:from-archive", "--archive-type", "tar", "web", "--" }, cmds[1].argv)
    assert.are.equal(spec.archive, cmds[1].stdin)
    assert.is_true(cmds[1].deploys)
    assert.are.same({ "ps:rebuild", "web" }, cmds[1].fallback.argv)
    -- the step log shows size and digest, never the bytes
    assert.are.equal(("dokku --quiet git:from-archive --archive-type tar web -- < [build context: %d bytes, "
      .. "sha256 %s]"):format(#spec.archive, spec.context), cmds[1].display)
    assert.are.same({ "config:set", "--no-restart", "web", "MRPROV_CONTEXT_SHA256=" .. spec.context }, cmds[2].argv)
    local model = image.model(spec, cur, cmds)
    assert.are.same({}, image.diff(spec, model))
    local synced = fakes.runner({
      ["apps:report web --app-deploy-source"] = { stdout = "tar\n" },
      ["config:export --format json web"] = { stdout = '{"MRPROV_CONTEXT_SHA256":"' .. ("ab12"):rep(16) .. '"}' },
    })
    local hex = { app = "web", image = spec.image, archive = spec.archive, context = ("ab12"):rep(16) }
    assert.are.same({}, image.diff(hex, image.recall(image.probe(synced, hex), model)))
  end)

  it("the sweep's probe of a context deploy takes the deploy source from apps:report and sends one command", function()
    local spec = image.specs(app)[1].spec
    spec = { app = spec.app, image = spec.image, archive = spec.archive, context = ("cd34"):rep(16) }
    local sent = {}
    local run = function(argv)
      sent[#sent + 1] = table.concat(argv, " ")
      return { exit = 0, stdout = '{"MRPROV_CONTEXT_SHA256":"' .. spec.context .. '"}', stderr = "" }
    end
    local reps = { apps = { web = true }, apps_report = { web = { ["deploy source"] = "tar" } } }
    assert.is_nil(image.bulk.current(spec, reps)) -- the digest is not in any report
    assert.are.same({ source = "tar", context = spec.context }, image.bulk.probe(run, spec, reps))
    assert.are.same({ "config:export --format json web" }, sent)
    -- a report that does not name the app: the whole probe, as a job's
    sent = {}
    local full = function(argv)
      sent[#sent + 1] = table.concat(argv, " ")
      if argv[1] == "apps:report" then return { exit = 0, stdout = "tar\n", stderr = "" } end
      return { exit = 0, stdout = "{}", stderr = "" }
    end
    assert.are.same({ source = "tar" }, image.bulk.probe(full, spec, { apps = { web = true }, apps_report = {} }))
    assert.are.same({ "config:export --format json web", "apps:report web --app-deploy-source" }, sent)
  end)

  it("redeploys exactly when the template or the image changes", function()
    local spec = image.specs(app)[1].spec
    local cur = { source = "tar", context = spec.context }
    assert.are.same({}, image.diff(spec, cur))
    local changed = { name = "web", image = app.image, seed_config = { content = "agents: {x: {}}\n",
      path = app.seed_config.path, command = app.seed_config.command } }
    assert.are.equal(2, #image.diff(image.specs(changed)[1].spec, cur))
    local other = { name = "web", image = "mindroom/backend:2", seed_config = app.seed_config }
    assert.are.equal(2, #image.diff(image.specs(other)[1].spec, cur))
    -- deployed from an image since (the digest left behind does not count)
    assert.are.equal(2, #image.diff(spec, { source = "docker-image", context = spec.context }))
  end)
end)
