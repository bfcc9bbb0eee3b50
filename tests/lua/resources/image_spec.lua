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
end)
