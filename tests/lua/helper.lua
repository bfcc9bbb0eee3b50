-- Shared busted set-up: file-system adapters for lua/tiers.lua and
-- lua/profiles.lua (an in-memory fake and the real directory) and the
-- shipped tiers/ and profiles/ loaded as serve would.
local M = {}

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
    list = function(dir)
      local p = io.popen("ls -1 '" .. dir .. "' 2>/dev/null")
      local names = {}
      for line in p:lines() do names[#names + 1] = line end
      p:close()
      if #names == 0 then return nil, dir .. ": empty or missing" end
      table.sort(names)
      return names
    end,
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
