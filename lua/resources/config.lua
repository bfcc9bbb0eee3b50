-- Resource `config`: an app's environment. Every value crosses base64-encoded
-- (`config:set --encoded`), only changed keys are sent, never a restart here.
-- Current state is kept as SHA-256 digests of values, so no secret is ever
-- stored or compared in the clear outside the command itself; step logs and
-- plans show `KEY=[set]` (`KEY=[REDACTED]` for mrprov's own secrets), never
-- a value or its encoding.
local command = require "command"
local contract = require "resources.lib.contract"
local probe = require "resources.lib.probe"
local reports = require "resources.lib.reports"
local seed = require "resources.lib.seed"
local crypto = require "mrprov.crypto"
local json = require "json"
local validate = require "validate"

local M = { type = "config", phase = contract.PHASE.settings, order = 10, from = "apps" }

-- An app with an environment.
function M.specs(app)
  if app.absent or not app.env then
    return {}
  end
  -- kept: keys this resource never unsets — those whose value only the job
  -- that set them knows (app.env_kept), and the digest resources/image.lua
  -- records on the app (its own key, whatever the owned prefixes)
  local kept = { [seed.DIGEST_KEY] = true }
  for k in pairs(app.env_kept or {}) do
    kept[k] = true
  end
  return { { key = "config:" .. app.name, spec = { app = app.name, env = app.env, secret_keys = app.secret_keys,
                                                   owned_prefixes = app.env_owned_prefixes, kept_keys = kept,
                                                   owned_keys = app.env_owned_keys } } }
end

function M.locks(spec)
  return { spec.app }
end

M.creates = false

-- Bytes of one `dokku --quiet config:set …` command line (the transport
-- refuses longer ones, src/dokku/transport.c TRANSPORT_MAX_COMMAND). Over
-- SSH the line is one exec request, one SSH packet: libssh2 1.10 refuses a
-- packet of 35000 - 256 bytes or more (transport.c _libssh2_transport_send,
-- MAX_SSH_PACKET_LEN), whatever the server allows; on the server the line
-- becomes SSH_ORIGINAL_COMMAND, which the kernel caps at 128 KiB
-- (MAX_ARG_STRLEN, "Argument list too long"). A larger change is split into
-- several `config:set --no-restart` commands of whole KEY=value words (one
-- value of 16 KiB is 21.8 KB in base64); the engine restarts the app once,
-- after the last.
M.MAX_COMMAND = 32 * 1024

local function digests(env)
  local out = {}
  for k, v in pairs(env) do
    out[k] = crypto.sha256_hex(v)
  end
  return out
end

function M.probe(run, spec)
  local out, err = probe.read(run, { "config:export", "--format", "json", spec.app })
  if not out then
    return nil, err -- false: the app does not exist yet, nor does its environment
  end
  local env, jerr = json.decode(out)
  if type(env) ~= "table" then
    return nil, "config:export " .. spec.app .. ": unreadable output: " .. tostring(jerr)
  end
  -- An object of strings; anything else (null, a number, a nested value)
  -- would make digests() raise instead of failing the probe.
  for k, v in pairs(env) do
    if type(k) ~= "string" or type(v) ~= "string" then
      return nil, "config:export " .. spec.app .. ": unreadable output: expected an object of strings"
    end
  end
  return { env = digests(env) }
end

-- Keys the app has that spec.env no longer holds but mrprov owns: those
-- starting with one of spec.owned_prefixes (e.g. the environment of the
-- other Matrix server after a switch) and those spec.owned_keys names (the
-- keys a rollout set, lua/plan.lua), except spec.kept_keys (see M.specs): values set
-- once and never known again (the instance's own OpenRouter key, whose
-- value mrprov does not store, lua/model_key.lua), left as they are when
-- spec.env does not hold them. Sorted.
local function stale_keys(spec, have)
  local keys = {}
  local kept = spec.kept_keys or {}
  for k in pairs(have) do
    if spec.env[k] == nil and not kept[k] and (spec.owned_keys or {})[k] then
      keys[#keys + 1] = k
    elseif spec.env[k] == nil and not kept[k] then
      for _, p in ipairs(spec.owned_prefixes or {}) do
        if k:sub(1, #p) == p then
          keys[#keys + 1] = k
          break
        end
      end
    end
  end
  table.sort(keys)
  return keys
end

-- In sync when the app holds the value, or the form Dokku >= 0.38 stores
-- it in (godotenv v1.5 writes "007" as 7; validate.godotenv_stored): the
-- customer's values are refused at the API when they would change, but a
-- value of mrprov's own (an account id "007") must not be re-set and its
-- app restarted on every run.
local function in_sync(have, value, digest)
  if have == digest then
    return true
  end
  local stored = validate.godotenv_stored(value)
  return stored ~= nil and stored ~= value and have == crypto.sha256_hex(stored)
end

-- The sweep: an app the list does not name has no environment (false, as
-- config:export's exit 20). config:export has no all-apps form (core:plugins/
-- config: every subcommand takes one app or --global): an app is probed.
M.bulk = reports.absent_only()

function M.diff(spec, current)
  local have = current and current.env or {}
  local want = digests(spec.env)
  local keys = {}
  for k, d in pairs(want) do
    if not in_sync(have[k], spec.env[k], d) then
      keys[#keys + 1] = k
    end
  end
  local cmds = {}
  local stale = stale_keys(spec, have)
  if #stale > 0 then
    -- config:unset [--no-restart] (core:plugins/config/src/subcommands/subcommands.go)
    local argv = { "config:unset", "--no-restart", spec.app }
    for _, k in ipairs(stale) do
      argv[#argv + 1] = k
    end
    cmds[#cmds + 1] = command.new("config", spec.app, argv, nil, { restart = true })
  end
  if #keys == 0 then
    return cmds
  end
  table.sort(keys)
  local head = { "config:set", "--encoded", "--no-restart", spec.app }
  -- "dokku --quiet " and one space before each word
  local base = #("dokku " .. command.PREFIX)
  for _, w in ipairs(head) do
    base = base + 1 + #w
  end
  local argv, shown, size = nil, nil, 0
  for _, k in ipairs(keys) do
    local word = k .. "=" .. crypto.base64(spec.env[k])
    if argv and size + 1 + #word > M.MAX_COMMAND then
      cmds[#cmds + 1] = command.new("config", spec.app, argv, shown, { restart = true })
      argv = nil
    end
    if not argv then
      argv, shown, size = { table.unpack(head) }, { table.unpack(head) }, base
    end
    argv[#argv + 1] = word
    shown[#shown + 1] = k .. "=" .. ((spec.secret_keys or {})[k] and "[REDACTED]" or "[set]")
    size = size + 1 + #word
  end
  cmds[#cmds + 1] = command.new("config", spec.app, argv, shown, { restart = true })
  return cmds
end

function M.model(spec, current)
  -- Keys outside spec.env (set by links, by Dokku) are left as they were;
  -- owned keys spec.env no longer holds are gone.
  local env = {}
  for k, d in pairs(current and current.env or {}) do
    env[k] = d
  end
  for _, k in ipairs(stale_keys(spec, env)) do
    env[k] = nil
  end
  for k, d in pairs(digests(spec.env)) do
    env[k] = d
  end
  return { env = env }
end

function M.undo()
  return {} -- the app's removal takes its environment with it
end

return M
