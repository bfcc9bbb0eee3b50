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
--
-- An app with `seed_config` (issue 14) is deployed from a generated build
-- context instead (resources/lib/seed.lua): `git:from-archive
-- --archive-type tar APP --` with the context's tar on stdin
-- (core:plugins/git/internal-functions cmd-git-from-archive; git-from-archive
-- reads stdin with `tee src.tar | wc -c` when the URL is `--`; v0.35.20 and
-- v0.38.27). Dokku records no trace of the content: deploy-source-set
-- stores "tar" and "--" (cmd-git-from-archive), so after the deploy the
-- context's SHA-256 is recorded on the app with `config:set --no-restart APP
-- MRPROV_CONTEXT_SHA256=<hex>` and read back with `config:get` (both
-- versions: core:plugins/config). In sync when the deploy source is "tar"
-- and the recorded digest is the context's: a change of template, script or
-- image redeploys once. The same "No changes detected" fallback applies
-- (git-from-directory, shared with git:from-image). Only the size and the
-- digest of the stdin bytes are shown in plans and step logs.
local command = require "command"
local contract = require "resources.lib.contract"
local json = require "json"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"
local seed = require "resources.lib.seed"

local M = { type = "image", phase = contract.PHASE.settings, order = 60, from = "apps" }

-- An app deployed from an image: after its settings (the deploy applies
-- them), before what needs a deployed app. Not while the instance is
-- stopped or suspended (state.stopped): a deploy starts the app in Dokku
-- whatever ps:stop did (resources/processes.lua), so a changed image or
-- context is deployed by the start that clears the flag.
function M.specs(app, state)
  if app.absent or not app.image or (state and state.stopped) then
    return {}
  end
  if app.seed_config then
    local archive, digest = seed.context(app.image, app.seed_config)
    return { { key = "image:" .. app.name, spec = { app = app.name, image = app.image, archive = archive,
                                                    context = digest } } }
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

-- A context deploy: the deploy source ("tar" after git:from-archive) and
-- the digest recorded after it, read from the app's environment with the
-- command the config resource's probe sends (`config:export --format json`:
-- in one wave of probes the two share one command, executor.current_of).
-- `source`, when given, is the deploy source read already (the sweep's
-- all-apps apps:report); else it is read from the app.
local function probe_context(run, spec, source)
  local out, err = probe.read(run, { "config:export", "--format", "json", spec.app })
  if not out then
    return nil, err
  end
  local env = json.decode(out)
  if type(env) ~= "table" then
    return nil, "config:export " .. spec.app .. ": unreadable output"
  end
  local digest = env[seed.DIGEST_KEY]
  if source == nil then
    local src, serr = probe.read(run, { "apps:report", spec.app, "--app-deploy-source" })
    if not src then
      return nil, serr
    end
    source = src
  end
  return { source = source:match("^%s*(%S+)%s*$"), context = type(digest) == "string" and digest or nil }
end

function M.probe(run, spec)
  if spec.archive then
    return probe_context(run, spec)
  end
  local out, err = probe.read(run, { "apps:report", spec.app, "--app-deploy-source-metadata" })
  if not out then
    return nil, err
  end
  local image = out:match("^%s*(%S+)%s*$")
  return { image = image }
end

-- The sweep: the `App deploy source metadata` row of `apps:report` (all
-- apps). A context deploy also reads the digest recorded on the app
-- (config:get, no all-apps form): such an app is probed unless absent.
M.bulk = reports.row_bulk("apps_report", "deploy source metadata", function(v, spec)
  if spec.archive then
    return nil
  end
  return { image = v:match("^%s*(%S+)%s*$") }
end)

-- ... and probes it with the deploy source the report tells: one command
-- (the environment, shared with the config resource's probe).
function M.bulk.probe(run, spec, r)
  local got, rows = reports.app_rows(r, "apps_report", spec.app)
  if spec.archive and got == "block" and rows["deploy source"] then
    return probe_context(run, spec, rows["deploy source"])
  end
  return M.probe(run, spec)
end

-- current: what the probe read; recorded: the journal's model of the
-- resource. A rebuild recorded over the metadata the server still reports
-- deployed the recorded image; any later deploy changes the metadata.
function M.recall(current, recorded)
  if current and current.source ~= nil then
    return current -- a context deploy: the digest on the app tells
  end
  if current and type(recorded) == "table" and recorded.rebuilt_over ~= nil
      and (current.image or "") == recorded.rebuilt_over then
    return { image = recorded.image, rebuilt_over = recorded.rebuilt_over }
  end
  return current
end

local function diff_context(spec, current)
  if current and current.source == "tar" and current.context == spec.context then
    return {}
  end
  local argv = { "git:from-archive", "--archive-type", "tar", spec.app, "--" }
  local shown = { "git:from-archive", "--archive-type", "tar", spec.app, "--", "<",
                  ("[build context: %d bytes, sha256 %s]"):format(#spec.archive, spec.context) }
  return {
    command.new("image", spec.app, argv, shown, {
      deploys = true, stdin = spec.archive,
      fallback = { when = "No changes detected", argv = { "ps:rebuild", spec.app } },
    }),
    -- only after the deploy succeeded (a step's commands stop at the first failure)
    command.new("image", spec.app, { "config:set", "--no-restart", spec.app, seed.DIGEST_KEY .. "=" .. spec.context }),
  }
end

function M.diff(spec, current)
  if spec.archive then
    return diff_context(spec, current)
  end
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
  if spec.archive then
    return { source = "tar", context = spec.context }
  end
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
