-- The convergence engine: desired state → resources → plan. Each resource
-- module probes (or, in dry-run, is told) the current state and diffs it
-- against its spec; the plan is the ordered list of commands all diffs
-- produce, so a converged instance plans nothing. Teardown converges to
-- "absent" in reverse dependency order.
local command = require "command"

local M = {}

M.modules = {
  app = require "resources.app",
  service = require "resources.service",
  link = require "resources.link",
  config = require "resources.config",
  limits = require "resources.limits",
  storage = require "resources.storage",
  domains = require "resources.domains",
  ports = require "resources.ports",
  image = require "resources.image",
  letsencrypt = require "resources.letsencrypt",
}

local function res(list, rtype, key, spec)
  list[#list + 1] = { type = rtype, key = key, spec = spec, target = spec.app or spec.name }
end

-- What a resource's commands touch. Commands on the same app or service
-- never run at once (Dokku takes no lock for them); different ones may.
function M.locks(r)
  if r.type == "link" then
    return { r.spec.app, r.spec.service }
  end
  return { r.target }
end

-- The resources of a desired state, in dependency order: apps and services
-- exist before links; each app's chain ends with deploy then TLS (which
-- needs a deployed app); apps that must be absent go last.
function M.resources(state)
  local list = {}
  for _, app in ipairs(state.apps) do
    if not app.absent then
      res(list, "app", "app:" .. app.name, { name = app.name })
    end
  end
  for _, svc in ipairs(state.services) do
    res(list, "service", svc.kind .. ":" .. svc.name, { kind = svc.kind, name = svc.name })
  end
  for _, svc in ipairs(state.services) do
    for _, app in ipairs(svc.links) do
      res(list, "link", "link:" .. svc.name .. ":" .. app, { kind = svc.kind, service = svc.name, app = app })
    end
  end
  for _, app in ipairs(state.apps) do
    if not app.absent then
      local a = app.name
      if app.env then
        res(list, "config", "config:" .. a, { app = a, env = app.env, secret_keys = app.secret_keys,
                                              owned_prefixes = app.env_owned_prefixes })
      end
      if app.limits then
        res(list, "limits", "limits:" .. a, { app = a, memory_mb = app.limits.memory_mb, cpu = app.limits.cpu })
      end
      if app.storage then
        local s = app.storage
        res(list, "storage", "storage:" .. a,
          { app = a, dir = s.dir, host_path = s.host_path, container_path = s.container_path, chown = s.chown,
            owned_paths = s.owned_paths })
      end
      if app.domains then
        res(list, "domains", "domains:" .. a, { app = a, domains = app.domains })
      end
      if app.container_port then
        res(list, "ports", "ports:" .. a, { app = a, container_port = app.container_port })
      end
      if app.image then
        res(list, "image", "image:" .. a, { app = a, image = app.image })
      end
      if app.letsencrypt and app.domains then
        res(list, "letsencrypt", "letsencrypt:" .. a, { app = a, email = app.letsencrypt.email })
      end
    end
  end
  for _, app in ipairs(state.apps) do
    if app.absent then
      res(list, "app", "app:" .. app.name, { name = app.name, absent = true })
    end
  end
  return list
end

-- current_of(resource) → current state (nil = absent) or nil, err.
-- Returns steps: { {resource = r, commands = {...}}, ... } (only resources
-- with something to do, plus restarts), or nil, err.
function M.plan(list, current_of, owed)
  local steps = {}
  local restart, deploys, has_image = {}, {}, {}
  local order = {}
  -- owed: apps an earlier round of the job changed without starting them
  -- since (see worker.owed_restarts); they are restarted like changed ones
  for _, app in ipairs(owed or {}) do
    if not restart[app] then
      restart[app] = true
      order[#order + 1] = app
    end
  end
  -- Apps whose domains this plan changes: their certificate no longer
  -- covers them, whatever letsencrypt:active said before domains:set ran
  -- (it compares the installed certificate with lego's for the first
  -- domain at probe time, le:internal-functions fn-letsencrypt-is-active).
  local new_domains = {}
  for _, r in ipairs(list) do
    local cur, err = current_of(r)
    if err then
      return nil, err
    end
    if r.type == "letsencrypt" and new_domains[r.target] then
      cur = { active = false }
    end
    r.current = cur
    if r.type == "image" then
      has_image[r.target] = true
    end
    local cmds = M.modules[r.type].diff(r.spec, cur)
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
      if r.type == "domains" then
        new_domains[r.target] = true
      end
    end
  end
  -- A change that only takes effect on restart, on an app that this plan
  -- does not redeploy: restart it once, at the end.
  for _, app in ipairs(order) do
    if has_image[app] and not deploys[app] then
      steps[#steps + 1] = {
        resource = { type = "restart", key = "restart:" .. app, target = app, spec = { app = app } },
        commands = { command.new("restart", app, { "ps:restart", app }) },
        locks = { app },
      }
    end
  end
  return steps
end

-- Teardown of a desired state: optional backups, then unlink, destroy
-- services, destroy apps (reverse order). Only what exists is removed.
-- Every step holds one common lock, so nothing is unlinked or destroyed
-- before every backup has been written.
function M.teardown(state, current_of, opts)
  opts = opts or {}
  local steps = {}
  -- Adds the step make(r) for resource r when r exists on the server.
  local function when_present(rtype, key, target, spec, make)
    local r = { type = rtype, key = key, target = target, spec = spec }
    local cur, err = current_of(r)
    if err then
      return nil, err
    end
    r.current = cur
    if cur ~= nil and (cur.exists or cur.linked) then
      local step_r, cmds = make(r)
      steps[#steps + 1] = { resource = step_r, commands = cmds, locks = { state.app }, teardown = true }
    end
    return true
  end
  local plan = {}
  local function service(svc, make)
    plan[#plan + 1] = { "service", svc.kind .. ":" .. svc.name, svc.name, { kind = svc.kind, name = svc.name }, make }
  end
  if opts.backup then
    for _, svc in ipairs(state.services) do
      service(svc, function(r)
        return { type = "backup", key = "backup:" .. svc.name, target = svc.name, spec = r.spec },
          { command.new("backup", svc.name, { svc.kind .. ":export", svc.name }, nil,
            { mutating = false, stream = true }) }
      end)
    end
  end
  for _, svc in ipairs(state.services) do
    for _, app in ipairs(svc.links) do
      plan[#plan + 1] = { "link", "link:" .. svc.name .. ":" .. app, app,
                          { kind = svc.kind, service = svc.name, app = app },
                          function(r) return r, M.modules.link.undo(r.spec) end }
    end
  end
  for _, svc in ipairs(state.services) do
    service(svc, function(r) return r, M.modules.service.undo(r.spec) end)
  end
  for i = #state.apps, 1, -1 do
    local name = state.apps[i].name
    plan[#plan + 1] = { "app", "app:" .. name, name, { name = name },
                        function(r) return r, M.modules.app.undo(r.spec) end }
  end
  for _, p in ipairs(plan) do
    local ok, err = when_present(table.unpack(p, 1, 5))
    if not ok then
      return nil, err
    end
  end
  return steps
end

-- The recorded state after a step of the plan succeeded (dry-run keeps this
-- as its view of the server; it holds digests, never secret values).
function M.model_after(step)
  local r = step.resource
  local mod = M.modules[r.type]
  if not mod or r.type == "backup" then
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

return M
