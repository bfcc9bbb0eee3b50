-- A ustar (POSIX.1-1988) archive writer for build contexts sent to
-- `git:from-archive --archive-type tar APP --` (lua/resources/image.lua).
-- Pure and deterministic: the same files give the same bytes (mtime 0,
-- uid/gid 0, no user or group names), so the archive's SHA-256 identifies
-- the build context. Only regular files with plain relative names at the
-- top level: Dokku strips the longest common directory prefix of the
-- members (core:plugins/git/git-from-archive, COMMON_PREFIX/BOGUS_PARTS in
-- v0.35.20 and v0.38.27), so names without a directory keep their place.
local M = {}

local BLOCK = 512

-- octal field of `width` bytes: digits, zero-padded, then NUL
local function octal(n, width)
  local s = string.format("%0" .. (width - 1) .. "o", n)
  assert(#s == width - 1, "tar: a number too large for its field")
  return s .. "\0"
end

local function field(s, width)
  return s .. string.rep("\0", width - #s)
end

-- true when name is a plain file name: 1..100 bytes of [A-Za-z0-9._-],
-- not "." or "..", no directory part (a "/" would make it one).
function M.plain_name(name)
  return type(name) == "string" and #name >= 1 and #name <= 100 and name:match("^[A-Za-z0-9._-]+$") ~= nil
    and name ~= "." and name ~= ".."
end

local function header(name, size, mode)
  local h = field(name, 100) -- name
    .. octal(mode, 8) -- mode
    .. octal(0, 8) -- uid
    .. octal(0, 8) -- gid
    .. octal(size, 12) -- size
    .. octal(0, 12) -- mtime
    .. "        " -- chksum, counted as spaces
    .. "0" -- typeflag: regular file
    .. field("", 100) -- linkname
    .. "ustar\0" .. "00" -- magic, version
    .. field("", 32) .. field("", 32) -- uname, gname
    .. octal(0, 8) .. octal(0, 8) -- devmajor, devminor
    .. field("", 155) -- prefix
  h = field(h, BLOCK)
  local sum = 0
  for i = 1, BLOCK do
    sum = sum + h:byte(i)
  end
  -- six octal digits, NUL, space (as GNU tar writes it)
  return h:sub(1, 148) .. string.format("%06o", sum) .. "\0 " .. h:sub(157)
end

-- The 512-byte header of a regular file (a plain name; no checks: the
-- caller's), for an archive written piece by piece (lua/move.lua streams
-- a file into one).
M.header = header
M.BLOCK = BLOCK

-- files: a list of { name = plain name, content = string, mode = integer
-- (e.g. 420 for 0644) }, archived in that order. Returns the archive, or
-- nil, why (a name that is not plain, twice the same name, a bad mode).
function M.archive(files)
  if type(files) ~= "table" or #files == 0 then
    return nil, "tar: no files"
  end
  local parts, seen = {}, {}
  for i, f in ipairs(files) do
    if type(f) ~= "table" or not M.plain_name(f.name) then
      return nil, ("tar: file %d: %q is not a plain relative file name"):format(i, tostring(type(f) == "table"
        and f.name or f))
    end
    if seen[f.name] then
      return nil, "tar: " .. f.name .. " named twice"
    end
    seen[f.name] = true
    if type(f.content) ~= "string" then
      return nil, "tar: " .. f.name .. ": content must be a string"
    end
    local mode = f.mode or 420
    if math.type(mode) ~= "integer" or mode < 0 or mode > 511 then
      return nil, "tar: " .. f.name .. ": mode must be an integer 0..0777"
    end
    parts[#parts + 1] = header(f.name, #f.content, mode)
    parts[#parts + 1] = f.content
    local pad = (BLOCK - #f.content % BLOCK) % BLOCK
    parts[#parts + 1] = string.rep("\0", pad)
  end
  parts[#parts + 1] = string.rep("\0", 2 * BLOCK) -- end of archive
  return table.concat(parts)
end

return M
