-- Resource `image`: the Docker image an app is deployed from. The probe reads
-- the deploy source, because `git:from-image` exits 1 when nothing changed.
local command = require "command"
local probe = require "resources.probe"

local M = { type = "image" }

function M.probe(run, spec)
  local out, err = probe.read(run, { "apps:report", spec.app, "--app-deploy-source-metadata" })
  if not out then
    return nil, err
  end
  local image = out:match("^%s*(%S+)%s*$")
  return { image = image }
end

function M.diff(spec, current)
  if current and current.image == spec.image then
    return {}
  end
  -- After a deploy that failed late (e.g. Dokku's deploy lock, taken after
  -- the commit), the image is committed but not deployed: git:from-image
  -- then says "No changes detected" and only a rebuild deploys it.
  return {
    command.new("image", spec.app, { "git:from-image", spec.app, spec.image }, nil, {
      deploys = true, fallback = { when = "No changes detected", argv = { "ps:rebuild", spec.app } },
    }),
  }
end

function M.model(spec)
  return { image = spec.image }
end

function M.undo()
  return {}
end

return M
