-- mrprov schema for Supabase: the tables mrprov mirrors instance state into, and a
-- signed webhook trigger for the subscriptions table that drives provisioning.
--
-- How to install (once per project; safe to run again, every statement is idempotent):
--   1. Supabase dashboard → SQL editor → paste this whole file → Run.
--      (Or: psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f docker/supabase/schema.sql)
--   2. Enable the pg_net extension (Database → Extensions → pg_net) if it is not on yet.
--      pgcrypto and Vault are enabled on every Supabase project.
--   3. Put two secrets into Vault (Project Settings → Vault, or in SQL):
--        select vault.create_secret('https://provisioner.example.com/api/v1/webhooks/supabase',
--                                   'mrprov_webhook_url');
--        select vault.create_secret('whsec_' || encode(gen_random_bytes(32), 'base64'),
--                                   'mrprov_webhook_secret');
--      and give mrprov the same secret string as WEBHOOK_SECRET (copy it from
--        select decrypted_secret from vault.decrypted_secrets where name = 'mrprov_webhook_secret';).
--      To rotate: vault.update_secret(id, new_secret), then change WEBHOOK_SECRET.
--   4. Give mrprov SUPABASE_URL (https://<ref>.supabase.co) and SUPABASE_SERVICE_KEY (the
--      service_role / secret key). Only that key can read or write the tables below:
--      row-level security is on and there is no policy for anon or authenticated.
--
-- The trigger at the end is installed on public.subscriptions. If your subscriptions
-- table lives elsewhere or has other column names, change the `create trigger` statement
-- and the field mapping in mrprov's lua/webhooks.lua, not the function.
--
-- Needs PostgreSQL 14 or later (create or replace trigger). Also runs on plain
-- PostgreSQL 15 (the test harness does exactly that): the Supabase
-- roles are created when missing, and the trigger function only touches pg_net and
-- Vault when it fires.

-- ---------------------------------------------------------------------------------------
-- Roles and extensions
-- ---------------------------------------------------------------------------------------

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    -- As on Supabase: the service role bypasses row-level security.
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

-- Supabase keeps extensions in the schema "extensions"; pgcrypto is already there.
create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;

grant usage on schema public to service_role;

-- ---------------------------------------------------------------------------------------
-- Tables written by mrprov (PostgREST, service role only)
-- ---------------------------------------------------------------------------------------

-- One row per instance, upserted on every state change
-- (POST /rest/v1/instances?on_conflict=subscription_id, Prefer: resolution=merge-duplicates).
create table if not exists public.instances (
  subscription_id text primary key,
  account_id      text,
  app_name        text not null unique,
  tier            text not null,
  status          text not null check (status in ('pending', 'provisioning', 'starting', 'running',
                                                  'unhealthy', 'stopped', 'suspended', 'updating',
                                                  'deprovisioning', 'deprovisioned', 'failed')),
  frontend_url    text,
  backend_url     text,
  matrix_url      text,
  limits          jsonb not null default '{}',
  error           text,
  dry_run         boolean not null default false,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now()
);

-- Job steps of note, appended in order per subscription.
create table if not exists public.events (
  id              bigint generated always as identity primary key,
  subscription_id text not null,
  job_id          text,
  operation       text,
  kind            text not null,
  message         text,
  data            jsonb not null default '{}',
  created_at      timestamptz not null default now()
);

-- Backups written by deprovisioning (the files stay on the provisioner host).
create table if not exists public.backups (
  id              bigint generated always as identity primary key,
  subscription_id text not null,
  app_name        text not null,
  job_id          text,
  service         text not null,
  path            text not null,
  size_bytes      bigint not null check (size_bytes >= 0),
  created_at      timestamptz not null default now()
);

-- mrprov's id of each event and backup row: the outbox sends a row again when it cannot
-- know the first write landed (an answer lost to a timeout, a kill -9 between the write
-- and its bookkeeping); it upserts on this id, so the row is stored once.
-- (POST /rest/v1/events?on_conflict=delivery_id, Prefer: resolution=merge-duplicates.)
-- `add column if not exists` also upgrades a database made by an earlier schema.
alter table public.events add column if not exists delivery_id text;
alter table public.backups add column if not exists delivery_id text;
create unique index if not exists events_delivery_id_key on public.events (delivery_id);
create unique index if not exists backups_delivery_id_key on public.backups (delivery_id);

-- Readiness (mrprov's health check of the instance): state (starting, healthy, unhealthy,
-- skipped), when it last ran, its last answer while not ready. `add column if not exists`
-- and the constraint below also upgrade a database made by an earlier schema (which also
-- gains the statuses `stopped` and `suspended`, issue 15).
alter table public.instances add column if not exists health_state text;
alter table public.instances add column if not exists health_checked_at timestamptz;
alter table public.instances add column if not exists health_error text;
alter table public.instances drop constraint if exists instances_status_check;
alter table public.instances add constraint instances_status_check check (status in ('pending', 'provisioning',
  'starting', 'running', 'unhealthy', 'stopped', 'suspended', 'updating', 'deprovisioning', 'deprovisioned',
  'failed'));

create index if not exists instances_account_id_idx on public.instances (account_id);
create index if not exists instances_status_idx on public.instances (status);
create index if not exists events_subscription_id_created_at_idx on public.events (subscription_id, created_at);
create index if not exists events_job_id_idx on public.events (job_id);
create index if not exists backups_subscription_id_created_at_idx on public.backups (subscription_id, created_at);
create index if not exists backups_app_name_idx on public.backups (app_name);

-- updated_at follows every change unless the writer set it itself (mrprov's outbox may
-- deliver late and sends the time of the change).
create or replace function public.mrprov_touch_updated_at()
returns trigger
language plpgsql
set search_path = pg_catalog
as $$
begin
  if new.updated_at is not distinct from old.updated_at then
    new.updated_at := now();
  end if;
  return new;
end
$$;

create or replace trigger instances_touch_updated_at
  before update on public.instances
  for each row execute function public.mrprov_touch_updated_at();

-- Row-level security with no policy at all: anon and authenticated see nothing even if a
-- grant slips in (Supabase's default privileges grant new tables to them); the service
-- role bypasses RLS.
alter table public.instances enable row level security;
alter table public.events enable row level security;
alter table public.backups enable row level security;

revoke all on table public.instances, public.events, public.backups from public, anon, authenticated;
grant select, insert, update, delete on table public.instances, public.events, public.backups to service_role;
revoke all on sequence public.events_id_seq, public.backups_id_seq from public, anon, authenticated;
grant usage, select on sequence public.events_id_seq, public.backups_id_seq to service_role;
revoke all on function public.mrprov_touch_updated_at() from public, anon, authenticated;

-- ---------------------------------------------------------------------------------------
-- Signed webhook for the subscriptions table
-- ---------------------------------------------------------------------------------------

-- What mrprov reads from public.subscriptions. The webhook below and the sweep's
-- subscriptions sync (lua/subscriptions_sync.lua, "missed webhooks") both use the
-- columns of the field mapping in lua/webhooks.lua:
--   id          text (or uuid): the subscription id; mrprov's subscription_id, 1-64
--               characters of A-Z a-z 0-9 _ -, starting with a letter or digit
--   account_id  text (or uuid), may be null: the same rule when set
--   tier        text: the name of a tier file of mrprov (tiers/<name>.lua); needed
--               when the subscription is active
--   status      text: active, trialing                → the instance exists (provisioned,
--                                                      updated to the row's tier, resumed)
--               past_due, unpaid, paused          → the instance is suspended
--               cancelled, canceled               → the instance is deprovisioned (backup)
-- The sync reads it with the service key once per sweep, keyset-paged on id:
--   GET /rest/v1/subscriptions?select=id,account_id,tier,status&order=id.asc&limit=500
--       [&id=gt.<last id of the previous page>]
-- so the service role needs SELECT on it (granted below when this file creates it) and id
-- should be indexed (a primary key is). A row with another status, an unknown tier, or
-- an id or account_id outside the rules is reported in the sweep's report and skipped.
-- At most RECONCILE_MAX_DESTRUCTIVE deprovisions (default 3) are started per sweep. A
-- row that is missing is not a cancellation: delete a subscription's instance by
-- cancelling the subscription (or through mrprov's API).
--
-- A minimal subscriptions table, only for projects (and tests) that have none; an
-- existing table is left exactly as it is.
do $$
begin
  if to_regclass('public.subscriptions') is null then
    create table public.subscriptions (
      id         text primary key,
      account_id text,
      tier       text,
      status     text,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    alter table public.subscriptions enable row level security;
    revoke all on table public.subscriptions from public, anon, authenticated;
    grant select, insert, update, delete on table public.subscriptions to service_role;
  end if;
end
$$;

-- The Standard Webhooks signature header value for one message:
--   'v1,' || base64(HMAC-SHA256(key, msg_id || '.' || timestamp || '.' || body))
-- where key is the base64 decoding of secret without its 'whsec_' (or 'v1,whsec_')
-- prefix; unpadded base64 and line breaks are accepted. body must be the exact text
-- that is sent.
create or replace function public.mrprov_webhook_signature(msg_id text, ts bigint, body text, secret text)
returns text
language sql
immutable
strict
set search_path = pg_catalog
as $$
  select 'v1,' || encode(
    extensions.hmac(
      convert_to(msg_id || '.' || ts::text || '.' || body, 'UTF8'),
      decode(k || repeat('=', (4 - length(k) % 4) % 4), 'base64'),
      'sha256'),
    'base64')
  from (select regexp_replace(regexp_replace(secret, '\s+', '', 'g'), '^(v1,)?whsec_', '') as k) s
$$;

-- Trigger function: sends the Supabase Database Webhook payload, exactly as
-- supabase_functions.http_request builds it for POST, through pg_net, signed in the
-- Standard Webhooks format. pg_net queues the request and sends it after commit; a
-- rolled-back write sends nothing. Optional trigger argument: timeout in ms (default 5000).
-- Vault entries it reads: mrprov_webhook_url and mrprov_webhook_secret ('whsec_<base64>').
-- When either is missing it warns and sends nothing: a webhook misconfiguration never
-- blocks a write to the subscriptions table.
create or replace function public.mrprov_subscription_webhook()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog
as $$
declare
  v_url     text;
  v_secret  text;
  v_payload jsonb;
  v_body    text;
  v_id      text;
  v_ts      bigint;
  v_timeout integer := coalesce(nullif(tg_argv[0], 'null')::integer, 5000);
  v_headers jsonb;
begin
  select decrypted_secret into v_url
    from vault.decrypted_secrets where name = 'mrprov_webhook_url' limit 1;
  select decrypted_secret into v_secret
    from vault.decrypted_secrets where name = 'mrprov_webhook_secret' limit 1;
  if v_url is null or v_url = '' or v_secret is null or v_secret = '' then
    raise warning 'mrprov webhook: Vault secret mrprov_webhook_url or mrprov_webhook_secret is missing; nothing sent';
    return null;
  end if;

  -- Same expression as supabase_functions.http_request (docker/volumes/db/webhooks.sql).
  v_payload := jsonb_build_object(
    'old_record', OLD,
    'record', NEW,
    'type', TG_OP,
    'table', TG_TABLE_NAME,
    'schema', TG_TABLE_SCHEMA
  );
  -- pg_net sends convert_to(body::text, 'UTF8'): sign exactly that text.
  v_body := v_payload::text;
  v_id := 'msg_' || replace(gen_random_uuid()::text, '-', '');
  v_ts := floor(extract(epoch from clock_timestamp()))::bigint;

  v_headers := jsonb_build_object(
    'Content-Type', 'application/json',
    'webhook-id', v_id,
    'webhook-timestamp', v_ts::text,
    'webhook-signature', public.mrprov_webhook_signature(v_id, v_ts, v_body, v_secret)
  );
  -- Alternative without signatures: a shared-secret header instead (mrprov accepts
  -- either; WEBHOOK_SECRET is then the whole secret string). Replace the block above with:
  --   v_headers := jsonb_build_object(
  --     'Content-Type', 'application/json',
  --     'Authorization', 'Bearer ' || v_secret
  --   );

  perform net.http_post(v_url, v_payload, '{}'::jsonb, v_headers, v_timeout);
  return null;
end
$$;

revoke all on function public.mrprov_subscription_webhook() from public, anon, authenticated;
revoke all on function public.mrprov_webhook_signature(text, bigint, text, text) from public, anon, authenticated;

create or replace trigger mrprov_subscription_webhook
  after insert or update or delete on public.subscriptions
  for each row execute function public.mrprov_subscription_webhook('5000');
