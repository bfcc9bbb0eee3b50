-- Shared busted set-up: file-system adapters for lua/tiers.lua and
-- lua/profiles.lua (an in-memory fake and the real directory) and the
-- shipped tiers/ and profiles/ loaded as serve would.
local fakes = require "fakes"

local M = {}

-- The service settings the specs plan with (boot.settings' shape).
M.settings = {
  base_domain = "mindroom.chat", backend_image = "mindroom/backend:1", frontend_image = "mindroom/frontend:1",
  tuwunel_image = "ghcr.io/tulir/tuwunel:1", synapse_image = "matrixdotorg/synapse:1",
  mindroom_image = "ghcr.io/mindroom-ai/mindroom:v2026.8.105", provider_keys = {},
  instance_data_base = "/srv/data", letsencrypt_email = "ops@example.com",
}

-- A file's text (raises when it cannot be read).
function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- The service runs tier files and profiles through the C sandbox (boot.lua's
-- fs.run); plain Lua has none, so the specs bound instructions with a count
-- hook on a coroutine (no memory or time bound: tests only).
M.BUDGET = 1000000
function M.run(fn, ...)
  local co = coroutine.create(fn)
  debug.sethook(co, function() error("instruction budget exceeded", 2) end, "", M.BUDGET)
  return coroutine.resume(co, ...)
end

-- memfs{ ["tiers/a.lua"] = "source", ... }: list(dir) gives the sorted base
-- names directly under dir, read(path) the source.
function M.memfs(files)
  return {
    list = function(dir)
      local names, prefix = {}, dir .. "/"
      for path in pairs(files) do
        if path:sub(1, #prefix) == prefix and not path:find("/", #prefix + 1, true) then
          names[#names + 1] = path:sub(#prefix + 1)
        end
      end
      if #names == 0 then return nil, dir .. ": No such file or directory" end
      table.sort(names)
      return names
    end,
    run = M.run,
    read = function(path)
      if files[path] == nil then return nil, path .. ": No such file or directory" end
      return files[path]
    end,
  }
end

-- The real file system, for the repository's own directories (names are ours,
-- so quoting them for ls is enough).
function M.realfs()
  return {
    list = fakes.list_dir,
    run = M.run,
    read = function(path)
      local f, err = io.open(path, "rb")
      if not f then return nil, err end
      local s = f:read("a")
      f:close()
      return s
    end,
  }
end

function M.shipped_profiles()
  local profiles = require "profiles"
  return assert(profiles.load_dir("profiles", M.realfs()))
end

-- With their profiles resolved (tier.layout) as boot.lua does, PROFILE=split.
function M.shipped_tiers()
  local tiers = require "tiers"
  return assert(tiers.load_dir("tiers", M.realfs(),
    { by_name = M.shipped_profiles(), default = "split", dir = "profiles" }))
end

return M
