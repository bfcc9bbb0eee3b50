-- The convergence engine: desired state → resources → plan. Each resource
-- module probes (or, in dry-run, is told) the current state and diffs it
-- against its spec; the plan is the ordered list of commands all diffs
-- produce, so a converged instance plans nothing. Teardown converges to
-- "absent" in reverse dependency order.
local contract = require "resources.lib.contract"
local sys = require "mrprov.sys"

local M = {}

-- The resource modules by type, and in (phase, order, type) order: every
-- *.lua directly in LUA_DIR/resources/ (lua/resources/lib/contract.lua says
-- what each exports). Filled by M.load when this module is required.
M.modules, M.list = {}, {}

-- Loads the resource modules of this state's configuration generation: the
-- directory as it was read at load (SIGHUP reads it again), each file
-- required and checked against the contract. list(dir) → sorted names or
-- nil, err (default sys.source_list). True, or nil and why.
function M.load(list)
  -- LUA_DIR's default is C's (src/config.c): sys.config() always carries it.
  local dir = sys.config().LUA_DIR:gsub("/+$", "") .. "/resources"
  local names, err = (list or sys.source_list)(dir)
  if not names then
    return nil, "resource modules: " .. tostring(err)
  end
  local by_type, mods = {}, {}
  for _, name in ipairs(names) do
    local rtype = name:match("^(.*)%.lua$")
    if rtype then
      if not rtype:match("^[a-z][a-z0-9_]*$") then
        return nil, dir .. "/" .. name .. ": a resource module's name is lower-case letters, digits and '_'"
      end
      local ok, mod = pcall(require, "resources." .. rtype)
      if not ok then
        return nil, tostring(mod)
      end
      local good, why = contract.check(mod, rtype)
      if not good then
        return nil, dir .. "/" .. name .. ": " .. why
      end
      by_type[rtype] = mod
      mods[#mods + 1] = mod
    end
  end
  table.sort(mods, function(a, b)
    if a.phase ~= b.phase then
      return a.phase < b.phase
    end
    if a.order ~= b.order then
      return a.order < b.order
    end
    return a.type < b.type
  end)
  M.modules, M.list, M.dir = by_type, mods, dir
  return true
end

-- What a resource's commands touch. Commands on the same app or service
-- never run at once (Dokku takes no lock for them); different ones may.
function M.locks(r)
  return M.modules[r.type].locks(r.spec)
end

-- Whether r's commands create an object (a failed provision removes what
-- its job created, lua/converge.lua).
function M.creates(r)
  local mod = M.modules[r.type]
  if not mod or not r.spec then
    return false
  end
  if type(mod.creates) == "function" then
    return mod.creates(r.spec) and true or false
  end
  return mod.creates
end

local function resource(mod, e)
  return { type = mod.type, key = e.key, spec = e.spec, target = e.spec.app or e.spec.name }
end

-- Sort key of a resource: phase, then the app or service it derives from
-- (apps first, in desired order), then the module's order within the phase.
local function before(a, b)
  for i = 1, 6 do
    if a[i] ~= b[i] then
      return a[i] < b[i]
    end
  end
  return false
end

-- The resources of a desired state, in dependency order: each module
-- derives its resources from the apps or services of the state, and its
-- phase and order place them (see resources/lib/contract.lua): apps and
-- services exist before links; each app's chain ends with deploy then TLS
-- (which needs a deployed app); apps that must be absent go last.
function M.resources(state)
  local rows = {}
  for _, mod in ipairs(M.list) do
    for i, item in ipairs(state[mod.from] or {}) do
      for j, e in ipairs(mod.specs(item, state) or {}) do
        rows[#rows + 1] = { e.phase or mod.phase, contract.FROM[mod.from], i, mod.order, mod.type, j,
                            r = resource(mod, e) }
      end
    end
  end
  table.sort(rows, before)
  local list = {}
  for k, row in ipairs(rows) do
    list[k] = row.r
  end
  return list
end

-- current_of(resource) → current state (nil = absent) or nil, err.
-- Returns steps: { {resource = r, commands = {...}}, ... } (only resources
-- with something to do, plus restarts), or nil, err.
function M.plan(list, current_of, owed)
  local steps = {}
  local restart, deploys, starter = {}, {}, {}
  local order = {}
  -- owed: apps an earlier round of the job changed without starting them
  -- since (see converge.owed_restarts); they are restarted like changed ones
  for _, app in ipairs(owed or {}) do
    if not restart[app] then
      restart[app] = true
      order[#order + 1] = app
    end
  end
  -- The resource types this plan changes, per object (module.stale).
  local changed = {}
  for _, r in ipairs(list) do
    local cur, err = current_of(r)
    if err then
      return nil, err
    end
    local mod = M.modules[r.type]
    if mod.stale then
      cur = mod.stale(cur, changed[r.target] or {})
    end
    r.current = cur
    if mod.restart and not starter[r.target] then
      starter[r.target] = mod
    end
    local cmds = mod.diff(r.spec, cur)
    if #cmds > 0 then
      steps[#steps + 1] = { resource = r, commands = cmds, locks = M.locks(r) }
      for _, c in ipairs(cmds) do
        if c.restart and not restart[c.target] then
          restart[c.target] = true
          order[#order + 1] = c.target
        end
        if c.deploys then
          deploys[c.target] = true
        end
      end
      changed[r.target] = changed[r.target] or {}
      changed[r.target][r.type] = true
    end
  end
  -- A change that only takes effect on restart, on an app that runs
  -- (a module can start it) and that this plan does not redeploy: restart
  -- it once, at the end.
  for _, app in ipairs(order) do
    if starter[app] and not deploys[app] then
      steps[#steps + 1] = {
        resource = { type = "restart", key = "restart:" .. app, target = app, spec = { app = app } },
        commands = starter[app].restart(app),
        locks = { app },
        derived = true,
      }
    end
  end
  return steps
end

-- The part of list a job scoped to what changed converges (a rollout's
-- step, lua/rollout.lua): the resources whose plan against `model` (what
-- the instance's jobs recorded as applied, inst.applied; no Dokku probe)
-- has commands, and on each app they touch the resource that starts it (a
-- module with `restart`), so a change marked `restart` still takes effect.
-- owed: apps owed a restart (converge.owed_restarts), kept the same way.
-- The rest is not probed: drift there is the sweep's (lua/reconcile.lua)
-- and the next full job's. An instance with no record at all (older than
-- the model) keeps the whole list.
function M.pending(list, model, owed)
  if not model or next(model) == nil then
    return list
  end
  local copies = {}
  for i, r in ipairs(list) do
    copies[i] = { type = r.type, key = r.key, spec = r.spec, target = r.target }
  end
  local steps = M.plan(copies, function(r) return model[r.key] end) or {}
  local keys, apps = {}, {}
  for _, app in ipairs(owed or {}) do
    apps[app] = true
  end
  for _, s in ipairs(steps) do
    if not s.derived then
      keys[s.resource.key] = true
      apps[s.resource.target] = true
    end
  end
  local out = {}
  for _, r in ipairs(list) do
    if keys[r.key] or (apps[r.target] and M.modules[r.type].restart) then
      out[#out + 1] = r
    end
  end
  return out
end

-- The modules whose objects a teardown removes, in teardown order.
local function removable()
  local mods = {}
  for _, mod in ipairs(M.list) do
    if mod.teardown then
      mods[#mods + 1] = mod
    end
  end
  table.sort(mods, function(a, b)
    if a.teardown.order ~= b.teardown.order then
      return a.teardown.order < b.teardown.order
    end
    return a.type < b.type
  end)
  return mods
end

-- A module's resources of a desired state, for a teardown: in desired
-- order, or reversed when the module says so.
local function entries(mod, state)
  local list = {}
  for _, item in ipairs(state[mod.from] or {}) do
    for _, e in ipairs(mod.specs(item, state) or {}) do
      list[#list + 1] = e
    end
  end
  if mod.teardown and mod.teardown.reverse then
    for i = 1, #list // 2 do
      list[i], list[#list - i + 1] = list[#list - i + 1], list[i]
    end
  end
  return list
end

-- Teardown of a desired state: optional backups, then the objects of every
-- module with M.teardown, in its order (unlink, destroy services, destroy
-- apps). Only what exists is removed. Every step holds one common lock, so
-- nothing is unlinked or destroyed before every backup has been written.
function M.teardown(state, current_of, opts)
  opts = opts or {}
  local steps = {}
  -- The resource of e when it exists on the server, or false; nil, err.
  local function present(mod, e)
    local r = resource(mod, e)
    local cur, err = current_of(r)
    if err then
      return nil, err
    end
    r.current = cur
    return mod.exists(cur) and r or false
  end
  local mods = removable()
  if opts.backup then
    -- every module that saves data, removed by the teardown or kept (a
    -- storage directory stays on the host, its backup is the copy that
    -- leaves it), in type order
    local savers = {}
    for _, mod in ipairs(M.list) do
      if mod.backup then savers[#savers + 1] = mod end
    end
    table.sort(savers, function(a, b) return a.type < b.type end)
    for _, mod in ipairs(savers) do
      for _, e in ipairs(entries(mod, state)) do
        local r, err = present(mod, e)
        if r == nil then
          return nil, err
        end
        if r then
          steps[#steps + 1] = {
            resource = { type = "backup", key = "backup:" .. r.target, target = r.target, spec = r.spec },
            commands = mod.backup(r.spec), locks = { state.app }, teardown = true, derived = true,
          }
        end
      end
    end
  end
  for _, mod in ipairs(mods) do
    for _, e in ipairs(entries(mod, state)) do
      local r, err = present(mod, e)
      if r == nil then
        return nil, err
      end
      if r then
        steps[#steps + 1] = { resource = r, commands = mod.undo(r.spec), locks = { state.app }, teardown = true }
      end
    end
  end
  return steps
end

-- The recorded state after a step of the plan succeeded (dry-run keeps this
-- as its view of the server; it holds digests, never secret values). Steps
-- the engine derives (backups, restarts) leave it as it is.
function M.model_after(step)
  local r = step.resource
  local mod = M.modules[r.type]
  if not mod or step.derived then
    return nil, false
  end
  if step.teardown then
    return nil, true
  end
  return mod.model(r.spec, r.current, step.commands), true
end

-- Flattens steps into command display lines.
function M.lines(steps)
  local out = {}
  for _, s in ipairs(steps) do
    for _, c in ipairs(s.commands) do
      out[#out + 1] = c.display
    end
  end
  return out
end

do
  local ok, err = M.load()
  if not ok then
    error(err, 0)
  end
end

return M
