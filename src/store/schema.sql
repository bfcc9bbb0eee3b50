-- The state store's tables as this mrprov creates them in a new database:
-- the schema of version STORE_SCHEMA_VERSION (src/store/store.h), embedded
-- in the binary at build time (cmake/embed.cmake -> store_schema_sql).
--
-- Changing it: change the table here, add the upgrade of an existing
-- database as the next function in src/store/migrate.c (one per version),
-- and bump STORE_SCHEMA_VERSION. tests/c/test_store.c checks that a store
-- upgraded from version 1 ends with exactly the tables, columns and indexes
-- below; column order matters (an upgrade can only append columns).

-- health_*: the instance's last readiness check (what answered, when, and
-- the last answer or error while it does not answer); NULL before any.
CREATE TABLE IF NOT EXISTS instances (
  subscription_id TEXT PRIMARY KEY,
  account_id TEXT,
  app_name TEXT NOT NULL UNIQUE,
  tier TEXT NOT NULL,
  status TEXT NOT NULL,
  spec TEXT NOT NULL DEFAULT '{}',
  applied TEXT NOT NULL DEFAULT '{}',
  urls TEXT NOT NULL DEFAULT '{}',
  limits TEXT NOT NULL DEFAULT '{}',
  error TEXT,
  dry_run INTEGER NOT NULL DEFAULT 0,
  generation INTEGER,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  health_state TEXT,
  health_checked_at TEXT,
  health_error TEXT,
  host TEXT
);
-- host: the Dokku host the instance lives on (lua/placement.lua decides it
-- before any command is sent; only a move changes it).
CREATE INDEX IF NOT EXISTS instances_by_host ON instances (host);

-- A host drained through the API (POST /api/v1/hosts/{name}/drain): it gets
-- no new instance. Host files may also say draining = true.
CREATE TABLE IF NOT EXISTS hosts (
  name TEXT PRIMARY KEY,
  draining INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL
);

-- not_before: a queued job is not claimed before this time (ISO-8601 UTC;
-- NULL: at once). A job that waits (a readiness check between attempts)
-- re-queues itself with it instead of holding a worker.
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  subscription_id TEXT NOT NULL,
  operation TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed')),
  request TEXT NOT NULL DEFAULT '{}',
  result TEXT,
  error TEXT,
  generation INTEGER,
  step TEXT,
  steps_done INTEGER NOT NULL DEFAULT 0,
  steps_total INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  waiting_for TEXT,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT,
  not_before TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_by_subscription ON jobs (subscription_id);

-- The step journal: one row per Dokku command of a job. restart/deploys:
-- what the command does to its app, as its resource module said (the change
-- takes effect on the next start; it starts the app); NULL on steps
-- journaled before version 4 ("not known").
CREATE TABLE IF NOT EXISTS steps (
  job_id TEXT NOT NULL REFERENCES jobs (id),
  seq INTEGER NOT NULL,
  resource TEXT NOT NULL,
  target TEXT NOT NULL,
  command TEXT NOT NULL,
  mutating INTEGER NOT NULL DEFAULT 1,
  state TEXT NOT NULL,
  exit_code INTEGER,
  duration_ms INTEGER,
  output TEXT,
  error TEXT,
  started_at TEXT,
  finished_at TEXT,
  restart INTEGER DEFAULT 0,
  deploys INTEGER DEFAULT 0,
  PRIMARY KEY (job_id, seq)
);

-- Rows for Supabase (PostgREST): kind is the table, upsert_on its upsert key.
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  subscription_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  payload TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT,
  last_error TEXT,
  created_at TEXT NOT NULL,
  upsert_on TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, id);

CREATE TABLE IF NOT EXISTS webhook_ids (
  id TEXT PRIMARY KEY,
  received_at TEXT NOT NULL
);

-- Which instance serves each domain, so that two instances (two jobs at
-- once included) cannot both claim one: claims are checked and written
-- inside one BEGIN IMMEDIATE transaction.
CREATE TABLE IF NOT EXISTS domains (
  domain TEXT PRIMARY KEY,
  subscription_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS domains_by_subscription ON domains (subscription_id);

-- The drift sweep (lua/reconcile.lua): when each instance was last probed
-- and which of its resources differed from the desired state (a JSON array
-- of {resource, type, app, commands}; [] when it was in sync).
CREATE TABLE IF NOT EXISTS drift (
  subscription_id TEXT PRIMARY KEY,
  checked_at TEXT NOT NULL,
  resources TEXT NOT NULL DEFAULT '[]'
);

-- Fleet rollouts (lua/rollout.lua): a rollout's validated request (spec),
-- its state (running, paused, halted, aborted, finished, rolling_back,
-- rolled_back), the wave under way, the failures so far and, during the
-- pause between waves, when the next wave starts (next_wave_at).
CREATE TABLE IF NOT EXISTS rollouts (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  spec TEXT NOT NULL DEFAULT '{}',
  wave INTEGER NOT NULL DEFAULT 1,
  failures INTEGER NOT NULL DEFAULT 0,
  reason TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  finished_at TEXT,
  next_wave_at TEXT
);

-- One row per instance a rollout selected: its wave and place in it, its
-- step's state, the image it had before (a rollback restores it; NULL: the
-- MINDROOM_IMAGE setting), the job that changed it, and the field values it
-- had before (from_fields, JSON {"env": {"KEY": "value" | null}}: null, the
-- key was not set; a rollback restores them; NULL: the rollout sets none).
CREATE TABLE IF NOT EXISTS rollout_instances (
  rollout_id TEXT NOT NULL,
  subscription_id TEXT NOT NULL,
  wave INTEGER NOT NULL,
  position INTEGER NOT NULL,
  state TEXT NOT NULL,
  from_image TEXT,
  job_id TEXT,
  error TEXT,
  started_at TEXT,
  finished_at TEXT,
  from_fields TEXT,
  PRIMARY KEY (rollout_id, subscription_id)
);
