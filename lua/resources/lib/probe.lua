-- Shared by the resource probes: runs a read-only Dokku command and sorts
-- its answer into "the output", "the app does not exist yet" (exit 20) or
-- an error that names the command.
local M = {}

-- Returns stdout; or false when the app does not exist (exit 20); or nil, err.
function M.read(run, argv)
  local res, err = run(argv)
  if not res then
    return nil, err
  end
  if res.exit == 20 then
    return false
  end
  if res.exit ~= 0 then
    return nil, table.concat(argv, " ") .. " exited " .. res.exit .. ": " .. res.stderr
  end
  return res.stdout
end

return M
