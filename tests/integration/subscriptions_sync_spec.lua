-- Integration: missed webhooks. The real binary (sshd + Dokku simulator,
-- split profile) with Supabase's webhooks off (no WEBHOOK_SECRET, the
-- trigger disabled) reads the subscriptions table of a real PostgreSQL
-- through the PostgREST-compatible gateway and converges on it: rows are
-- inserted, updated and cancelled directly in PostgreSQL, and one sync
-- provisions, updates, suspends (lua/lifecycle.lua), resumes and
-- deprovisions as they say, at most
-- RECONCILE_MAX_DESTRUCTIVE (3) deprovisions per run, the fourth reported.
local H = require "harness"
local D = require "dokku_harness"
local SB = require "supabase_harness"

describe("subscriptions sync #integration", function()
  local h, sb, srv

  setup(function()
    h = D.start()
    sb = SB.start({ tables = "instances,events,backups,subscriptions" })
    -- webhooks disabled: nothing but the sync tells mrprov about these rows
    SB.query(sb, "alter table public.subscriptions disable trigger mrprov_subscription_webhook")
    srv = H.start({ env = D.mrprov_env(h, {
      SUPABASE_URL = sb.url, SUPABASE_SERVICE_KEY = sb.key, RECONCILE_MAX_DESTRUCTIVE = "3",
      HEALTH_TIMEOUT_SECONDS = "0", WORKERS = "2",
    }) })
  end)

  teardown(function()
    H.cleanup()
    if sb then SB.stop(sb) end
    D.stop_all()
  end)

  local function sql(s) return SB.query(sb, s) end

  local function sync(body)
    local code, j, raw = H.request(srv, "POST", "/api/v1/subscriptions/sync", body or {})
    assert.are.equal(200, code, raw)
    return j
  end

  local function status_of(sub)
    local code, j = H.request(srv, "GET", "/api/v1/status/" .. sub)
    if code ~= 200 then return nil end
    return j
  end

  local function wait_status(sub, want, timeout)
    return H.eventually(sub .. " " .. want, function()
      local s = status_of(sub)
      return s and s.status == want, s and s.status
    end, timeout or 60)
  end

  local SUBS = { "sub_up", "sub_pd", "sub_c1", "sub_c2", "sub_c3", "sub_c4" }

  it("provisions every active subscription it has no instance of, and skips a row it cannot read", function()
    for _, id in ipairs(SUBS) do
      sql("insert into public.subscriptions (id, account_id, tier, status) values ('" .. id .. "', 'acc_1', 'free', "
        .. "'active')")
    end
    sql("insert into public.subscriptions (id, tier, status) values ('sub_odd', 'free', 'on hold')")
    sql("insert into public.subscriptions (id, tier, status) values ('sub_gold', 'gold', 'trialing')")
    sql("insert into public.subscriptions (id, tier, status) values ('sub_none', 'free', 'cancelled')")
    -- a dry run plans without acting
    local plan = sync({ dry_run = true })
    assert.are.equal(6, plan.provisioned)
    assert.is_nil(status_of("sub_up"))
    local r = sync()
    assert.are.equal(9, r.read)
    assert.is_true(r.complete)
    assert.are.same({}, r.errors)
    assert.are.equal(6, r.provisioned)
    assert.are.equal(1, r.unchanged)
    assert.are.equal(2, r.skipped_total)
    local reasons = {}
    for _, s in ipairs(r.skipped) do reasons[s.id] = s.reason end
    assert.matches("unknown status", reasons.sub_odd, 1, true)
    assert.matches("unknown tier gold", reasons.sub_gold, 1, true)
    for _, id in ipairs(SUBS) do wait_status(id, "running") end
    assert.is_nil(status_of("sub_odd"))
    assert.is_nil(status_of("sub_gold"))
    -- converged: the next sync starts nothing
    local again = sync()
    assert.are.equal(0, again.provisioned + again.updated + again.deprovisioned)
    assert.are.equal(7, again.unchanged)
  end)

  it("updates a changed tier and deprovisions cancelled subscriptions with a backup, three per run", function()
    local apps = {}
    for _, id in ipairs(SUBS) do apps[id] = status_of(id).app_name end
    sql("update public.subscriptions set tier = 'starter' where id = 'sub_up'")
    sql("update public.subscriptions set status = 'cancelled' where id in ('sub_c1', 'sub_c2', 'sub_c3', 'sub_c4')")
    sql("insert into public.subscriptions (id, tier, status) values ('sub_new', 'free', 'trialing')")
    local r = sync()
    assert.are.same({}, r.errors)
    assert.are.equal(1, r.provisioned)
    assert.are.equal(1, r.updated)
    assert.are.equal(3, r.deprovisioned)
    assert.are.equal(3, r.max_destructive)
    assert.are.same({ "sub_c4" }, r.deferred_destructive)
    wait_status("sub_new", "running")
    H.eventually("sub_up on starter", function()
      local s = status_of("sub_up")
      return s.status == "running" and s.tier == "starter", s.status .. "/" .. tostring(s.tier)
    end, 60)
    for _, id in ipairs({ "sub_c1", "sub_c2", "sub_c3" }) do wait_status(id, "deprovisioned") end
    local state = D.state(h)
    for _, id in ipairs({ "sub_c1", "sub_c2", "sub_c3" }) do
      assert.is_nil(state.apps[apps[id]], id .. "'s app is gone")
      -- the deprovision took a backup, as a webhook's does
      H.eventually(id .. " backup row", function() return #SB.rows(sb, "backups", { subscription_id = id }) > 0 end, 20)
    end
    -- the fourth cancellation is reported, not carried out
    assert.are.equal("running", status_of("sub_c4").status)
    assert.is_table(state.apps[apps.sub_c4])
    assert.are.equal("running", status_of("sub_pd").status)
    -- read with the service key (kept in C), keyset-paged on the id; the key never logged
    local reads = 0
    for _, q in ipairs(SB.requests(sb)) do
      if q.method == "GET" and q.path:match("^/rest/v1/subscriptions%?") then
        reads = reads + 1
        assert.is_true(q.apikey_ok and q.authorization_ok)
        assert.matches("order=id.asc", q.path, 1, true)
      end
    end
    assert.is_true(reads >= 4)
    assert.is_nil(H.log_text(srv):find(sb.key, 1, true))
  end)

  it("suspends a past-due subscription's instance through the lifecycle, and resumes it", function()
    sql("update public.subscriptions set status = 'past_due' where id = 'sub_pd'")
    local r = sync()
    assert.are.same({}, r.errors)
    assert.are.equal(1, r.suspended)
    wait_status("sub_pd", "suspended")
    assert.are.equal(0, sync().suspended, "a suspended instance is not suspended again")
    -- a tier change while suspended is recorded, and applied by the resume
    sql("update public.subscriptions set tier = 'starter' where id = 'sub_pd'")
    local r1 = sync()
    assert.are.same({}, r1.errors)
    assert.are.equal("suspended", status_of("sub_pd").status)
    assert.are.equal("free", status_of("sub_pd").tier)
    sql("update public.subscriptions set status = 'active' where id = 'sub_pd'")
    local r2 = sync()
    assert.are.equal(1, r2.resumed)
    H.eventually("sub_pd resumed on starter", function()
      local s = status_of("sub_pd")
      return (s.status == "running" or s.status == "starting") and s.tier == "starter", s.status .. "/" .. s.tier
    end, 60)
  end)
end)
