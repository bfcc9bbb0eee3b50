-- The executor: runs commands on Dokku and turns Dokku's answers into
-- outcomes. Probes run in one wave over the pool (current_of); planned
-- commands run in waves (run_wave); every output and error is redacted
-- (job_secrets: the values masked besides the credentials redact finds by
-- form) before it is clipped. Knows nothing of the store: the journal and
-- the converge loop record what it returns.
local command = require "command"
local crypto = require "mrprov.crypto"
local dokku = require "mrprov.dokku"
local engine = require "engine"
local generation = require "generation"
local sys = require "mrprov.sys"

local M = {}

M.OUTPUT_LIMIT = 4096
-- Dokku's answers to creating what already exists (apps:create,
-- postgres/redis:create, *:link, storage:mount).
M.RACED = { "Name is already taken", " already exists", "Already linked as ", "Mount path already exists" }

local CANCELLED = "cancelled: shutting down" -- a command given up at the shutdown bound

-- Seconds per command: the DOKKU_COMMAND_TIMEOUT setting. Its default is
-- C's (config.h CONFIG_DOKKU_COMMAND_TIMEOUT_S) and always reaches the
-- settings through sys.config(): no second copy here.
function M.timeout()
  return generation.current().settings.command_timeout
end

function M.admin_password(app_name)
  return crypto.derive("admin-password:" .. app_name)
end

-- The further secrets a profile may hand an instance (desired.build's
-- ctx.secrets), all derived from PROVISIONER_SECRET per instance and never
-- stored (the same instance always gets the same values), plus the
-- provider keys and the instances' Supabase anon key from the settings.
-- Each is base64url of 32 bytes (crypto.derive): MindRoom accepts that as
-- its credentials key (mindroom credentials.py
-- _decode_credentials_encryption_key: urlsafe base64, padding optional,
-- exactly 32 bytes).
function M.instance_secrets(app_name, settings)
  local out = {
    matrix_registration_secret = crypto.derive("matrix-registration:" .. app_name),
    api_key = crypto.derive("mindroom-api-key:" .. app_name),
    credentials_encryption_key = crypto.derive("credentials-encryption-key:" .. app_name),
  }
  local names = {}
  for _, k in ipairs(settings and settings.provider_keys or {}) do names[#names + 1] = k end
  if settings and settings.supabase_auth then names[#names + 1] = "SUPABASE_ANON_KEY" end
  if #names > 0 then
    for _, k in ipairs(names) do out[k] = sys.instance_secret(k) end
  end
  return out
end

local function clip(s)
  if #s > M.OUTPUT_LIMIT then
    return s:sub(1, M.OUTPUT_LIMIT) .. "\n[... " .. (#s - M.OUTPUT_LIMIT) .. " more bytes]"
  end
  return s
end

-- The most waves of probe commands current_of sends (a probe whose
-- commands go on beyond is run again from its start when asked).
M.PROBE_WAVES = 4

-- A probe that cannot see everything is completed from what the journal
-- recorded for the resource (`applied`: key → model; mod.recall, see
-- resources/image.lua). Also the drift sweep's, for what it read in bulk.
function M.recalled(r, cur, applied)
  local mod = engine.modules[r.type]
  if mod.recall then
    return mod.recall(cur, applied[r.key])
  end
  return cur
end

-- How the current state of a resource is learnt: from the server (probes,
-- read-only) or, in dry-run, from what earlier jobs recorded. host: the
-- instance's Dokku host (nil: the implicit one). `probes` (optional, key →
-- function(run, spec)) replaces a resource's M.probe (the drift sweep's,
-- completed from the all-apps reports: reconcile_bulk).
function M.current_of(applied, list, host, probes)
  probes = probes or {}
  if dokku.mode() == "dry-run" then
    return function(r)
      return applied[r.key]
    end
  end
  local timeout = math.min(60, M.timeout())
  -- Every probe runs one read-only command: run them all at once (one wave
  -- over the pool) instead of one after another. Each probe runs in a
  -- coroutine that yields its argv; the answers are fed back in.
  local cache = {}
  if list then
    local pending = {}
    for _, r in ipairs(list) do
      local mod = engine.modules[r.type]
      local fn = probes[r.key] or (mod and mod.probe)
      if fn then
        local co = coroutine.create(function()
          return fn(function(argv) return coroutine.yield(argv) end, r.spec)
        end)
        local ok, argv = coroutine.resume(co)
        if ok and coroutine.status(co) == "suspended" then
          pending[#pending + 1] = { r = r, co = co, argv = argv }
        end
      end
    end
    -- A probe that reads a second command once it has the first answer
    -- (storage: the deploy source once mounted; image: a context's digest)
    -- goes on in the next wave, instead of being run again from its first
    -- command when asked (bounded: a probe sends a command or two).
    local wave = 0
    while #pending > 0 and wave < M.PROBE_WAVES do
      wave = wave + 1
      local again = {}
      -- Two probes that read the same thing in one wave (the environment:
      -- config and a build context's digest, config:export) share one
      -- command and its answer: probes only read.
      local calls, slot, of = {}, {}, {}
      for i, p in ipairs(pending) do
        local full = command.full_argv({ argv = p.argv })
        local id = table.concat(full, "\0")
        if not slot[id] then
          calls[#calls + 1] = { argv = full, timeout = timeout, host = host }
          slot[id] = #calls
        end
        of[i] = slot[id]
      end
      local answers = {}
      for first = 1, #calls, 64 do
        local part = {}
        for i = first, math.min(#calls, first + 63) do
          part[#part + 1] = calls[i]
        end
        for k, res in ipairs(dokku.run_many(part)) do
          answers[first + k - 1] = res
        end
      end
      for i, p in ipairs(pending) do
        local res = answers[of[i]]
        local answer, err = res.ok, res.error
        if not answer then
          err = table.concat(p.argv, " ") .. ": " .. tostring(err)
        end
        local ok, cur, perr = coroutine.resume(p.co, answer, err)
        if ok and coroutine.status(p.co) == "dead" then
          cache[p.r.key] = { cur = cur, err = (cur == nil and perr) or nil }
        elseif ok and coroutine.status(p.co) == "suspended" and type(cur) == "table" then
          again[#again + 1] = { r = p.r, co = p.co, argv = cur }
        end
      end
      pending = again
    end
  end
  local function run(argv)
    local full = command.full_argv({ argv = argv })
    local res, err = dokku.run(full, { timeout = timeout, host = host })
    if not res then
      return nil, table.concat(argv, " ") .. ": " .. err
    end
    return res
  end
  local function recalled(r, cur)
    return M.recalled(r, cur, applied)
  end
  return function(r)
    local hit = cache[r.key]
    if hit then
      if hit.err then
        return nil, hit.err
      end
      return recalled(r, hit.cur)
    end
    local fn = probes[r.key] or engine.modules[r.type].probe
    local cur, err = fn(run, r.spec)
    if cur == nil and err then
      return nil, err
    end
    return recalled(r, cur)
  end
end

-- The outcome of one command: {exit, output, duration_ms, error, transient, bytes}.
local function outcome(c, res, err, transient, redact)
  local r = { transient = transient }
  if res then
    r.exit = res.exit
    r.bytes = res.bytes
    r.duration_ms = math.floor(res.duration * 1000 + 0.5)
    local out = c.stream and "" or (res.stdout or "")
    -- redacted before it is clipped: a cut could leave half a password
    -- or a URL without its `@` that the redactor would no longer know
    r.output = clip(redact(out .. (res.stderr ~= "" and ((out ~= "" and "\n" or "") .. res.stderr) or "")))
    -- (a dry run sends nothing, so nothing answers)
    if res.exit == 0 and c.expect and dokku.mode() ~= "dry-run"
        and not (res.stdout or ""):find(c.expect.text, 1, true) then
      r.error = redact(c.display .. ": " .. c.expect.otherwise)
    elseif res.exit ~= 0 and not (c.ok_exits and c.ok_exits[res.exit]) then
      local msg = clip(redact(res.stderr ~= "" and res.stderr or (c.stream and "" or res.stdout)))
      r.error = string.format("%s exited %d: %s", c.display, res.exit, (msg:gsub("%s+$", "")))
      -- Dokku's per-app deploy lock is held by another build: worth a
      -- retry. So is a create or link that finds its object already there:
      -- the same command sent before a crash may still have been running
      -- on the server when the resumed job probed; the next round probes
      -- again and goes on (a conflict that persists fails after the last).
      r.transient = res.stderr:find("deploy lock in place", 1, true) ~= nil
      for _, text in ipairs(M.RACED) do
        r.transient = r.transient or res.stderr:find(text, 1, true) ~= nil
      end
    end
  else
    r.error = redact(c.display .. ": " .. tostring(err))
    r.cancelled = err == CANCELLED
  end
  return r
end

-- Runs a wave of commands at once (each on its own channel) on Dokku host
-- `host` (nil: the implicit one) and returns their outcomes in order.
local function run_wave(cmds, redact, host)
  local calls = {}
  for i, c in ipairs(cmds) do
    calls[i] = { argv = command.full_argv(c), timeout = M.timeout(), stdout_file = c.stdout_file, stdin = c.stdin,
                 stdin_file = c.stdin_file, host = host }
  end
  local results, raw = {}, {}
  if #calls == 1 then
    local res, err, transient = dokku.run(calls[1].argv, calls[1])
    raw[1] = res
    results[1] = outcome(cmds[1], res, err, transient, redact)
  else
    for i, r in ipairs(dokku.run_many(calls)) do
      raw[i] = r.ok
      results[i] = outcome(cmds[i], r.ok, r.error, r.transient, redact)
    end
  end
  for i, c in ipairs(cmds) do
    local fb = c.fallback
    if results[i].error and fb and raw[i] and (raw[i].stderr or ""):find(fb.when, 1, true) then
      local alt = command.new(c.resource, c.target, fb.argv)
      local res, err, transient = dokku.run(command.full_argv(alt), { timeout = M.timeout(), host = host })
      local r = outcome(alt, res, err, transient, redact)
      r.output = (results[i].output or "") .. "\n-> " .. alt.display .. "\n" .. (r.output or "")
      results[i] = r
      -- the resource's model tells (see resources/image.lua): what Dokku
      -- reports afterwards does not show what the fallback deployed
      c.fell_back = not r.error
    end
  end
  return results
end

-- Runs the steps: in waves, each wave holding the next command of every

-- M.SECRET_MIN bytes: a shorter environment value ("1", "true") would mask
-- every such word of every output; the admin password is always masked.
M.SECRET_MIN = 8

-- The values masked in every output, error and log line of a job (besides
-- the credentials redact.credentials finds by form): the admin password,
-- the customer's config_updates, a rollout's env and the environment of apps a hook added,
-- each raw and base64-encoded. Dokku echoes values back in some errors
-- (v0.38: an ENV file it cannot read is quoted in every config command's
-- error), and any of those values may be a customer's secret.
function M.job_secrets(inst, state)
  local password = M.admin_password(inst.app_name)
  local list = { password, crypto.base64(password) }
  local function add(v)
    if type(v) == "string" and #v >= M.SECRET_MIN then
      list[#list + 1] = v
      list[#list + 1] = crypto.base64(v)
    end
  end
  for _, v in pairs(inst.spec and inst.spec.config_updates or {}) do
    add(v)
  end
  -- and the environment a rollout set (lua/rollout.lua)
  for _, v in pairs(inst.spec and type(inst.spec.env) == "table" and inst.spec.env or {}) do
    add(v)
  end
  for _, a in ipairs(state and state.apps or {}) do
    if a.role == "hook" then
      for _, v in pairs(a.env or {}) do
        add(v)
      end
    end
    -- every value the layout marked secret (derived keys, provider keys)
    for k in pairs(a.secret_keys or {}) do
      add(a.env and a.env[k])
    end
  end
  return list
end

M.clip = clip
M.outcome = outcome
M.run_wave = run_wave

return M
