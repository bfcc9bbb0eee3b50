-- Resource `config`: an app's environment. Every value crosses base64-encoded
-- (`config:set --encoded`), only changed keys are sent, never a restart here.
-- Current state is kept as SHA-256 digests of values, so no secret is ever
-- stored or compared in the clear outside the command itself.
local command = require "command"
local probe = require "resources.probe"
local crypto = require "mrprov.crypto"
local json = require "json"

local M = { type = "config" }

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
-- other Matrix server after a switch). Sorted.
local function stale_keys(spec, have)
  local keys = {}
  for k in pairs(have) do
    if spec.env[k] == nil then
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

function M.diff(spec, current)
  local have = current and current.env or {}
  local want = digests(spec.env)
  local keys = {}
  for k, d in pairs(want) do
    if have[k] ~= d then
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
  local argv = { "config:set", "--encoded", "--no-restart", spec.app }
  local shown = { "config:set", "--encoded", "--no-restart", spec.app }
  for _, k in ipairs(keys) do
    argv[#argv + 1] = k .. "=" .. crypto.base64(spec.env[k])
    shown[#shown + 1] = k .. "=" .. ((spec.secret_keys or {})[k] and "[REDACTED]" or crypto.base64(spec.env[k]))
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
