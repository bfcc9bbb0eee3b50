-- The configuration generation this Lua state runs with: the settings,
-- tiers, profiles and hooks boot.load() read and checked. boot.lua fills
-- it; every module below boot reads it here, so none of them requires the
-- loader (and through it the tiers, profiles, hooks and resource modules)
-- only to read a setting.
local M = {}

local current

function M.current()
  return current
end

-- boot.load() installs a checked generation; the specs install one directly.
function M.set(c)
  current = c
end

return M
