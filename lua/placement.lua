-- Placement (issue 16): which Dokku host a new instance goes to. The
-- decision is made once, when the provision is accepted, stored with the
-- instance before any command is sent, and changed only by a move.
--
-- The shipped policy is least-loaded-with-room: the candidates are the
-- hosts that answer, are not draining, carry every label the tier and the
-- customer's hook require, and have room for the instance's limits in
-- every capacity they declare; of those the one whose fullest declared
-- resource is least full after placing it, then the one with the fewest
-- instances, then by name. An operator replaces the policy by shipping
-- their own lua/placement.lua in LUA_DIR (same `choose` contract), as any
-- module there; a tier (`host_labels`) or a hook (`host_labels`) narrows the
-- candidates without replacing it.
local hosts = require "hosts"

local M = {}

local ORDER = hosts.CAPACITY_ORDER

local function fmt(v)
  if math.type(v) == "float" then
    return (("%.3f"):format(v):gsub("0+$", ""):gsub("%.$", ""))
  end
  return tostring(v)
end

-- The labels a placement requires: the tier's, then the hook's over them.
function M.required_labels(tier, hook)
  local out = {}
  for k, v in pairs(tier and tier.host_labels or {}) do out[k] = v end
  for k, v in pairs(hook and hook.host_labels or {}) do out[k] = v end
  return out
end

-- Why host h (a hosts.view entry) cannot take an instance needing `need`
-- ({ memory_mb, cpu, instances }; memory_mb or cpu nil: unlimited) with
-- `labels`, or nil when it can.
function M.refusal(h, need, labels)
  if h.draining then
    return "draining"
  end
  if h.healthy == false then
    return "unreachable" .. (h.health_error and (" (" .. h.health_error .. ")") or "")
  end
  local keys = {}
  for k in pairs(labels or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if h.labels[k] ~= labels[k] then
      return ("label %s=%s wanted, the host has %s"):format(k, tostring(labels[k]),
        h.labels[k] == nil and "none" or tostring(h.labels[k]))
    end
  end
  for _, k in ipairs(ORDER) do
    local cap = h.capacity[k]
    if cap ~= nil then
      local free = h.free[k]
      if need[k] == nil then
        return ("%s: the instance's is unlimited, the host has %s"):format(k, fmt(cap))
      end
      if need[k] > free then
        return ("%s: %s needed, %s free of %s"):format(k, fmt(need[k]), fmt(math.max(free, 0)), fmt(cap))
      end
    end
  end
  return nil
end

-- How full host h would be with the instance: the largest share of any
-- declared capacity (0 when it declares none).
local function load_after(h, need)
  local worst = 0
  for _, k in ipairs(ORDER) do
    local cap = h.capacity[k]
    if cap ~= nil and cap > 0 then
      local share = ((h.used[k] or 0) + (need[k] or 0)) / cap
      if share > worst then worst = share end
    end
  end
  return worst
end

-- choose{ hosts = hosts.view(...) (with healthy), need = {...}, labels =
-- {...}, tier = tier, request = r } → host name, or nil, message naming
-- every host and what it lacks.
function M.choose(ctx)
  local need = ctx.need
  local best, best_key
  local why = {}
  for _, h in ipairs(ctx.hosts) do
    local refused = M.refusal(h, need, ctx.labels)
    if refused then
      why[#why + 1] = h.name .. ": " .. refused
    else
      local key = { load_after(h, need), h.used.instances or 0, h.name }
      if not best or key[1] < best_key[1] or (key[1] == best_key[1] and (key[2] < best_key[2]
          or (key[2] == best_key[2] and key[3] < best_key[3]))) then
        best, best_key = h, key
      end
    end
  end
  if best then
    return best.name
  end
  if #ctx.hosts == 0 then
    return nil, "no Dokku host is configured"
  end
  return nil, "no Dokku host has room for this instance: " .. table.concat(why, "; ")
end

return M
