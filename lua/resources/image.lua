-- Resource `image`: the Docker image an app is deployed from. The probe reads
-- the deploy source, because `git:from-image` exits 1 when nothing changed.
--
-- Dokku records the deploy source (apps:report --app-deploy-source-metadata)
-- only when a git:from-image deploy succeeds (core:plugins/git/
-- internal-functions cmd-git-from-image → deploy-source-set). When the
-- deploy lock made git:from-image fail after its commit, the ps:rebuild
-- fallback deploys the image but the metadata keeps the earlier value. Nor
-- does `git:report --git-source-image` tell: git-from-image writes it before
-- the commit and deploy, so it names an image that a failed build never
-- deployed (and one a lock failure left undeployed) just the same. So the
-- fallback is recorded in the journal instead: the model remembers which
-- metadata the rebuild left in place, and while the server still reports
-- exactly that, the rebuilt image is the deployed one (M.recall).
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"

local M = { type = "image", phase = contract.PHASE.settings, order = 60, from = "apps" }

-- An app deployed from an image: after its settings (the deploy applies
-- them), before what needs a deployed app.
function M.specs(app)
  if app.absent or not app.image then
    return {}
  end
  return { { key = "image:" .. app.name, spec = { app = app.name, image = app.image } } }
end

function M.locks(spec)
  return { spec.app }
end

M.creates = false

-- An app deployed from an image runs: a change that takes effect on its
-- next start (a command marked `restart`) is applied by restarting it,
-- when the plan does not deploy it anyway. ps:restart starts the app with
-- its current settings, as a deploy does (`deploys`, for the journal).
function M.restart(app)
  return { command.new("restart", app, { "ps:restart", app }, nil, { deploys = true }) }
end

function M.probe(run, spec)
  local out, err = probe.read(run, { "apps:report", spec.app, "--app-deploy-source-metadata" })
  if not out then
    return nil, err
  end
  local image = out:match("^%s*(%S+)%s*$")
  return { image = image }
end

-- current: what the probe read; recorded: the journal's model of the
-- resource. A rebuild recorded over the metadata the server still reports
-- deployed the recorded image; any later deploy changes the metadata.
function M.recall(current, recorded)
  if current and type(recorded) == "table" and recorded.rebuilt_over ~= nil
      and (current.image or "") == recorded.rebuilt_over then
    return { image = recorded.image, rebuilt_over = recorded.rebuilt_over }
  end
  return current
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

-- cmds: the step's commands once run (a command whose fallback ran and
-- succeeded has fell_back set by the worker).
function M.model(spec, current, cmds)
  for _, c in ipairs(cmds or {}) do
    if c.fell_back then
      return { image = spec.image, rebuilt_over = current and current.image or "" }
    end
  end
  return { image = spec.image }
end

function M.undo()
  return {}
end

return M
