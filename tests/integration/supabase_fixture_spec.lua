-- The Supabase test fixture itself: docker/supabase/schema.sql on a real PostgreSQL
-- (idempotent, constraints, row-level security, the signed webhook trigger) and the
-- PostgREST-compatible gateway (status codes, error bodies, keep-alive, fault modes).
-- Run: lua5.4 /usr/bin/busted --run=integration tests/integration/supabase_fixture_spec.lua
local socket = require "socket"
local cjson = require "cjson"
local sb = require "supabase_harness"

local q = sb.sh_quote

-- base64(HMAC-SHA256(base64-decode(secret without whsec_), msg)) with openssl, as an
-- independent check of the SQL implementation.
local function openssl_hmac_b64(secret, msg)
  local key_b64 = secret:gsub("^v1,", ""):gsub("^whsec_", "")
  local p = io.popen("printf %s " .. q(key_b64) .. " | base64 -d | od -An -v -tx1 | tr -d ' \\n'")
  local hex = p:read("a")
  p:close()
  assert(hex:match("^%x+$"), "cannot decode the secret")
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, "wb"))
  f:write(msg)
  f:close()
  p = io.popen("openssl dgst -sha256 -mac HMAC -macopt hexkey:" .. hex .. " -binary < " .. q(tmp) .. " | base64 -w0")
  local sig = p:read("a")
  p:close()
  os.remove(tmp)
  return sig
end

-- Raw HTTP/1.1 on one socket (LuaSocket's http closes after every request).
local function raw_connect(h)
  local s = socket.tcp()
  s:settimeout(5)
  assert(s:connect("127.0.0.1", h.port))
  return s
end

local function raw_send(s, h, method, path, body, extra)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1:" .. h.port,
                  "apikey: " .. h.key, "Authorization: Bearer " .. h.key }
  for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
  if body then
    lines[#lines + 1] = "Content-Type: application/json"
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  return s:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
end

-- Returns status, headers (lower-case names), body; or nil, err.
local function raw_read(s)
  local line, err = s:receive("*l")
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/1%.1 (%d%d%d)"))
  local headers = {}
  while true do
    local l, e = s:receive("*l")
    if not l then return nil, e end
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.-)%s*$")
    headers[k:lower()] = v
  end
  local len = tonumber(headers["content-length"] or "0")
  local body = ""
  if len > 0 then
    body, err = s:receive(len)
    if not body then return nil, err end
  end
  return status, headers, body
end

local function upsert(h, row, prefer)
  return sb.request(h, "POST", "/rest/v1/instances?on_conflict=subscription_id", row,
    sb.auth(h, { Prefer = prefer or "return=representation, resolution=merge-duplicates" }))
end

local function instance(id, app, extra)
  local row = { subscription_id = id, app_name = app, tier = "free", status = "pending" }
  for k, v in pairs(extra or {}) do row[k] = v end
  return row
end

describe("#integration Supabase fixture", function()
  local h

  lazy_setup(function()
    h = sb.start()
  end)

  lazy_teardown(function()
    if h then sb.stop(h) end
  end)

  describe("schema.sql", function()
    it("applies a second time cleanly and keeps the data", function()
      sb.query(h, "insert into public.instances (subscription_id, app_name, tier, status)"
        .. " values ('keep-1', 'mr-keep-1', 'free', 'running')")
      local ok, out = sb.apply_schema(h)
      assert.is_true(ok, out)
      assert.is_nil(out:find("ERROR", 1, true), out)
      ok, out = sb.apply_schema(h)
      assert.is_true(ok, out)
      assert.are.equal(1, #sb.rows(h, "instances", { subscription_id = "keep-1" }))
      local triggers = sb.query(h, "select count(*) as n from pg_trigger where tgname = 'mrprov_subscription_webhook'")
      assert.are.equal("1", triggers[1].n)
    end)

    it("enforces the constraints", function()
      local function refused(sql, what)
        local res, err = sb.try_query(h, sql)
        assert.is_nil(res, sql)
        assert.truthy(err:find(what, 1, true), err)
      end
      refused("insert into public.instances (subscription_id, app_name, tier, status)"
        .. " values ('c-1', 'mr-c-1', 'free', 'exploded')", "instances_status_check")
      refused("insert into public.instances (subscription_id, app_name, status)"
        .. " values ('c-2', 'mr-c-2', 'running')", "not-null")
      refused("insert into public.instances (subscription_id, app_name, tier, status)"
        .. " values ('c-3', 'mr-keep-1', 'free', 'running')", "instances_app_name_key")
      refused("insert into public.backups (subscription_id, app_name, service, path, size_bytes)"
        .. " values ('c-4', 'mr-c-4', 'postgres', '/b/x.gz', -1)", "backups_size_bytes_check")
      refused("insert into public.events (id, subscription_id, kind) values (5, 'c-5', 'x')", "GENERATED ALWAYS")
      -- every status of lua/instances.lua STATUSES
      for _, st in ipairs({ "pending", "provisioning", "starting", "running", "unhealthy", "stopped", "suspended",
                            "updating", "deprovisioning", "deprovisioned", "failed" }) do
        sb.query(h, "insert into public.instances (subscription_id, app_name, tier, status) values ("
          .. sb.literal(h, "st-" .. st) .. ", " .. sb.literal(h, "mr-st-" .. st) .. ", 'free', "
          .. sb.literal(h, st) .. ")")
      end
      local row = sb.rows(h, "instances", { subscription_id = "st-running" })[1]
      assert.are.equal("{}", row.limits)
      assert.are.equal("f", row.dry_run)
    end)

    it("moves updated_at on every change unless the writer sets it", function()
      sb.query(h, "update public.instances set updated_at = '2020-01-01T00:00:00Z' where subscription_id = 'st-failed'")
      local before = sb.rows(h, "instances", { subscription_id = "st-failed" })[1]
      assert.are.equal("2020-01-01 00:00:00+00", before.updated_at)
      sb.query(h, "update public.instances set error = 'boom' where subscription_id = 'st-failed'")
      local after = sb.rows(h, "instances", { subscription_id = "st-failed" })[1]
      assert.are_not.equal(before.updated_at, after.updated_at)
    end)

    it("keeps the tables to the service role (RLS on, no policies)", function()
      local rls = sb.query(h, "select relname, relrowsecurity::text as rls from pg_class"
        .. " where relnamespace = 'public'::regnamespace and relname in ('instances', 'events', 'backups')"
        .. " order by relname")
      assert.are.same({ { relname = "backups", rls = "true" }, { relname = "events", rls = "true" },
                        { relname = "instances", rls = "true" } }, rls)
      local pol = sb.query(h, "select count(*) as n from pg_policies where schemaname = 'public'"
        .. " and tablename in ('instances', 'events', 'backups')")
      assert.are.equal("0", pol[1].n)
      for _, role in ipairs({ "anon", "authenticated" }) do
        local res, err = sb.try_query(h, "set role " .. role .. "; select * from public.instances")
        sb.query(h, "reset role")
        assert.is_nil(res)
        assert.truthy(err:find("permission denied", 1, true), err)
      end
      local bypass = sb.query(h, "select rolbypassrls::text as b from pg_roles where rolname = 'service_role'")
      assert.are.equal("true", bypass[1].b)
      sb.query(h, "set role service_role")
      local rows = sb.query(h, "select count(*) as n from public.instances")
      sb.query(h, "reset role")
      assert.is_true(tonumber(rows[1].n) > 0)
    end)

    it("signs the official Standard Webhooks vectors", function()
      local function sign(id, ts, body, secret)
        return sb.query(h, "select public.mrprov_webhook_signature(" .. sb.literal(h, id) .. ", " .. ts .. ", "
          .. sb.literal(h, body) .. ", " .. sb.literal(h, secret) .. ") as s")[1].s
      end
      -- Vector A (python/js/go/... sign tests) and B (rust test_sign), reference §2.3.
      assert.are.equal("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}',
          "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
      assert.are.equal("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, '{"email":"test@example.com","username":"test_user"}',
          "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"))
      -- "v1,whsec_..." (Supabase Auth's form) and unpadded secrets decode the same way.
      assert.are.equal("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}',
          "v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
      assert.are.equal("v1,yK2tMbA6BHPrMEJ1lLv7UlJJbgFoqGenJkiajZ29evg=",
        sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}',
          "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr"))
      -- The negative vectors do not come out.
      assert.are_not.equal("v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=",
        sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, '{"email":"test@example.com","username":"test_user"}',
          "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"))
      -- And openssl agrees with vector A (so the trigger check below is independent).
      assert.are.equal("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        openssl_hmac_b64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
          'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}'))
    end)

    it("sends a signed Supabase webhook for insert, update and delete of a subscription", function()
      sb.query(h, "truncate net._requests")
      local t0 = os.time()
      sb.query(h, "insert into public.subscriptions (id, account_id, tier, status)"
        .. " values ('sub_wh1', 'acct_1', 'starter', 'active')")
      -- As the service role (the trigger function runs as its owner and reads Vault).
      sb.query(h, "set role service_role")
      local ok, err = pcall(sb.query, h, "update public.subscriptions set tier = 'professional' where id = 'sub_wh1'")
      sb.query(h, "reset role")
      assert(ok, err)
      sb.query(h, "delete from public.subscriptions where id = 'sub_wh1'")
      -- A rolled-back write sends nothing (pg_net queues inside the transaction).
      sb.query(h, "begin")
      sb.query(h, "insert into public.subscriptions (id, tier, status) values ('sub_rb', 'free', 'active')")
      sb.query(h, "rollback")

      local sent = sb.webhook_requests(h)
      assert.are.equal(3, #sent)
      local ids = {}
      for i, want in ipairs({ "INSERT", "UPDATE", "DELETE" }) do
        local r = sent[i]
        assert.are.equal(h.webhook_url, r.url)
        assert.are.equal("application/json", r.headers["Content-Type"])
        local id, ts, sig = r.headers["webhook-id"], r.headers["webhook-timestamp"], r.headers["webhook-signature"]
        assert.truthy(id and id:match("^msg_%x+$"), tostring(id))
        assert.is_nil(id:find(".", 1, true))
        assert.is_nil(ids[id], "webhook-id must be fresh")
        ids[id] = true
        assert.truthy(ts and ts:match("^%d+$"), tostring(ts))
        assert.is_true(math.abs(tonumber(ts) - t0) <= 60, ts)
        assert.are.equal("v1," .. openssl_hmac_b64(h.webhook_secret, id .. "." .. ts .. "." .. r.body), sig)
        local body = cjson.decode(r.body)
        assert.are.equal(want, body.type)
        assert.are.equal("subscriptions", body.table)
        assert.are.equal("public", body.schema)
        local keys = {}
        for k in pairs(body) do keys[#keys + 1] = k end
        table.sort(keys)
        assert.are.same({ "old_record", "record", "schema", "table", "type" }, keys)
        -- Exactly the bytes pg_net would send: jsonb text, Supabase's key order.
        assert.truthy(r.body:match('^{"type": "' .. want .. '", "table": "subscriptions", "record": '), r.body)
      end
      local ins, upd, del = cjson.decode(sent[1].body), cjson.decode(sent[2].body), cjson.decode(sent[3].body)
      assert.are.equal(cjson.null, ins.old_record)
      assert.are.equal("sub_wh1", ins.record.id)
      assert.are.equal("acct_1", ins.record.account_id)
      assert.are.equal("starter", ins.record.tier)
      assert.are.equal("active", ins.record.status)
      assert.are.equal("professional", upd.record.tier)
      assert.are.equal("starter", upd.old_record.tier)
      assert.are.equal(cjson.null, del.record)
      assert.are.equal("sub_wh1", del.old_record.id)
      assert.are.equal(5000, sent[1].timeout_ms)
    end)

    it("warns and sends nothing when Vault has no secret, without blocking the write", function()
      sb.query(h, "truncate net._requests")
      sb.query(h, "update vault.secrets_stub set name = 'moved' where name = 'mrprov_webhook_secret'")
      local ok, err = pcall(sb.query, h, "insert into public.subscriptions (id, tier, status)"
        .. " values ('sub_nosecret', 'free', 'active')")
      sb.query(h, "update vault.secrets_stub set name = 'mrprov_webhook_secret' where name = 'moved'")
      assert.is_true(ok, err)
      assert.are.equal(0, #sb.webhook_requests(h))
      assert.are.equal(1, #sb.query(h, "select 1 from public.subscriptions where id = 'sub_nosecret'"))
    end)
  end)

  describe("postgrest-gateway", function()
    before_each(function()
      sb.fault(h, "ok")
    end)

    it("upserts on subscription_id: insert then merge into the same row", function()
      local status, body, _, headers = upsert(h, instance("up-1", "mr-up-1", { limits = { memory_mb = 256 } }))
      assert.are.equal(201, status)
      assert.are.equal(1, #body)
      assert.are.equal("pending", body[1].status)
      assert.are.same({ memory_mb = 256 }, body[1].limits)
      assert.truthy(headers["content-type"]:find("application/json", 1, true))
      assert.truthy(headers["preference-applied"]:find("resolution=merge-duplicates", 1, true))

      status, body = upsert(h, instance("up-1", "mr-up-1", { status = "running", frontend_url = "https://a.example" }))
      assert.are.equal(200, status) -- every row matched an existing one
      assert.are.equal("running", body[1].status)
      local rows = sb.rows(h, "instances", { subscription_id = "up-1" })
      assert.are.equal(1, #rows)
      assert.are.equal("running", rows[1].status)
      assert.are.equal("https://a.example", rows[1].frontend_url)
      assert.are.equal('{"memory_mb": 256}', rows[1].limits) -- a column not sent is kept
    end)

    it("answers return=minimal with 201 and no body", function()
      local status, _, raw, headers = upsert(h, instance("min-1", "mr-min-1"),
        "return=minimal, resolution=merge-duplicates")
      assert.are.equal(201, status)
      assert.are.equal("", raw)
      assert.are.equal("*/*", headers["content-range"])
      status, _, raw = sb.request(h, "POST", "/rest/v1/events",
        { { subscription_id = "min-1", kind = "step", data = { n = 1 } },
          { subscription_id = "min-1", kind = "done", data = {} } },
        sb.auth(h))
      assert.are.equal(201, status)
      assert.are.equal("", raw)
      assert.are.equal(2, #sb.rows(h, "events", { subscription_id = "min-1" }))
    end)

    it("refuses a request without the apikey, or with a wrong key, with 401", function()
      local status, body = sb.request(h, "GET", "/rest/v1/instances", nil, {})
      assert.are.equal(401, status)
      assert.are.equal("No API key found in request", body.message)
      status, body = sb.request(h, "POST", "/rest/v1/instances", instance("k-1", "mr-k-1"),
        { apikey = "wrong", Authorization = "Bearer wrong" })
      assert.are.equal(401, status)
      assert.are.equal("Invalid API key", body.message)
      local wstatus, wbody, _, wheaders = sb.request(h, "GET", "/rest/v1/instances", nil,
        { apikey = h.key, Authorization = "Bearer not-the-key" })
      assert.are.equal(401, wstatus)
      assert.are.equal("PGRST301", wbody.code)
      assert.truthy(wheaders["www-authenticate"]:find("Bearer", 1, true))
      status, body = sb.request(h, "GET", "/rest/v1/instances", nil, { apikey = h.key })
      assert.are.equal(401, status)
      assert.are.equal("PGRST302", body.code)
      assert.are.equal(0, #sb.rows(h, "instances", { subscription_id = "k-1" }))
    end)

    it("maps constraint errors to PostgREST's statuses and bodies", function()
      upsert(h, instance("e-1", "mr-e-1"))
      local status, body, _, headers = sb.request(h, "POST", "/rest/v1/instances", instance("e-2", "mr-e-1"),
        sb.auth(h))
      assert.are.equal(409, status)
      assert.are.same({ code = "23505", details = "Key (app_name)=(mr-e-1) already exists.", hint = cjson.null,
                        message = 'duplicate key value violates unique constraint "instances_app_name_key"' }, body)
      assert.are.equal("PostgREST; error=23505", headers["proxy-status"])

      status, body = sb.request(h, "POST", "/rest/v1/instances", instance("e-3", "mr-e-3", { status = "bogus" }),
        sb.auth(h))
      assert.are.equal(400, status)
      assert.are.equal("23514", body.code)
      assert.are.equal('new row for relation "instances" violates check constraint "instances_status_check"',
        body.message)
      assert.are.equal(cjson.null, body.hint)

      status, body = sb.request(h, "POST", "/rest/v1/instances",
        { subscription_id = "e-4", app_name = "mr-e-4", status = "running" }, sb.auth(h))
      assert.are.equal(400, status)
      assert.are.equal("23502", body.code)

      status, body = sb.request(h, "POST", "/rest/v1/backups",
        { subscription_id = "e-5", app_name = "mr-e-5", service = "pg", path = "/x", size_bytes = "lots" }, sb.auth(h))
      assert.are.equal(400, status)
      assert.are.equal("22P02", body.code)

      -- A failed statement leaves nothing behind.
      assert.are.equal(0, #sb.rows(h, "instances", "subscription_id in ('e-2', 'e-3', 'e-4')"))
    end)

    it("answers 404 PGRST205 for a table it does not expose", function()
      for _, t in ipairs({ "nosuchtable", "subscriptions" }) do
        local status, body = sb.request(h, "POST", "/rest/v1/" .. t, { id = "x" }, sb.auth(h))
        assert.are.equal(404, status)
        assert.are.same({ code = "PGRST205", details = cjson.null, hint = cjson.null,
                          message = "Could not find the table 'public." .. t .. "' in the schema cache" }, body)
      end
    end)

    it("answers 400 PGRST204 for an unknown column", function()
      local status, body = sb.request(h, "POST", "/rest/v1/instances", instance("col-1", "mr-col-1", { secret = "x" }),
        sb.auth(h))
      assert.are.equal(400, status)
      assert.are.same({ code = "PGRST204", details = cjson.null, hint = cjson.null,
                        message = "Could not find the 'secret' column of 'instances' in the schema cache" }, body)
    end)

    it("answers 400 PGRST102 for a malformed body or a wrong content type", function()
      local status, body = sb.request(h, "POST", "/rest/v1/events", '{"subscription_id": ', sb.auth(h))
      assert.are.equal(400, status)
      assert.are.equal("PGRST102", body.code)
      assert.are.equal("Empty or invalid json", body.message)
      status, body = sb.request(h, "POST", "/rest/v1/events", '[{"kind":"a"},{"message":"b"}]', sb.auth(h))
      assert.are.equal(400, status)
      assert.are.equal("All object keys must match", body.message)
      status, body = sb.request(h, "POST", "/rest/v1/events", "kind=a",
        sb.auth(h, { ["Content-Type"] = "text/plain" }))
      assert.are.equal(400, status)
      assert.are.equal("PGRST102", body.code)
      assert.are.equal("Content-Type not acceptable: text/plain", body.message)
    end)

    it("filters, orders, selects and limits on GET", function()
      for i = 1, 4 do
        sb.request(h, "POST", "/rest/v1/events",
          { subscription_id = "get-1", kind = i % 2 == 0 and "even" or "odd", message = "m" .. i, data = { i = i } },
          sb.auth(h))
      end
      local status, body, _, headers = sb.request(h, "GET",
        "/rest/v1/events?select=message,kind&subscription_id=eq.get-1&order=id.desc", nil, sb.auth(h))
      assert.are.equal(200, status)
      assert.are.same({ { message = "m4", kind = "even" }, { message = "m3", kind = "odd" },
                        { message = "m2", kind = "even" }, { message = "m1", kind = "odd" } }, body)
      assert.are.equal("0-3/*", headers["content-range"])
      status, body = sb.request(h, "GET",
        "/rest/v1/events?select=message&subscription_id=eq.get-1&kind=eq.odd&order=message.asc", nil, sb.auth(h))
      assert.are.equal(200, status)
      assert.are.same({ { message = "m1" }, { message = "m3" } }, body)
      status, body = sb.request(h, "GET",
        "/rest/v1/events?select=message&message=in.(m2,%22m4%22)&order=id.asc&limit=1", nil, sb.auth(h))
      assert.are.equal(200, status)
      assert.are.same({ { message = "m2" } }, body)
      status, body = sb.request(h, "GET", "/rest/v1/events?select=*&subscription_id=eq.nobody", nil, sb.auth(h))
      assert.are.equal(200, status)
      assert.are.same({}, body)
      status, body = sb.request(h, "GET", "/rest/v1/events?nosuch=eq.1", nil, sb.auth(h))
      assert.are.equal(400, status)
      assert.are.equal("42703", body.code)
      -- A value is data, never SQL.
      status, body = sb.request(h, "GET", "/rest/v1/events?select=id&message=eq.x%27%3B%20drop%20table%20events%3B--",
        nil, sb.auth(h))
      assert.are.equal(200, status)
      assert.are.same({}, body)
      assert.are.equal(1, #sb.query(h, "select 1 from pg_class where relname = 'events'"))
    end)

    it("keeps the connection alive between requests", function()
      local s = raw_connect(h)
      local ok, err = pcall(function()
        assert(raw_send(s, h, "GET", "/rest/v1/instances?select=subscription_id&subscription_id=eq.up-1"))
        local status, headers, body = raw_read(s)
        assert.are.equal(200, status)
        assert.is_nil(headers["connection"])
        assert.are.same({ { subscription_id = "up-1" } }, cjson.decode(body))
        local row = cjson.encode({ subscription_id = "ka-1", kind = "keepalive" })
        assert(raw_send(s, h, "POST", "/rest/v1/events", row))
        status = raw_read(s)
        assert.are.equal(201, status)
        assert(raw_send(s, h, "GET", "/rest/v1/events?select=kind&subscription_id=eq.ka-1"))
        local st, _, b = raw_read(s)
        assert.are.equal(200, st)
        assert.are.same({ { kind = "keepalive" } }, cjson.decode(b))
      end)
      s:close()
      assert(ok, err)
    end)

    it("serves another connection while one is idle", function()
      local idle = raw_connect(h)
      local status = sb.request(h, "GET", "/rest/v1/instances?select=subscription_id&limit=1", nil, sb.auth(h))
      idle:close()
      assert.are.equal(200, status)
    end)

    it("injects 500s for the next N requests", function()
      sb.reset_requests(h)
      sb.fault(h, "500", 2)
      local s1, b1 = sb.request(h, "GET", "/rest/v1/instances?limit=1", nil, sb.auth(h))
      local s2 = sb.request(h, "POST", "/rest/v1/events", { subscription_id = "f-1", kind = "x" }, sb.auth(h))
      local s3 = sb.request(h, "GET", "/rest/v1/instances?limit=1", nil, sb.auth(h))
      assert.are.same({ 500, 500, 200 }, { s1, s2, s3 })
      assert.are.equal("XX000", b1.code)
      assert.are.equal(0, #sb.rows(h, "events", { subscription_id = "f-1" }))
      local seen = sb.requests(h)
      assert.are.equal(3, #seen)
      assert.are.equal("500", seen[1].fault)
      assert.are.equal("POST", seen[2].method)
      assert.are.same({ subscription_id = "f-1", kind = "x" }, cjson.decode(seen[2].body))
      assert.is_true(seen[2].apikey)
      assert.is_true(seen[2].apikey_ok)
      assert.is_true(seen[2].authorization_ok)
      assert.are.equal("<redacted>", seen[2].headers.apikey)
      assert.are.equal(200, seen[3].status)
    end)

    it("holds a request without answering in timeout mode", function()
      sb.fault(h, "timeout", 1)
      local s = raw_connect(h)
      s:settimeout(0.5)
      assert(raw_send(s, h, "GET", "/rest/v1/instances?limit=1"))
      local status, err = raw_read(s)
      s:close()
      assert.is_nil(status)
      assert.are.equal("timeout", err)
      assert.are.equal(200, (sb.request(h, "GET", "/rest/v1/instances?limit=1", nil, sb.auth(h))))
    end)

    it("drops the connection in close mode", function()
      sb.fault(h, "close", 1)
      local s = raw_connect(h)
      assert(raw_send(s, h, "GET", "/rest/v1/instances?limit=1"))
      local status, err = raw_read(s)
      s:close()
      assert.is_nil(status)
      assert.are.equal("closed", err)
      assert.are.equal(200, (sb.request(h, "GET", "/rest/v1/instances?limit=1", nil, sb.auth(h))))
    end)

    it("keeps a fault until it is set back to ok when no count is given", function()
      sb.fault(h, "503")
      local s1, b1 = sb.request(h, "GET", "/rest/v1/instances?limit=1", nil, sb.auth(h))
      local s2 = sb.request(h, "GET", "/rest/v1/instances?limit=1", nil, sb.auth(h))
      sb.fault(h, "ok")
      local s3 = sb.request(h, "GET", "/rest/v1/instances?limit=1", nil, sb.auth(h))
      assert.are.same({ 503, 503, 200 }, { s1, s2, s3 })
      assert.are.equal("PGRST000", b1.code)
    end)

    it("restarts on the same port", function()
      local port = h.port
      sb.restart_gateway(h)
      assert.are.equal(port, h.port)
      local status, body = sb.request(h, "GET", "/rest/v1/instances?select=status&subscription_id=eq.up-1", nil,
        sb.auth(h))
      assert.are.equal(200, status)
      assert.are.same({ { status = "running" } }, body)
      assert.are.equal(1, #sb.requests(h)) -- a new process starts with an empty log
    end)
  end)
end)
