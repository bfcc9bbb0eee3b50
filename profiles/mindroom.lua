-- The `mindroom` profile (the default): one instance as MindRoom publishes
-- it today (docs/reference/mindroom.md §§1-5, from mindroom-ai/mindroom
-- @9f69327b4): ONE MindRoom app serving the dashboard `/`, `/api` and `/v1`
-- on port 8765 with its data (SQLite included) under /mindroom_data, and
-- its Matrix homeserver (Synapse by default, Tuwunel when the request asks
-- for it). No Postgres, no Redis, no separate frontend.
--
-- The MindRoom app IS the instance's main app (`{app}`): it keeps the name
-- every earlier instance had and `{app}.{BASE_DOMAIN}` stays its dashboard,
-- with no empty placeholder app beside it; `api.{domain}` is served by the
-- same app (the chart routes `<c>.api.<base>` to 8765 too, T/ingress.yaml).
--
-- ctx: as profiles/split.lua describes, plus
--   settings.mindroom_image, settings.supabase_url, settings.supabase_auth
--   (true when SUPABASE_URL and SUPABASE_ANON_KEY are set), settings.provider_keys
--   (the names of the model-provider keys that are set)
--   secrets { admin_password, matrix_registration_secret, api_key,
--             credentials_encryption_key, <PROVIDER>_API_KEY..., SUPABASE_ANON_KEY }
--   (markers; only those with a value are present)

-- MindRoom's data root and config file (mindroom constants.py:287-297,
-- 41,224-318; the chart's values, T/deployment-mindroom.yaml:106-209).
local DATA = "/mindroom_data"
local CONFIG_PATH = DATA .. "/config/config.yaml"
-- The image's CMD (local/instances/deploy/Dockerfile.mindroom:100-102, after
-- `tini --`): run once the config file is in place.
local MINDROOM_COMMAND = { "/app/.venv/bin/mindroom", "run" }
local MINDROOM_PORT = 8765 -- Dockerfile.mindroom:98, cli/main.py:124-133
local HOMESERVER_PORT = 8008 -- Synapse's listener below; Tuwunel TUWUNEL_PORT

local MATRIX_DATA_PATH = { synapse = "/data", tuwunel = "/var/lib/tuwunel" }
local MATRIX_ENV_PREFIXES = { "TUWUNEL_", "SYNAPSE_" }
-- The environment MindRoom's own registration uses: Synapse's shared-secret
-- admin API (matrix/provisioning.py:28-40) or a registration token (Tuwunel).
-- Variables mrprov owns on the MindRoom app: one that the current answer no
-- longer sets (after a homeserver or auth switch, a provider key removed
-- from the settings) is unset.
local MINDROOM_OWNED = {
  "MATRIX_REGISTRATION_", "SUPABASE_URL", "SUPABASE_ANON_KEY", "ACCOUNT_ID", "MINDROOM_API_KEY",
  "OPENROUTER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "DEEPSEEK_API_KEY",
}

-- Synapse's homeserver.yaml, written once into its data directory at first
-- start (the chart's configmap-synapse.yaml without OIDC): SQLite under
-- /data, plain HTTP on 8008 behind Dokku's nginx (x_forwarded), no
-- federation, registration only through the shared secret MindRoom uses
-- (its value is not in this file: the start command writes it from the
-- app's secret environment into registration_shared_secret_path), rate
-- limits raised for the bots as the chart does.
local function synapse_yaml(server_name, public_url)
  local rc = "    per_second: 10000\n    burst_count: 10000\n"
  local rc2 = "      per_second: 10000\n      burst_count: 10000\n"
  return table.concat({
    "# Written by mrprov at the homeserver's first start; later edits stay.\n",
    ("server_name: %q\n"):format(server_name),
    ("public_baseurl: %q\n"):format(public_url .. "/"),
    "pid_file: /data/homeserver.pid\n",
    "listeners:\n",
    "  - port: 8008\n    tls: false\n    type: http\n    x_forwarded: true\n",
    "    bind_addresses: ['0.0.0.0']\n",
    "    resources:\n      - names: [client, federation]\n        compress: false\n",
    "database:\n  name: sqlite3\n  args:\n    database: /data/homeserver.db\n",
    "media_store_path: /data/media_store\n",
    "signing_key_path: /data/signing.key\n",
    "registration_shared_secret_path: /data/registration_shared_secret\n",
    "enable_registration: false\n",
    "report_stats: false\n",
    "federation_domain_whitelist: []\n",
    "trusted_key_servers: []\n",
    "url_preview_enabled: false\n",
    "rc_message:\n", rc,
    "rc_registration:\n", rc,
    "rc_joins:\n  local:\n", rc2,
    "rc_invites:\n  per_room:\n", rc2, "  per_user:\n", rc2,
    "rc_login:\n  address:\n", rc2, "  account:\n", rc2, "  failed_attempts:\n", rc2,
  })
end

-- Synapse's start: as the chart's deployment-synapse.yaml (chown the data
-- to 991:991, generate the signing key once, then the image's /start.py,
-- which drops to 991:991 with gosu, docker/start.py main()), plus writing
-- the registration secret from the environment to the file the config
-- names. The data directory cannot be handed to 991 by
-- storage:ensure-directory on Dokku v0.35 (only named owners), so the
-- container (root until start.py drops) does it, like the chart.
local SYNAPSE_COMMAND = {
  "/bin/sh", "-c",
  "umask 077 && printf '%s' \"$SYNAPSE_REGISTRATION_SHARED_SECRET\" > /data/registration_shared_secret"
    .. " && chown -R 991:991 /data"
    .. " && { [ -f /data/signing.key ] || gosu 991:991 /usr/local/bin/python -m synapse.app.homeserver"
    .. " --config-path /data/homeserver.yaml --generate-keys; }"
    .. " && exec /start.py",
}

local function build(ctx)
  local n, s, sec = ctx.names, ctx.settings, ctx.secrets
  local base = s.instance_data_base
  local tls = { email = s.letsencrypt_email }
  -- MindRoom cannot run without a homeserver (MATRIX_HOMESERVER is required,
  -- reference §2): one always runs. The request's Matrix choice picks which:
  -- enable_matrix with matrix_type (tuwunel or synapse), else Synapse.
  local kind = ctx.matrix and ctx.matrix.type or "synapse"
  local matrix_domain = "matrix." .. n.domain
  local matrix_url = "https://" .. matrix_domain
  local server_name = n.domain -- MXIDs @x:<domain>, as the chart's <c>.<base>

  -- The request's extra environment first: the contract's own variables
  -- below always win (a request cannot open the dashboard or repoint Matrix).
  local env = {}
  for k, v in pairs(ctx.config_updates) do env[k] = v end
  env.MINDROOM_STORAGE_PATH = DATA
  env.HOME = DATA
  env.MINDROOM_CONFIG_PATH = CONFIG_PATH
  env.MINDROOM_PUBLIC_URL = n.urls.frontend
  -- The homeserver through its public name: Dokku's nginx on the host serves
  -- it (https after Let's Encrypt). An app-to-app address would need a
  -- shared Dokku network (network:create + network:set attach-post-deploy,
  -- alias <app>.web, core:plugins/network/functions.go attachAppToNetwork),
  -- which mrprov has no resource for yet. MindRoom waits for the homeserver
  -- (timeout 0 = for ever, as the chart) until its certificate exists.
  env.MATRIX_HOMESERVER = matrix_url
  env.MATRIX_SERVER_NAME = server_name
  env.MINDROOM_MATRIX_HOMESERVER_STARTUP_TIMEOUT_SECONDS = "0"
  env.MINDROOM_DESKTOP_MATRIX_HOMESERVER = matrix_url
  if kind == "synapse" then
    env.MATRIX_REGISTRATION_SHARED_SECRET = sec.matrix_registration_secret
  else
    env.MATRIX_REGISTRATION_TOKEN = sec.matrix_registration_secret
  end
  env.CUSTOMER_ID = ctx.app
  env.LOG_LEVEL = "INFO"
  env.MINDROOM_CREDENTIALS_ENCRYPTION_KEY = sec.credentials_encryption_key
  -- Dashboard auth is always on (no key and no Supabase = open to anyone,
  -- mindroom api/auth.py): Supabase JWTs of the instance's own account when
  -- the provisioner is configured for it and the request names the account,
  -- else the instance API key (returned once by the provision answer).
  if s.supabase_auth and sec.SUPABASE_ANON_KEY and ctx.account_id and ctx.account_id ~= "" then
    env.SUPABASE_URL = s.supabase_url
    env.SUPABASE_ANON_KEY = sec.SUPABASE_ANON_KEY
    env.ACCOUNT_ID = ctx.account_id
  else
    env.MINDROOM_API_KEY = sec.api_key
  end
  for _, k in ipairs(s.provider_keys) do
    if sec[k] then env[k] = sec[k] end
  end

  local apps = {
    {
      name = n.app, role = "main", image = s.mindroom_image, container_port = MINDROOM_PORT,
      env = env, env_owned_prefixes = MINDROOM_OWNED, limits = ctx.app_limits,
      domains = { n.domain, "api." .. n.domain },
      -- uid 1000 owns MindRoom's data (Dockerfile.mindroom:73-96 USER 1000:1000;
      -- the chart's fsGroup): `--chown heroku` is 1000 in Dokku v0.35.20
      -- (plugins/storage/internal-functions) and v0.38.27 (subcommands.go
      -- ResolveChownID).
      storage = { dir = n.app, host_path = base .. "/" .. n.app, container_path = DATA, chown = "heroku" },
      letsencrypt = tls,
      -- config.yaml reaches MINDROOM_CONFIG_PATH before the first start
      -- (the engine's delivery; MINDROOM_CONFIG_TEMPLATE is set by it)
      seed_config = { content = ctx.config_yaml, path = CONFIG_PATH, command = MINDROOM_COMMAND },
      -- "running" = /api/ready answers 200 (api/main.py:751-760)
      health = { path = "/api/ready" },
      -- MindRoom's SQLite and Matrix sync state: one container at a time
      -- (the chart's Recreate strategy, T/deployment-mindroom.yaml:47-49)
      exclusive_storage = true,
    },
  }

  local menv
  if kind == "synapse" then
    menv = {
      SYNAPSE_SERVER_NAME = server_name, SYNAPSE_REPORT_STATS = "no",
      SYNAPSE_CONFIG_DIR = "/data", SYNAPSE_DATA_DIR = "/data",
      SYNAPSE_REGISTRATION_SHARED_SECRET = sec.matrix_registration_secret,
    }
  else
    -- Tuwunel reads TUWUNEL_* as its config (the mindroom-tuwunel chart's
    -- keys, cluster/k8s/tuwunel/templates/_helpers.tpl:105-128)
    menv = {
      TUWUNEL_SERVER_NAME = server_name, TUWUNEL_DATABASE_PATH = MATRIX_DATA_PATH.tuwunel,
      TUWUNEL_ADDRESS = "0.0.0.0", TUWUNEL_PORT = tostring(HOMESERVER_PORT),
      TUWUNEL_ALLOW_REGISTRATION = "true", TUWUNEL_REGISTRATION_TOKEN = sec.matrix_registration_secret,
      TUWUNEL_ALLOW_FEDERATION = "false",
    }
  end
  local matrix_app = {
    name = n.matrix, role = "matrix", matrix_type = kind, container_port = HOMESERVER_PORT,
    image = kind == "synapse" and s.synapse_image or s.tuwunel_image,
    env = menv, env_owned_prefixes = MATRIX_ENV_PREFIXES, domains = { matrix_domain },
    storage = { dir = n.matrix, host_path = base .. "/" .. n.matrix, container_path = MATRIX_DATA_PATH[kind],
                chown = "false", owned_paths = { MATRIX_DATA_PATH.tuwunel, MATRIX_DATA_PATH.synapse } },
    letsencrypt = tls,
    -- one server on its database at a time (Synapse's SQLite, Tuwunel's
    -- RocksDB lock): no zero-downtime overlap (the delivery's checks:disable)
    exclusive_storage = true,
  }
  if kind == "synapse" then
    -- The image's ENTRYPOINT is /start.py (synapse docker/Dockerfile),
    -- which would take the converge script for its mode: cleared, and
    -- SYNAPSE_COMMAND ends in `exec /start.py` itself. The files stay
    -- root's (the container starts as root; start.py drops to 991).
    matrix_app.seed_config = { content = synapse_yaml(server_name, matrix_url), path = "/data/homeserver.yaml",
                               command = SYNAPSE_COMMAND, entrypoint = {}, owner = "0:0" }
  end
  apps[#apps + 1] = matrix_app
  -- (An instance keeps the layout it was provisioned with, lua/plan.lua:
  -- no split app of an earlier layout is ever this profile's to remove.)
  return { apps = apps, services = {} }
end

return {
  description = "MindRoom as published: one MindRoom app (dashboard, /api, /v1) and its homeserver "
    .. "(Synapse, or Tuwunel on request)",
  build = build,
}
