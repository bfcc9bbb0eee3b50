-- A Dokku command as the engine plans it: the argv sent (after the global
-- `--quiet`, which keeps Dokku from echoing values), the resource and target
-- it belongs to, and the redacted text shown in plans and step logs.
local M = {}

M.PREFIX = "--quiet"

-- argv: the tokens after `dokku --quiet`; shown: the same tokens with
-- secrets replaced (defaults to argv).
function M.new(resource, target, argv, shown, opts)
  opts = opts or {}
  return {
    resource = resource,
    target = target,
    argv = argv,
    display = "dokku " .. M.PREFIX .. " " .. table.concat(shown or argv, " "),
    mutating = opts.mutating ~= false,
    restart = opts.restart, -- the change takes effect on the app's next restart
    deploys = opts.deploys, -- the command (re)deploys the app, which applies pending changes
    stream = opts.stream, -- stdout goes to a file (backups), not into the step log
    stream_ext = opts.stream_ext, -- that file's extension (default "dump")
    -- { when = "stderr text", argv = {...} }: on a failure whose stderr holds
    -- `when`, run argv instead (and take its outcome)
    fallback = opts.fallback,
    ok_exits = opts.ok_exits, -- extra exit codes that mean success (e.g. already gone)
    -- text the command's stdout must hold for it to count as done (what
    -- Dokku reports having done, e.g. the directory it created)
    expect = opts.expect,
    -- bytes for the command's stdin (git:from-archive's build context);
    -- never journaled or logged: `shown` says what they are
    stdin = opts.stdin,
  }
end

-- argv as shown in step logs: the value of every KEY=value word of a
-- config:set replaced by [set] (a hook's after() sends plain ones).
function M.shown_env(argv)
  if argv[1] ~= "config:set" then
    return argv
  end
  local shown = {}
  for i, a in ipairs(argv) do
    local k = i > 1 and type(a) == "string" and a:match("^([A-Za-z_][A-Za-z0-9_]*)=")
    shown[i] = k and (k .. "=[set]") or a
  end
  return shown
end

-- The argv handed to the transport.
function M.full_argv(cmd)
  local argv = { M.PREFIX }
  for i = 1, #cmd.argv do
    argv[i + 1] = cmd.argv[i]
  end
  return argv
end

return M
