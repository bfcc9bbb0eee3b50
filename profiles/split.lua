-- The `split` profile: today's MindRoom instance as separate Dokku apps
-- (SPEC §4): a main app holding the name, the backend (API, data volume,
-- Postgres and Redis linked), the frontend, and an optional Matrix server
-- (Tuwunel or Synapse). A profile is data plus one function: build(ctx)
-- returns the apps, services and links of one instance; lua/desired.lua
-- hands it the context and checks what it returns. It runs sandboxed like a
-- tier file (pure functions only, bounded instructions, memory and time).
--
-- ctx (read it, do not keep it):
--   app, subscription_id, account_id, tier     the instance and its tier's name
--   names   { app, backend, frontend, matrix, db, redis, domain,
--             urls = { frontend, backend, matrix } } (lua/desired.lua names())
--   matrix  { type = "tuwunel" | "synapse" } when the request enables Matrix, else nil
--   custom_domain                              the request's, or nil
--   limits  the limits in force (numbers; nil = unlimited), limits_text the
--           same as text ("" for unlimited), app_limits { memory_mb, cpu }
--   config_yaml      MindRoom's config.yaml rendered from the tier
--   config_updates   the request's extra environment (validated by the API)
--   settings { backend_image, frontend_image, tuwunel_image, synapse_image,
--              instance_data_base, letsencrypt_email, base_domain }
--   secrets  { admin_password }: opaque markers, never the values; an env
--            value set to one becomes the secret (and is redacted)
local BACKEND_DATA_PATH = "/app/data"
local MATRIX_DATA_PATH = { tuwunel = "/var/lib/tuwunel", synapse = "/data" }
local MATRIX_ENV_PREFIXES = { "TUWUNEL_", "SYNAPSE_" }
-- The ports the servers listen on, mapped from host port 80 (Dokku maps an
-- EXPOSEd port P as http:P:P). MindRoom: 8765 (mindroom Dockerfile.mindroom,
-- cli/main.py --api-port); Synapse 8008 (its listener); Tuwunel 8008 (the
-- mindroom-tuwunel chart). The frontend image's port is left to Dokku.
local CONTAINER_PORT = { backend = 8765, matrix = { tuwunel = 8008, synapse = 8008 } }
local STORAGE_CHOWN = "false"

local function build(ctx)
  local n, s, lt = ctx.names, ctx.settings, ctx.limits_text
  local base = s.instance_data_base
  local backend_env = {
    MINDROOM_INSTANCE_ID = ctx.app,
    MINDROOM_SUBSCRIPTION_ID = ctx.subscription_id,
    MINDROOM_ACCOUNT_ID = ctx.account_id or "",
    MINDROOM_TIER = ctx.tier,
    MINDROOM_FRONTEND_URL = n.urls.frontend,
    MINDROOM_BACKEND_URL = n.urls.backend,
    MINDROOM_MATRIX_URL = n.urls.matrix or "",
    MINDROOM_MEMORY_MB = lt.memory_mb,
    MINDROOM_CPU_LIMIT = lt.cpu,
    MINDROOM_STORAGE_GB = lt.storage_gb,
    MINDROOM_MAX_AGENTS = lt.agents,
    MINDROOM_MESSAGES_PER_DAY = lt.messages_per_day,
    MINDROOM_STORAGE_PATH = BACKEND_DATA_PATH,
    MINDROOM_ADMIN_PASSWORD = ctx.secrets.admin_password,
    MINDROOM_CONFIG_YAML = ctx.config_yaml,
  }
  for k, v in pairs(ctx.config_updates) do
    backend_env[k] = v
  end

  -- Always a limits resource: a limit the tier (or request) no longer has
  -- is cleared on Dokku, not left as it was.
  local app_limits = ctx.app_limits
  local tls = { email = s.letsencrypt_email }

  local apps = {
    { name = n.app, role = "main" },
    {
      name = n.backend, role = "backend", image = s.backend_image, container_port = CONTAINER_PORT.backend,
      env = backend_env, limits = app_limits, domains = { "api." .. n.domain },
      storage = { dir = n.app, host_path = base .. "/" .. n.app, container_path = BACKEND_DATA_PATH,
                  chown = STORAGE_CHOWN },
      letsencrypt = tls,
    },
    {
      name = n.frontend, role = "frontend", image = s.frontend_image,
      env = {
        MINDROOM_INSTANCE_ID = ctx.app,
        MINDROOM_API_URL = n.urls.backend,
        MINDROOM_MATRIX_URL = n.urls.matrix or "",
      },
      limits = app_limits, domains = { n.domain }, letsencrypt = tls,
    },
  }
  if ctx.matrix then
    local kind = ctx.matrix.type
    local env
    if kind == "synapse" then
      env = { SYNAPSE_SERVER_NAME = "matrix." .. n.domain, SYNAPSE_REPORT_STATS = "no" }
    else
      env = {
        TUWUNEL_SERVER_NAME = "matrix." .. n.domain,
        TUWUNEL_DATABASE_PATH = MATRIX_DATA_PATH.tuwunel,
        TUWUNEL_ALLOW_REGISTRATION = "false",
      }
    end
    apps[#apps + 1] = {
      name = n.matrix, role = "matrix", matrix_type = kind, container_port = CONTAINER_PORT.matrix[kind],
      image = kind == "synapse" and s.synapse_image or s.tuwunel_image,
      -- after a switch of server, the other one's variables and mount go
      env = env, env_owned_prefixes = MATRIX_ENV_PREFIXES, domains = { "matrix." .. n.domain },
      storage = { dir = n.matrix, host_path = base .. "/" .. n.matrix,
                  container_path = MATRIX_DATA_PATH[kind], chown = STORAGE_CHOWN,
                  owned_paths = { MATRIX_DATA_PATH.tuwunel, MATRIX_DATA_PATH.synapse } },
      letsencrypt = tls,
    }
  else
    apps[#apps + 1] = { name = n.matrix, role = "matrix", absent = true }
  end

  return {
    apps = apps,
    services = {
      { kind = "postgres", name = n.db, links = { n.backend } },
      { kind = "redis", name = n.redis, links = { n.backend } },
    },
  }
end

return {
  description = "MindRoom as separate apps: backend, frontend, optional Matrix server; Postgres and Redis",
  build = build,
}
