-- The plan of every shipped tier × profile (mindroom, split) × Matrix
-- variant, checked against MindRoom's runtime contract
-- (docs/reference/mindroom.md §§1-5): variable names, mount paths,
-- ports, domains, pinned image, and secrets redacted in every shown command.
local fakes = require "fakes"
local helper = require "helper"
local desired = require "desired"
local engine = require "engine"
local tiers = require "tiers"

local A = "mr-sub1-abcd1234"
local D = A .. ".mindroom.chat"

local SECRETS = {
  matrix_registration_secret = "regsecret-0123456789abcdef", api_key = "apikey-0123456789abcdef",
  credentials_encryption_key = "credkey-0123456789abcdefghijklmnopqrstuvwxyz0",
  OPENROUTER_API_KEY = "sk-or-v1-provider-secret-1", OPENAI_API_KEY = "sk-openai-provider-secret-2",
  SUPABASE_ANON_KEY = "anon-key-for-instances-3",
}
local ADMIN = "admin-password-secret-4"

-- Every variable the MindRoom app may carry: MindRoom's own names (reference §2).
local MINDROOM_NAMES = {
  MINDROOM_STORAGE_PATH = true, HOME = true, MINDROOM_CONFIG_PATH = true, MINDROOM_CONFIG_TEMPLATE = true,
  MINDROOM_PUBLIC_URL = true, MATRIX_HOMESERVER = true, MATRIX_SERVER_NAME = true,
  MATRIX_REGISTRATION_SHARED_SECRET = true, MATRIX_REGISTRATION_TOKEN = true,
  MINDROOM_MATRIX_HOMESERVER_STARTUP_TIMEOUT_SECONDS = true, MINDROOM_DESKTOP_MATRIX_HOMESERVER = true,
  MINDROOM_CREDENTIALS_ENCRYPTION_KEY = true, MINDROOM_API_KEY = true, SUPABASE_URL = true,
  SUPABASE_ANON_KEY = true, ACCOUNT_ID = true, CUSTOMER_ID = true, LOG_LEVEL = true,
  OPENROUTER_API_KEY = true, OPENAI_API_KEY = true, ANTHROPIC_API_KEY = true, GOOGLE_API_KEY = true,
  DEEPSEEK_API_KEY = true,
}
local REDACTED_KEYS = {
  MATRIX_REGISTRATION_SHARED_SECRET = true, MATRIX_REGISTRATION_TOKEN = true, MINDROOM_API_KEY = true,
  MINDROOM_CREDENTIALS_ENCRYPTION_KEY = true, OPENROUTER_API_KEY = true, OPENAI_API_KEY = true,
  SUPABASE_ANON_KEY = true, SYNAPSE_REGISTRATION_SHARED_SECRET = true, TUWUNEL_REGISTRATION_TOKEN = true,
}

local function settings_with(extra)
  local s = {}
  for k, v in pairs(helper.settings) do s[k] = v end
  s.provider_keys = { "OPENROUTER_API_KEY", "OPENAI_API_KEY" }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

local function tiers_for(profile)
  return assert(tiers.load_dir("tiers", helper.realfs(),
    { by_name = helper.shipped_profiles(), default = profile, dir = "profiles" }))
end

local function build(profile, tier_name, matrix, opts)
  opts = opts or {}
  local secrets = {}
  for k, v in pairs(SECRETS) do secrets[k] = v end
  local inst = { app_name = A, subscription_id = "sub_1", tier = tier_name, account_id = opts.account_id,
                 enable_matrix = matrix ~= nil or nil, matrix_type = matrix }
  return assert(desired.build({ instance = inst, tier = tiers_for(profile)[tier_name],
                                settings = opts.settings or settings_with(), admin_password = ADMIN,
                                secrets = secrets }))
end

local function plan_lines(state)
  return engine.lines(assert(engine.plan(engine.resources(state), function() return nil end)))
end

local function app_of(state, name)
  for _, a in ipairs(state.apps) do
    if a.name == name then return a end
  end
end

local function find(lines, text)
  for _, l in ipairs(lines) do
    if l:find(text, 1, true) then return l end
  end
end

-- The KEY=[...] words of the config:set lines of one app, in the plan.
local function shown_env(lines, app)
  local out = {}
  for _, l in ipairs(lines) do
    if l:find("config:set --encoded --no-restart " .. app .. " ", 1, true) then
      for k, v in l:gmatch("([A-Z][A-Z0-9_]*)=(%[%a+%])") do out[k] = v end
    end
  end
  return out
end

local function no_secret_in(lines)
  local all = table.concat(lines, "\n")
  local list = { ADMIN }
  for _, v in pairs(SECRETS) do list[#list + 1] = v end
  for _, v in ipairs(list) do
    assert.is_nil(all:find(v, 1, true), "a secret value is shown")
    assert.is_nil(all:find(fakes.base64(v), 1, true), "a secret value's encoding is shown")
  end
end

local TIERS = { "free", "starter", "professional", "enterprise" }

describe("the mindroom profile's plan follows MindRoom's contract", function()
  assert(fakes)
  for _, tier_name in ipairs(TIERS) do
    for _, matrix in ipairs({ "none", "synapse", "tuwunel" }) do
      it(tier_name .. " with Matrix " .. matrix, function()
        local st = build("mindroom", tier_name, matrix ~= "none" and matrix or nil)
        local lines = plan_lines(st)
        local kind = matrix == "tuwunel" and "tuwunel" or "synapse" -- none: MindRoom needs one; Synapse

        -- two apps: MindRoom (the main app) and its homeserver; nothing else
        local made = {}
        for _, l in ipairs(lines) do
          local a = l:match("apps:create (%S+)")
          if a then made[#made + 1] = a end
          assert.is_nil(l:find("postgres:", 1, true), l)
          assert.is_nil(l:find("redis:", 1, true), l)
        end
        table.sort(made)
        assert.are.same({ A, A .. "-matrix" }, made)

        -- the image: MindRoom's, a release tag
        local main = app_of(st, A)
        assert.are.equal("ghcr.io/mindroom-ai/mindroom:v2026.8.105", main.image)
        for _, a in ipairs(st.apps) do
          if a.image then
            assert.is_truthy(a.image:match(":[%w][%w._-]*$"), a.image .. " has no tag")
            assert.is_nil(a.image:match(":latest$"), a.image)
          end
        end
        assert.is_nil(table.concat(lines, "\n"):find(":latest", 1, true))

        -- MindRoom's own variable names, and only those
        local env = shown_env(lines, A)
        for k, shown in pairs(env) do
          assert.is_true(MINDROOM_NAMES[k] == true, "not a MindRoom variable: " .. k)
          assert.are.equal(REDACTED_KEYS[k] and "[REDACTED]" or "[set]", shown, k)
        end
        for k in pairs(main.env) do
          assert.is_true(MINDROOM_NAMES[k] == true, "not a MindRoom variable: " .. k)
        end
        assert.is_nil(main.env.MINDROOM_CONFIG_YAML)
        assert.is_nil(main.env.MINDROOM_INSTANCE_ID)
        assert.is_nil(main.env.MINDROOM_ADMIN_PASSWORD)
        local want = {
          MINDROOM_STORAGE_PATH = "/mindroom_data", HOME = "/mindroom_data",
          MINDROOM_CONFIG_PATH = "/mindroom_data/config/config.yaml",
          MINDROOM_PUBLIC_URL = "https://" .. D, MATRIX_HOMESERVER = "https://matrix." .. D,
          MATRIX_SERVER_NAME = D, CUSTOMER_ID = A, LOG_LEVEL = "INFO",
          MINDROOM_API_KEY = SECRETS.api_key,
          MINDROOM_CREDENTIALS_ENCRYPTION_KEY = SECRETS.credentials_encryption_key,
          OPENROUTER_API_KEY = SECRETS.OPENROUTER_API_KEY, OPENAI_API_KEY = SECRETS.OPENAI_API_KEY,
        }
        for k, v in pairs(want) do
          assert.are.equal(v, main.env[k], k)
          assert.are.equal(REDACTED_KEYS[k] and "[REDACTED]" or "[set]", env[k], k)
        end
        if kind == "synapse" then
          assert.are.equal(SECRETS.matrix_registration_secret, main.env.MATRIX_REGISTRATION_SHARED_SECRET)
          assert.is_nil(main.env.MATRIX_REGISTRATION_TOKEN)
        else
          assert.are.equal(SECRETS.matrix_registration_secret, main.env.MATRIX_REGISTRATION_TOKEN)
          assert.is_nil(main.env.MATRIX_REGISTRATION_SHARED_SECRET)
        end
        assert.is_nil(main.env.SUPABASE_URL)
        assert.is_truthy(st.secrets_used.api_key)

        -- storage: /mindroom_data owned by uid 1000 (heroku), the homeserver's own path
        assert.is_truthy(find(lines, "storage:ensure-directory --chown heroku " .. A))
        assert.is_truthy(find(lines, "storage:mount " .. A .. " /srv/data/" .. A .. ":/mindroom_data"))
        local mpath = kind == "synapse" and "/data" or "/var/lib/tuwunel"
        assert.is_truthy(find(lines, "storage:mount " .. A .. "-matrix /srv/data/" .. A .. "-matrix:" .. mpath))

        -- ports and domains
        assert.is_truthy(find(lines, "ports:set " .. A .. " http:80:8765"))
        assert.is_truthy(find(lines, "ports:set " .. A .. "-matrix http:80:8008"))
        assert.is_truthy(find(lines, "domains:set " .. A .. " " .. D .. " api." .. D))
        assert.is_truthy(find(lines, "domains:set " .. A .. "-matrix matrix." .. D))
        assert.are.equal("https://matrix." .. D, st.urls.matrix)

        -- the config file and readiness for the engine (delivery, readiness)
        assert.are.same({ "/app/.venv/bin/mindroom", "run" }, main.seed_config.command)
        assert.are.equal("/mindroom_data/config/config.yaml", main.seed_config.path)
        assert.is_truthy(main.seed_config.content:find("agents", 1, true))
        assert.are.same({ path = "/api/ready" }, main.health)
        assert.is_true(main.exclusive_storage)

        -- the homeserver
        local hs = app_of(st, A .. "-matrix")
        assert.are.equal(kind, hs.matrix_type)
        assert.is_true(hs.exclusive_storage)
        local hs_env = shown_env(lines, A .. "-matrix")
        if kind == "synapse" then
          assert.are.equal("matrixdotorg/synapse:1", hs.image)
          assert.are.equal(D, hs.env.SYNAPSE_SERVER_NAME)
          assert.are.equal("[REDACTED]", hs_env.SYNAPSE_REGISTRATION_SHARED_SECRET)
          assert.are.equal("/data/homeserver.yaml", hs.seed_config.path)
          assert.is_truthy(hs.seed_config.content:find('server_name: "' .. D .. '"', 1, true))
          assert.is_nil(hs.seed_config.content:find(SECRETS.matrix_registration_secret, 1, true))
          -- its image ENTRYPOINT (/start.py) is cleared: the command ends in exec /start.py
          assert.are.same({}, hs.seed_config.entrypoint)
        else
          assert.are.equal("ghcr.io/tulir/tuwunel:1", hs.image)
          assert.are.equal(D, hs.env.TUWUNEL_SERVER_NAME)
          assert.are.equal("[REDACTED]", hs_env.TUWUNEL_REGISTRATION_TOKEN)
        end

        no_secret_in(lines)
      end)
    end
  end

  it("uses Supabase auth instead of the API key when configured and the account is known", function()
    local s = settings_with({ supabase_auth = true, supabase_url = "https://proj.supabase.co" })
    local st = build("mindroom", "starter", nil, { settings = s, account_id = "acct-1" })
    local main = app_of(st, A)
    assert.are.equal("https://proj.supabase.co", main.env.SUPABASE_URL)
    assert.are.equal(SECRETS.SUPABASE_ANON_KEY, main.env.SUPABASE_ANON_KEY)
    assert.are.equal("acct-1", main.env.ACCOUNT_ID)
    assert.is_nil(main.env.MINDROOM_API_KEY)
    assert.is_nil(st.secrets_used.api_key)
    local lines = plan_lines(st)
    assert.are.equal("[REDACTED]", shown_env(lines, A).SUPABASE_ANON_KEY)
    no_secret_in(lines)
    -- without an account there is no owner to check: the API key instead
    local st2 = build("mindroom", "starter", nil, { settings = s })
    assert.are.equal(SECRETS.api_key, app_of(st2, A).env.MINDROOM_API_KEY)
    assert.is_nil(app_of(st2, A).env.SUPABASE_URL)
  end)

  it("hands only the provider keys that are set", function()
    local st = build("mindroom", "free", nil, { settings = settings_with({ provider_keys = {} }) })
    for _, k in ipairs({ "OPENROUTER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY" }) do
      assert.is_nil(app_of(st, A).env[k], k)
    end
  end)
end)

describe("the split profile keeps today's layout", function()
  for _, tier_name in ipairs(TIERS) do
    for _, matrix in ipairs({ "none", "synapse", "tuwunel" }) do
      it(tier_name .. " with Matrix " .. matrix, function()
        local st = build("split", tier_name, matrix ~= "none" and matrix or nil)
        local lines = plan_lines(st)
        for _, suffix in ipairs({ "-backend", "-frontend" }) do
          assert.is_truthy(find(lines, "apps:create " .. A .. suffix), suffix)
        end
        assert.is_truthy(find(lines, "postgres:link " .. A .. "-db " .. A .. "-backend"))
        assert.is_truthy(find(lines, "redis:link " .. A .. "-redis " .. A .. "-backend"))
        assert.is_truthy(find(lines, "storage:mount " .. A .. "-backend /srv/data/" .. A .. ":/app/data"))
        assert.are.equal("[REDACTED]", shown_env(lines, A .. "-backend").MINDROOM_ADMIN_PASSWORD)
        assert.are.equal(matrix ~= "none", find(lines, "apps:create " .. A .. "-matrix") ~= nil)
        assert.is_nil(app_of(st, A).image) -- the main app holds only the name
        no_secret_in(lines)
      end)
    end
  end
end)
