-- What each Dokku host holds (issue 16): the instances placed on it and
-- the resources their limits take, from the store, and its drain as set
-- through the API (kept in the store's hosts table). The hosts themselves
-- are lua/hosts.lua's; the choice among them lua/placement.lua's.
local hosts = require "hosts"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"

local M = {}

local check = store_error.checked

-- An instance counts against its host until it is deprovisioned (a failed
-- one may still hold its apps).
local USED_SQL = "SELECT COALESCE(host, 'default') AS host, COUNT(*) AS instances, " ..
  "SUM(COALESCE(json_extract(limits, '$.memory_mb'), 0)) AS memory_mb, " ..
  "SUM(COALESCE(json_extract(limits, '$.cpu'), 0)) AS cpu " ..
  "FROM instances WHERE status <> 'deprovisioned' GROUP BY COALESCE(host, 'default')"

-- An instance being moved (lua/move.lua) counts against its target too
-- until the move ends: moves decided one after another (an evacuation)
-- see each other's room taken.
local MOVING_SQL = "SELECT json_extract(spec, '$.move.to') AS host, COUNT(*) AS instances, " ..
  "SUM(COALESCE(json_extract(limits, '$.memory_mb'), 0)) AS memory_mb, " ..
  "SUM(COALESCE(json_extract(limits, '$.cpu'), 0)) AS cpu " ..
  "FROM instances WHERE status <> 'deprovisioned' AND json_extract(spec, '$.move.to') IS NOT NULL " ..
  "GROUP BY json_extract(spec, '$.move.to')"

-- { [host] = { instances, memory_mb, cpu } } from the store.
function M.used()
  local out = {}
  for _, r in ipairs(check(store.query(USED_SQL))) do
    out[r.host] = { instances = r.instances or 0, memory_mb = r.memory_mb or 0, cpu = r.cpu or 0 }
  end
  for _, r in ipairs(check(store.query(MOVING_SQL))) do
    local u = out[r.host] or { instances = 0, memory_mb = 0, cpu = 0 }
    u.instances = u.instances + (r.instances or 0)
    u.memory_mb = u.memory_mb + (r.memory_mb or 0)
    u.cpu = u.cpu + (r.cpu or 0)
    u.moving_in = r.instances or 0
    out[r.host] = u
  end
  return out
end

-- { [name] = true } of the hosts drained through the API.
function M.drained()
  local out = {}
  for _, r in ipairs(check(store.query("SELECT name FROM hosts WHERE draining = 1"))) do
    out[r.name] = true
  end
  return out
end

-- Persists a drain (true) or its end (false) for host `name`.
function M.set_draining(name, on)
  check(store.exec("INSERT INTO hosts (name, draining, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
    .. "SET draining = excluded.draining, updated_at = excluded.updated_at", name, on and 1 or 0, sys.iso_time()))
end

-- Each host of the generation with what it holds now: used, free (nil per
-- key without a capacity), draining (its file's or the API's), healthy
-- (health(name) → ok, why; nil: not asked).
function M.view(list, health)
  local used, drained = M.used(), M.drained()
  local out = {}
  for _, h in ipairs(list) do
    local u = used[h.name] or { instances = 0, memory_mb = 0, cpu = 0 }
    local free = {}
    for _, k in ipairs(hosts.CAPACITY_ORDER) do
      if h.capacity[k] ~= nil then free[k] = h.capacity[k] - (u[k] or 0) end
    end
    local v = { name = h.name, capacity = h.capacity, labels = h.labels, used = u, free = free,
                draining = h.draining or drained[h.name] == true, draining_file = h.draining,
                draining_api = drained[h.name] == true, implicit = h.implicit }
    if health then
      v.healthy, v.health_error = health(h.name)
    end
    out[#out + 1] = v
  end
  return out
end

return M
