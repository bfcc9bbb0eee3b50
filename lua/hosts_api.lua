-- The hosts API (issue 16): GET /api/v1/hosts — each Dokku host's
-- capacity, what its instances use, what is free, its instance count,
-- health and drain; POST /api/v1/hosts/{name}/drain and /undrain — a
-- drained host gets no new instance (lua/placement.lua); the drain is kept
-- in the store and survives a restart.
local dokku = require "mrprov.dokku"
local generation = require "generation"
local host_usage = require "host_usage"
local hosts = require "hosts"
local json = require "json"
local requests = require "requests"
local store = require "mrprov.store"

local M = {}

local answer, fail = requests.answer, requests.fail

local function shown(v, moving)
  local capacity, free = {}, {}
  for _, k in ipairs(hosts.CAPACITY_ORDER) do
    capacity[k] = v.capacity[k] == nil and json.null or v.capacity[k]
    free[k] = v.free[k] == nil and json.null or v.free[k]
  end
  return {
    name = v.name,
    implicit = v.implicit == true,
    capacity = capacity, -- null: not declared (no bound)
    used = { memory_mb = v.used.memory_mb, cpu = v.used.cpu, instances = v.used.instances },
    free = free,
    instances = v.used.instances,
    labels = v.labels, -- (an empty table is {} in JSON)
    healthy = v.healthy and true or false,
    health_error = v.health_error or json.null,
    draining = v.draining and true or false,
    -- why: the host file says so, or the API drained it (undrain lifts only that)
    draining_file = v.draining_file and true or false,
    draining_api = v.draining_api and true or false,
    -- an evacuation's progress (lua/move.lua): instances still here, and
    -- how many of them are being moved out
    instances_left = v.used.instances - (v.used.moving_in or 0),
    moving_out = moving and moving[v.name] or 0,
  }
end

-- GET /api/v1/hosts
function M.list()
  local cfg = generation.current()
  local list = hosts.list(cfg)
  -- health first: the view reads the store in one snapshot after it
  local health = {}
  for _, h in ipairs(list) do
    local ok, why = dokku.host_health(h.name)
    health[h.name] = { ok, why }
  end
  local views, moving = store.read(function()
    return host_usage.view(list, function(name) return health[name][1], health[name][2] end),
      require("move").moving_out()
  end)
  local out = json.array()
  for _, v in ipairs(views) do out[#out + 1] = shown(v, moving) end
  return answer(200, { hosts = out, generation = cfg.generation })
end

-- POST /api/v1/hosts/{name}/drain (on = true) or /undrain (false).
function M.drain(req, on)
  local name = req.param or ""
  local cfg = generation.current()
  local list = hosts.list(cfg)
  local host = hosts.name_ok(name) and hosts.by_name(list)[name]
  if not host then
    return fail(404, "not_found", "no such Dokku host", "name")
  end
  store.tx(function() host_usage.set_draining(name, on) end)
  local views = store.read(function() return host_usage.view({ host }) end)
  local v = shown(views[1])
  v.healthy, v.health_error = nil, nil
  v.message = on and "draining: the host gets no new instance"
    or (host.draining and "undrained through the API; its host file still says draining = true"
      or "undrained: the host takes new instances again")
  return answer(200, v)
end

return M
