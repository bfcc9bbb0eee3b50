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

