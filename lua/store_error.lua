-- Store errors, for the store view modules (instances, journal) and the
-- code that must tell a full or read-only disk from a bug. A failed
-- statement is raised as the binding's error object (store.error: {message,
-- code}, printed as its message); a refused BEGIN or COMMIT raises the same
-- from C. Callers classify it by SQLite's result code, never by its text.
local store = require "mrprov.store"

local M = {}

-- SQLite's primary result codes of a file system that refuses writes (a
-- full disk, an I/O error, a read-only mount, a file it cannot open): then
-- nothing can be journaled, so no command may run; it may pass.
M.UNWRITABLE = {
  [8] = "SQLITE_READONLY", [10] = "SQLITE_IOERR", [13] = "SQLITE_FULL", [14] = "SQLITE_CANTOPEN",
}

-- v, or raises the store error of a failed store.query / store.exec (their
-- nil, message, code), its message after prefix.
function M.check(v, err, code, prefix)
  if v == nil then
    error(store.error((prefix or "") .. tostring(err), code), 0)
  end
  return v
end

-- M.check with the prefix every store view module uses ("store: "): what
-- they call on each store.query / store.exec answer.
function M.checked(v, err, code)
  return M.check(v, err, code, "store: ")
end

-- Whether e (any error value) is a store error from a disk that refuses writes.
function M.unwritable(e)
  return type(e) == "table" and math.type(e.code) == "integer" and e.code >= 0
    and M.UNWRITABLE[e.code & 0xff] ~= nil
end

return M
