-- Resource `letsencrypt`: TLS for an app with a domain. `letsencrypt:active`
-- always exits 0 and prints true/false; `enable` re-issues on every call
-- (rate limits), so it is only sent when not active.
local command = require "command"
local probe = require "resources.probe"

local M = { type = "letsencrypt" }

function M.probe(run, spec)
  local out, err = probe.read(run, { "letsencrypt:active", spec.app })
  if not out then
    return nil, err
  end
  return { active = out:match("^%s*true%s*$") ~= nil }
end

function M.diff(spec, current)
  if current and current.active then
    return {}
  end
  local cmds = {}
  if spec.email then
    cmds[#cmds + 1] = command.new("letsencrypt", spec.app, { "letsencrypt:set", spec.app, "email", spec.email })
  end
  cmds[#cmds + 1] = command.new("letsencrypt", spec.app, { "letsencrypt:enable", spec.app })
  return cmds
end

function M.model()
  return { active = true }
end

function M.undo()
  return {}
end

return M
