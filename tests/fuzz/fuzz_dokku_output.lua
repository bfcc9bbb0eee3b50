-- Driver of fuzz_dokku_output: a Dokku server's answer through every
-- resource probe, then diff and model on what the probe read. The first byte
-- picks the exit code (0, 20 = no such app, 1); the rest is stdout and
-- stderr. A probe answers a state, nothing (nil or false: not there yet) or
-- nil and a message, and never raises; nothing read from the server ends up
-- in a planned argv.
local command = require "command"

local specs = {
  app = { name = "mr-abc-12345678" },
  service = { kind = "postgres", name = "mr-abc-12345678-db" },
  link = { kind = "postgres", service = "mr-abc-12345678-db", app = "mr-abc-12345678" },
  config = { app = "mr-abc-12345678", env = { A = "1", SECRET = "hunter2", B = "x y" },
             secret_keys = { SECRET = true } },
  domains = { app = "mr-abc-12345678", domains = { "a.example.com", "b.example.com" } },
  image = { app = "mr-abc-12345678", image = "mindroom/backend:1" },
  letsencrypt = { app = "mr-abc-12345678", email = "ops@example.com" },
  limits = { app = "mr-abc-12345678", memory_mb = 512, cpu = 0.5 },
  storage = { app = "mr-abc-12345678", dir = "mr-x", host_path = "/var/lib/dokku/data/storage/mr-x",
              container_path = "/app/data", chown = "false" },
}
local names = {}
for name in pairs(specs) do names[#names + 1] = name end
table.sort(names)
local modules = {}
for _, name in ipairs(names) do modules[name] = require("resources." .. name) end

local EXITS = { [0] = 0, 0, 20, 1 }

local function check(cond, what)
  if not cond then
    error("invariant: " .. what, 2)
  end
end

-- Planned commands: argv tokens are safe; config:set values are base64 of the spec.
local function check_commands(name, cmds)
  check(type(cmds) == "table", name .. ": diff returns a list")
  for _, c in ipairs(cmds) do
    check(type(c.argv) == "table" and #c.argv > 0, name .. ": a command has an argv")
    for _, tok in ipairs(command.full_argv(c)) do
      check(type(tok) == "string" and tok ~= "" and tok:match("^[A-Za-z0-9._:/=+@,-]+$"),
        name .. ": argv token " .. string.format("%q", tostring(tok)))
    end
  end
end

local function run(text)
  local exit = EXITS[(text:byte(1) or 0) % 4]
  local out = text:sub(2)
  local calls = 0
  local function dokku(argv)
    calls = calls + 1
    check(type(argv) == "table" and #argv > 0, "a probe runs an argv")
    return { exit = exit, stdout = out, stderr = out }
  end
  for _, name in ipairs(names) do
    local mod, spec = modules[name], specs[name]
    -- A state; nil, message (failed); nil or false alone (nothing there yet).
    local before = calls
    local cur, err = mod.probe(dokku, spec)
    -- one read, or two where the first says a second is needed (storage:
    -- the app's deploy source once the mount is there)
    check(calls - before >= 1 and calls - before <= 2, name .. ": a probe sends one or two commands")
    check(err == nil or (cur == nil and type(err) == "string"), name .. ": a failed probe says why")
    check(cur == nil or cur == false or type(cur) == "table", name .. ": a probe answers a state")
    if err == nil then
      local state = cur or nil
      check_commands(name, mod.diff(spec, state))
      local model = mod.model(spec, state)
      check(model == nil or type(model) == "table", name .. ": model is a table")
    end
  end
end

return run
