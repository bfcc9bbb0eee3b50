-- The `plan`, `check`, `tiers` and `render` commands: the same Lua as `serve`, printing
-- to stdout. Each returns the process exit code (0 ok, 1 failure, 2 usage).
local generation = require "generation"
local json = require "json"
local profiles = require "profiles"
local tiers = require "tiers"
local validate = require "validate"
local validate_request = require "validate_request"

local M = {}

-- opts: the command line as main.c parsed it (its command table owns each
-- command's options and the usage errors): { tier = "...", json = true, ... }.
function M.plan(opts)
  local cfg = generation.current()
  local body = {
    subscription_id = opts.subscription, account_id = opts.account, tier = opts.tier,
    enable_matrix = opts.matrix ~= nil, matrix_type = opts.matrix, custom_domain = opts.domain,
  }
  local r, err = validate_request.provision_request(body, cfg.tiers)
  if not r then
    local flag = ({ subscription_id = "--subscription", account_id = "--account", tier = "--tier",
                    matrix_type = "--matrix", custom_domain = "--domain", enable_matrix = "--matrix" })[err.field]
    io.stderr:write("mrprov: ", flag and (flag .. ": ") or "", err.message, "\n")
    return 2
  end
  local p, perr = require("plan").plan_for(r, cfg)
  if not p then
    io.stderr:write("mrprov: ", perr, "\n")
    return 1
  end
  if opts.json then
    io.write(json.encode(p), "\n")
  else
    io.write("# plan for ", p.subscription_id, ": app ", p.app_name, ", tier ", p.tier,
      p.existing and " (existing instance: only the differences)" or "", "\n")
    if p.hook ~= json.null and p.hook.desired then
      io.write("# hook ", p.hook.file, ": desired() applied to this plan\n")
    end
    for _, line in ipairs(p.commands) do
      io.write(line, "\n")
    end
    if p.hook ~= json.null and p.hook.after then
      io.write("# hook ", p.hook.file, ": after() runs its own commands here, scoped to ", p.app_name, "\n")
    end
  end
  return 0
end

function M.check()
  local cfg = generation.current()
  local names = tiers.names(cfg.tiers)
  io.write("settings: ok (base domain ", cfg.settings.base_domain, ", dokku ", cfg.settings.dokku_mode, ")\n")
  io.write("tiers (", #names, ") from ", cfg.tiers_dir, ":\n")
  for _, name in ipairs(names) do
    local t = cfg.tiers[name]
    io.write(string.format("  %-14s %s\n", name, t.file or ""))
  end
  local used = {}
  for _, name in ipairs(names) do
    local p = cfg.tiers[name].profile
    if p then
      used[p] = used[p] and (used[p] .. ", " .. name) or name
    end
  end
  local pnames = profiles.names(cfg.profiles or {})
  io.write("profiles (", #pnames, ") from ", tostring(cfg.profiles_dir), ", default ", tostring(cfg.settings.profile),
    ":\n")
  for _, name in ipairs(pnames) do
    io.write(string.format("  %-14s %s%s\n", name, cfg.profiles[name].file,
      used[name] and (" (tiers: " .. used[name] .. ")") or ""))
  end
  local ids = {}
  for id in pairs(cfg.hooks) do
    ids[#ids + 1] = id
  end
  table.sort(ids)
  io.write("hooks (", #ids, ") from ", cfg.hooks_dir, ":\n")
  for _, id in ipairs(ids) do
    local h = cfg.hooks[id]
    io.write(string.format("  %-14s %s%s%s\n", id, h.file, h.desired and " desired()" or "",
      h.after and " after()" or ""))
  end
  -- the Dokku hosts (lua/hosts.lua): none means DOKKU_HOST, "default"
  local list = cfg.hosts or {}
  if list[1] and list[1].implicit then
    io.write("hosts (0) from ", cfg.hosts_dir or "./hosts", ": DOKKU_HOST is the one host, \"default\"\n")
  else
    io.write("hosts (", #list, ") from ", cfg.hosts_dir or "./hosts", ":\n")
    for _, h in ipairs(list) do
      local cap = {}
      for _, k in ipairs({ "memory_mb", "cpu", "instances" }) do
        if h.capacity[k] then cap[#cap + 1] = k .. "=" .. tostring(h.capacity[k]) end
      end
      io.write(string.format("  %-14s %s@%s:%d %s%s\n", h.name, h.user, h.host, h.port,
        #cap > 0 and table.concat(cap, " ") or "no capacity bound", h.draining and " draining" or ""))
    end
  end
  -- (boot.load has loaded and checked the resource modules)
  local engine = require "engine"
  io.write("resources (", #engine.list, ") from ", engine.dir, ":\n")
  for _, mod in ipairs(engine.list) do
    io.write(string.format("  %-14s phase %d, order %s\n", mod.type, mod.phase, tostring(mod.order)))
  end
  -- Every Lua module the service uses must load too.
  for _, mod in ipairs({ "api", "worker", "engine", "desired", "profiles", "render", "instances", "placement",
                         "hosts_api" }) do
    local ok, err = pcall(require, mod)
    if not ok then
      io.stderr:write("mrprov: ", tostring(err), "\n")
      return 1
    end
  end
  io.write("lua: ok\n")
  return 0
end

-- The config.yaml text a built state delivers: the seed_config of an app
-- (the mindroom profile's way) or its MINDROOM_CONFIG_YAML value (split).
local function delivered_config(state)
  for _, a in ipairs(state.apps) do
    if not a.absent and type(a.seed_config) == "table" and type(a.seed_config.content) == "string" then
      return a.seed_config.content
    end
  end
  for _, a in ipairs(state.apps) do
    if not a.absent and a.env and type(a.env.MINDROOM_CONFIG_YAML) == "string" then
      return a.env.MINDROOM_CONFIG_YAML
    end
  end
  return nil
end

-- `mrprov render --tier T [--matrix synapse|tuwunel] [--profile P]`: the
-- config.yaml an instance of T gets, built exactly as a provision builds it
-- (plan.desired_state: tier, profile, hook), for a made-up instance whose
-- ids the file does not carry.
function M.render(opts)
  local cfg = generation.current()
  local tier = cfg.tiers[opts.tier]
  if not tier then
    io.stderr:write("mrprov: --tier: unknown tier '", validate.tier_name(opts.tier) and opts.tier or "?",
      "'; known tiers: ", table.concat(tiers.names(cfg.tiers), ", "), "\n")
    return 2
  end
  local profile
  if opts.profile then
    profile = (cfg.profiles or {})[opts.profile]
    if not profile then
      io.stderr:write("mrprov: --profile: unknown profile '", validate.tier_name(opts.profile) and opts.profile or "?",
        "'; known profiles: ", table.concat(profiles.names(cfg.profiles or {}), ", "), "\n")
      return 2
    end
  end
  if opts.matrix and not validate.matrix_type(opts.matrix) then
    io.stderr:write("mrprov: --matrix: must be synapse or tuwunel\n")
    return 2
  end
  local inst = {
    subscription_id = "render", app_name = "mr-render-00000000", tier = tier.name,
    spec = { enable_matrix = opts.matrix ~= nil, matrix_type = opts.matrix or "tuwunel", config_updates = {} },
  }
  local state, err = require("plan").desired_state(inst, cfg, profile)
  if not state then
    io.stderr:write("mrprov: ", tostring(err), "\n")
    return 1
  end
  local text = delivered_config(state)
  if not text then
    io.stderr:write("mrprov: profile ", profile and profile.name or tostring(tier.profile),
      " delivers no config.yaml (no app with seed_config or MINDROOM_CONFIG_YAML)\n")
    return 1
  end
  io.write(text)
  return 0
end

-- `mrprov reconcile --dry-run [--json]`: one sweep in this process with
-- the engine's read-only probes; the report, nothing changed.
function M.reconcile(opts)
  if not opts["dry-run"] then
    io.stderr:write("mrprov: reconcile: --dry-run is required (a sweep that may repair runs in serve)\n")
    return 2
  end
  local store = require "mrprov.store"
  if not store.is_open() then
    io.stderr:write("mrprov: reconcile: no state store at STATE_DB: no instance to probe\n")
    return 1
  end
  local rep = require("reconcile").dry_run()
  if opts.json then
    io.write(json.encode(rep), "\n")
    return 0
  end
  io.write(string.format("# drift sweep (dry run): %d instance(s) checked, %d skipped (a job of theirs waits), " ..
    "%d drifted, %d orphan(s), %d error(s), %.2f s\n", rep.instances_checked, rep.instances_skipped,
    rep.drifted_count, rep.orphans_count, rep.errors_count, rep.duration_seconds))
  for _, d in ipairs(rep.drifted) do
    io.write(d.subscription_id, " (", d.app_name, "):\n")
    for _, e in ipairs(d.resources) do
      io.write("  ", e.resource, "\n")
      for _, c in ipairs(e.commands) do
        io.write("    ", c, "\n")
      end
    end
  end
  for _, kind in ipairs({ "app", "postgres", "redis" }) do
    for _, name in ipairs(rep.orphans[kind] or {}) do
      io.write("orphan ", kind, " ", name, " (belongs to no instance; left alone)\n")
    end
  end
  for _, e in ipairs(rep.errors) do
    io.write("error ", e.subscription_id or "", e.subscription_id and ": " or "", e.error, "\n")
  end
  return 0
end

-- `mrprov rollout --list | --show ID | --create JSON|@FILE | --pause ID |
-- --resume ID | --abort ID | --rollback ID [--json]`: the API's rollout
-- requests (lua/rollout.lua) on the state store of the running service,
-- whose workers pick the driver job up within a second.
local ROLLOUT_ACTIONS = { "pause", "resume", "abort", "rollback" }

local function rollout_line(r)
  local parts = {}
  for k, n in pairs(r.counts or {}) do
    if n > 0 then
      parts[#parts + 1] = k .. " " .. n
    end
  end
  table.sort(parts)
  return string.format("%s %-12s %s wave %d, failures %d: %s%s", r.id, r.state, r.image, r.wave, r.failures,
    table.concat(parts, ", "), r.reason ~= json.null and r.reason and ("; " .. r.reason) or "")
end

function M.rollout(opts)
  local store = require "mrprov.store"
  local rollout = require "rollout"
  if not store.is_open() then
    io.stderr:write("mrprov: rollout: no state store at STATE_DB\n")
    return 1
  end
  local given = 0
  for _, k in ipairs({ "list", "show", "create", "pause", "resume", "abort", "rollback" }) do
    if opts[k] then given = given + 1 end
  end
  if given ~= 1 then
    io.stderr:write("mrprov: rollout: give exactly one of --list, --show, --create, --pause, --resume, --abort, " ..
      "--rollback\n")
    return 2
  end
  local function show(id)
    local v = rollout.view(id)
    if not v then
      io.stderr:write("mrprov: rollout: no such rollout\n")
      return 1
    end
    if opts.json then
      io.write(json.encode(v), "\n")
      return 0
    end
    io.write(rollout_line(v), "\n")
    for _, e in ipairs(v.instances) do
      io.write(string.format("  wave %d %-14s %s%s\n", e.wave, e.state, e.subscription_id,
        e.error ~= json.null and ("  (" .. e.error .. ")") or ""))
    end
    return 0
  end
  if opts.list then
    local list = rollout.list()
    if opts.json then
      io.write(json.encode({ rollouts = list }), "\n")
    else
      for _, r in ipairs(list) do
        io.write(rollout_line(r), "\n")
      end
    end
    return 0
  end
  if opts.show then
    return show(opts.show)
  end
  if opts.create then
    local text = opts.create
    if text:sub(1, 1) == "@" then
      local f, ferr = io.open(text:sub(2), "r")
      if not f then
        io.stderr:write("mrprov: rollout: --create: ", tostring(ferr), "\n")
        return 2
      end
      text = f:read("a")
      f:close()
    end
    local t, jerr = json.decode(text)
    if type(t) ~= "table" then
      io.stderr:write("mrprov: rollout: --create: malformed JSON: ", tostring(jerr), "\n")
      return 2
    end
    local r, err = rollout.validate(t, generation.current())
    if not r then
      io.stderr:write("mrprov: rollout: --create: ", err.message, "\n")
      return 2
    end
    local out = rollout.create(r)
    if not out.id then
      io.stderr:write("mrprov: rollout: ", out.err.message, "\n")
      return 1
    end
    return show(out.id)
  end
  for _, a in ipairs(ROLLOUT_ACTIONS) do
    if opts[a] then
      local out = rollout.act(opts[a], a)
      if not out.state then
        io.stderr:write("mrprov: rollout: ", out.err.message, "\n")
        return 1
      end
      return show(opts[a])
    end
  end
  return 2
end

local function fmt_limit(v, unit)
  if v == nil or v == json.null then
    return "unlimited"
  end
  return tostring(v) .. (unit or "")
end

function M.tiers(opts)
  local cfg = generation.current()
  local list = json.array()
  for _, name in ipairs(tiers.names(cfg.tiers)) do
    list[#list + 1] = tiers.describe(cfg.tiers[name])
  end
  if opts.json then
    io.write(json.encode(list), "\n")
    return 0
  end
  for _, t in ipairs(list) do
    local l = t.limits
    io.write(t.name, " (", t.display_name, ")\n")
    io.write("  limits: memory ", fmt_limit(l.memory_mb, " MB"), ", cpu ", fmt_limit(l.cpu), ", storage ",
      fmt_limit(l.storage_gb, " GB"), ", agents ", fmt_limit(l.agents), ", messages/day ",
      fmt_limit(l.messages_per_day), "\n")
    local agents = {}
    for _, a in ipairs(t.agents) do
      agents[#agents + 1] = a.name
    end
    io.write("  agents: ", table.concat(agents, ", "), "\n")
    io.write("  tools:  ", table.concat(t.tools, ", "), "\n")
    local models = {}
    for name, m in pairs(t.models) do
      models[#models + 1] = name .. "=" .. m.provider .. "/" .. m.id
    end
    table.sort(models)
    io.write("  models: ", table.concat(models, ", "), "\n")
    local flags = {}
    for k, v in pairs(t.flags) do
      if v then
        flags[#flags + 1] = k
      end
    end
    table.sort(flags)
    io.write("  flags:  ", #flags > 0 and table.concat(flags, ", ") or "-", "\n")
  end
  return 0
end

return M
