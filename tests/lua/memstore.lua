-- The real store binding (src/lua/bind_store.c over src/store, the schema
-- migrated by the store code) over an in-memory SQLite, as mrprov.store for
-- the specs of the store views and the worker: tests/c/store_module.c,
-- built as build/lib/mrprov/store_memory.so (ctest sets MRPROV_STORE_LIB).
-- Specs that need it are pending when it is not built (a sanitized build).
require "fakes"
local helper = require "helper"

local M = {}

M.path = os.getenv("MRPROV_STORE_LIB") or "build/lib/mrprov/store_memory.so"

local store

-- The binding installed as mrprov.store, or nil when it is not built.
function M.install()
  if store == nil then
    local f = io.open(M.path, "rb")
    if f then
      f:close()
      store = assert(package.loadlib(M.path, "luaopen_mrprov_store_memory"))()
    else
      store = false
    end
  end
  if store then
    package.loaded["mrprov.store"] = store
  end
  return store or nil
end

-- A describe for a spec file (busted's describe and pending are the file's
-- own): the block when the binding is built, else one pending line.
function M.describer(describe, pending)
  return function(name, fn)
    if M.install() then
      describe(name, fn)
    else
      pending(name .. " (" .. M.path .. " not built)")
    end
  end
end

-- A fresh, empty store (every table of the schema, no row).
function M.reset()
  store.reset()
end

-- Jobs as the C scheduler would answer: nothing stops; sleeps return at once.
M.jobs = {
  stopping = function() return false end,
  sleep = function() return true end,
  notify = function() end,
  wait = function() return true end,
}
package.loaded["mrprov.jobs"] = M.jobs

-- helper.settings and what a job's run reads besides
M.settings = { backup_dir = "/tmp/mrprov-spec-backups", dokku_mode = "dry-run", command_timeout = 900 }
for k, v in pairs(helper.settings) do
  M.settings[k] = v
end

-- boot's configuration: the shipped tiers, no hooks (or the given ones).
function M.boot(hooks)
  local boot = require "boot"
  boot.set({ settings = M.settings, tiers = helper.shipped_tiers(), hooks = hooks or {}, generation = 1,
             tiers_dir = "tiers", hooks_dir = "hooks" })
  return boot.current()
end

-- A fake mrprov.dokku in `mode`: answer(argv_text) → {exit, stdout,
-- stderr} (exit 0 and empty output when nil); every command sent is
-- recorded in `sent`.
function M.dokku(mode, answer)
  local d = { sent = {} }
  local function run(argv)
    local text = table.concat(argv, " ")
    d.sent[#d.sent + 1] = text
    local a = answer and answer(text) or nil
    if type(a) == "string" then
      return nil, a
    end
    a = a or {}
    return { exit = a.exit or 0, stdout = a.stdout or "", stderr = a.stderr or "", duration = 0.001, bytes = 0 }
  end
  d.mode = function() return mode end
  d.run = function(argv) return run(argv) end
  d.run_many = function(calls)
    local out = {}
    for i, c in ipairs(calls) do
      local res, err = run(c.argv)
      out[i] = { ok = res, error = err }
    end
    return out
  end
  d.token_ok = function() return true end
  d.set_hosts = function() return true end
  d.host_health = function() return true end
  d.hosts = function() return { "default" } end
  package.loaded["mrprov.dokku"] = d
  return d
end

return M
