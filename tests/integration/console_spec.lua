-- The web console (ui/, issue 17 item 2) in a real headless browser:
-- Debian's Chromium driven through chromedriver (tests/integration/
-- webdriver.lua) against the real binary, on a simulated Dokku (sshd +
-- tests/fixtures/dokku-sim) whose faults make one provision fail and
-- another last. With API keys set, the console asks for the key and keeps
-- it out of every URL; without keys it asks nothing. Screenshots of each
-- page go to <build>/screenshots/ for a reviewer to look at.
local H = require "harness"
local D = require "dokku_harness"
local W = require "webdriver"

local KEY = "console-browser-key-7f3a9c"
local AUTH = { Authorization = "Bearer " .. KEY }
local tools, missing = W.find()

-- <build>/screenshots, beside the binary under test.
local SHOTS = (H.bin:match("^(.*)/[^/]+$") or ".") .. "/screenshots"
os.execute("mkdir -p " .. H.sh_quote(SHOTS))

describe("web console in a browser #integration", function()
  if not tools then
    pending("SKIPPED: " .. missing)
    return
  end

  local srv, h, b

  setup(function()
    h = D.start()
    D.set_faults(h, {
      { match = "git:from%-image mr%-subfail", action = "fail", exit = 1,
        stderr = "image pull failed: manifest unknown", times = 1 },
      -- the slow job: each of these holds its step ~1.5 s, so the step log
      -- moves while the page watches it
      { match = "config:set .*mr%-subslow", action = "delay", ms = 1500, times = 2 },
      { match = "git:from%-image mr%-subslow", action = "delay", ms = 1500, times = 2 },
      { match = "letsencrypt:enable mr%-subslow", action = "delay", ms = 1500, times = 2 },
    })
    srv = H.start({ env = D.mrprov_env(h, { PROVISIONER_API_KEYS = KEY, UI_DIR = H.root .. "/ui" }) })
    for _, sub in ipairs({ "sub_ok1", "sub_ok2", "sub_fail" }) do
      local code = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = sub, tier = sub == "sub_ok2" and "starter" or "free", account_id = "acct_" .. sub },
        { Authorization = AUTH.Authorization, Prefer = "wait=60" })
      assert.are.equal(200, code)
    end
    b = W.start(tools, { dir = H.tmpdir() })
  end)

  teardown(function()
    if b then b:quit() end
    H.cleanup()
    D.stop(h)
  end)

  it("asks for the key, then shows the instance table with counts", function()
    b:go(srv.base .. "/ui/")
    b:wait("the key dialog", "return document.getElementById('key-dialog').open")
    b:screenshot(SHOTS .. "/01-key-prompt.png")
    b:type("#key-input", KEY)
    b:click("#key-save")
    b:wait("the instance table", "return document.querySelectorAll('#instances tbody tr').length === 3")
    local subs = b:run("return [...document.querySelectorAll('#instances tbody tr')].map(r => r.dataset.sub).sort()")
    assert.are.same({ "sub_fail", "sub_ok1", "sub_ok2" }, subs)
    local chips = b:run("return document.querySelector('[data-test=counts]').textContent")
    assert.matches("running 2", chips, 1, true)
    assert.matches("failed 1", chips, 1, true)
    assert.is_true(b:run("return sessionStorage.getItem('mrprov.api_key') === arguments[0]", KEY))
    assert.is_false(b:run("return localStorage.length > 0 || document.cookie !== ''"))
    b:screenshot(SHOTS .. "/02-instances.png")
    -- a filter: the status chip narrows the table
    b:click("button.chip[data-status=failed]")
    b:wait("the failed filter", "return location.hash.includes('status=failed') && "
      .. "document.querySelectorAll('#instances tbody tr').length === 1")
  end)

  it("shows a running job's step log advancing live", function()
    local code, r = H.request(srv, "POST", "/api/v1/provision",
      { subscription_id = "sub_slow", tier = "free", account_id = "acct_slow" }, AUTH)
    assert.are.equal(202, code)
    b:go(srv.base .. "/ui/#/instance/sub_slow")
    b:wait("the live step log", "return document.querySelector('.steplog .live') !== null && "
      .. "document.querySelectorAll('.steplog li').length > 0", 15)
    local first = b:run("return Number(document.querySelector('[data-test=steps-done]').textContent)")
    -- the same page, not reloaded: the log moves on by polling
    b:run("window.__samePage = true")
    b:wait("a later step", "return window.__samePage && "
      .. "Number(document.querySelector('[data-test=steps-done]').textContent) > arguments[0]", 20, first)
    b:screenshot(SHOTS .. "/03-instance-live.png")
    b:wait("the job's end", "return window.__samePage && document.querySelector('.steplog .live') === null && "
      .. "document.querySelector('.steplog .badge').textContent === 'succeeded'", 30)
    local _, j = H.request(srv, "GET", "/api/v1/jobs/" .. r.job_id, nil, AUTH)
    assert.are.equal("succeeded", j.state)
    assert.are.equal(j.steps_total, b:run("return document.querySelectorAll('.steplog li[data-state=done]').length"))
  end)

  it("lists the failed job with its error and failed step, and asks before a retry", function()
    b:go(srv.base .. "/ui/#/jobs?state=failed")
    b:wait("the failed job", "return document.querySelectorAll('tr[data-state=failed]').length === 1")
    local err = b:run("return document.querySelector('tr[data-state=failed] [data-test=job-error]').textContent")
    assert.matches("image pull failed: manifest unknown", err, 1, true)
    assert.matches("git:from-image mr-subfail", err, 1, true)
    b:screenshot(SHOTS .. "/04-jobs-failed.png")

    local _, before = H.request(srv, "GET", "/api/v1/jobs?subscription_id=sub_fail", nil, AUTH)
    b:click("tr[data-state=failed] button[data-action=retry]")
    b:wait("the confirmation", "return document.getElementById('confirm-dialog').open")
    assert.matches("again", b:run("return document.getElementById('confirm-text').textContent"))
    b:screenshot(SHOTS .. "/05-confirm-retry.png")
    b:click("#confirm-cancel")
    b:wait("the dialog closed", "return !document.getElementById('confirm-dialog').open")
    local _, after = H.request(srv, "GET", "/api/v1/jobs?subscription_id=sub_fail", nil, AUTH)
    assert.are.equal(before.total, after.total, "a cancelled retry queued a job")

    b:click("tr[data-state=failed] button[data-action=retry]")
    b:wait("the confirmation", "return document.getElementById('confirm-dialog').open")
    b:click("#confirm-ok")
    H.eventually("the retried job", function()
      local _, l = H.request(srv, "GET", "/api/v1/jobs?subscription_id=sub_fail", nil, AUTH)
      return l.total == before.total + 1 and l.jobs[1].state == "succeeded", l.jobs[1].state
    end, 30)
  end)

  it("asks before stopping an instance", function()
    b:go(srv.base .. "/ui/#/instance/sub_ok1")
    b:wait("the actions", "return document.querySelector('button[data-action=stop]') !== null")
    b:click("button[data-action=stop]")
    b:wait("the confirmation", "return document.getElementById('confirm-dialog').open")
    b:click("#confirm-cancel")
    local _, st = H.request(srv, "GET", "/api/v1/status/sub_ok1", nil, AUTH)
    assert.are.equal("running", st.status)
  end)

  it("shows health: Dokku, Supabase and the outbox, the configuration, reconcile", function()
    b:go(srv.base .. "/ui/#/health")
    b:wait("the health cards", "return document.querySelectorAll('[data-test]').length >= 4 && "
      .. "document.querySelector('[data-test=dokku]').textContent.includes('ssh')")
    local t = b:run("return document.getElementById('view').textContent")
    assert.matches("Outbox pending", t, 1, true)
    assert.matches("Generation", t, 1, true)
    assert.matches("Reconcile now", t, 1, true)
    b:screenshot(SHOTS .. "/06-health.png")
    b:click("button[data-action=reload]")
    b:wait("the confirmation", "return document.getElementById('confirm-dialog').open")
    b:click("#confirm-ok")
    b:wait("the reload's outcome", "return document.querySelector('[data-test=config]') && "
      .. "document.querySelector('[data-test=config]').textContent.includes('success')", 10)
  end)

  it("reads on a narrow screen and in the dark theme", function()
    b:resize(390, 844)
    b:cdp("Emulation.setEmulatedMedia", { features = { { name = "prefers-color-scheme", value = "dark" } } })
    b:go(srv.base .. "/ui/#/instances")
    b:wait("the table", "return document.querySelectorAll('#instances tbody tr').length === 4")
    -- the page itself does not scroll sideways (the table scrolls in its box)
    assert.is_true(b:run("return document.documentElement.scrollWidth <= window.innerWidth + 1"))
    local bg = b:run("return getComputedStyle(document.body).backgroundColor")
    assert.are.equal("rgb(17, 19, 23)", bg)
    b:screenshot(SHOTS .. "/07-instances-narrow-dark.png")
    b:go(srv.base .. "/ui/#/instance/sub_slow")
    b:wait("the steps", "return document.querySelectorAll('.steplog li').length > 0")
    b:screenshot(SHOTS .. "/08-instance-narrow-dark.png")
    b:resize(1280, 900)
    b:cdp("Emulation.setEmulatedMedia", { features = { { name = "prefers-color-scheme", value = "light" } } })
  end)

  it("never put the key in a URL, and the CSP held", function()
    local urls = b:requested_urls()
    assert.is_true(#urls > 10, "the network log is empty")
    local api = 0
    for _, u in ipairs(urls) do
      assert.is_nil(u:find(KEY, 1, true), "the key in a URL: " .. u)
      if u:find("/api/v1/", 1, true) then api = api + 1 end
    end
    assert.is_true(api > 5)
    -- nor in mrprov's log
    assert.is_nil(H.log_text(srv):find(KEY, 1, true))
    for _, m in ipairs(b:console()) do
      assert.is_nil(m:find("Content Security Policy", 1, true), m)
    end
  end)
end)

describe("web console without API keys #integration", function()
  if not tools then
    pending("SKIPPED: " .. missing)
    return
  end

  local b
  teardown(function()
    if b then b:quit() end
    H.cleanup()
  end)

  it("asks for no key and shows the dry-run instances", function()
    local srv = H.start({ env = { UI_DIR = H.root .. "/ui" } })
    for _, sub in ipairs({ "sub_d1", "sub_d2" }) do
      assert.are.equal(200, (H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = sub, tier = "free", account_id = "acct" }, { Prefer = "wait=30" })))
    end
    b = W.start(tools, { dir = H.tmpdir() })
    b:go(srv.base .. "/ui/")
    b:wait("the table", "return document.querySelectorAll('#instances tbody tr').length === 2")
    assert.is_false(b:run("return document.getElementById('key-dialog').open"))
    b:go(srv.base .. "/ui/#/health")
    b:wait("dry-run", "return document.querySelector('[data-test=dokku]') && "
      .. "document.querySelector('[data-test=dokku]').textContent.includes('dry-run')")
    b:screenshot(SHOTS .. "/09-health-dry-run.png")
    H.stop(srv)
  end)
end)

-- The Rollouts view (issue 18 item 4) on the mindroom profile (the image a
-- rollout moves is its MindRoom app's; readiness asks the loopback health
-- server): four instances, one pinned from its instance page, one whose
-- deploy of the new image fails with a hostile error text. The rollout's
-- first wave takes three, then waits an hour before the second: it stays
-- running while the page shows it and its pause button is pressed.
describe("web console: rollouts #integration", function()
  if not tools then
    pending("SKIPPED: " .. missing)
    return
  end

  local V2 = "ghcr.io/mindroom-ai/mindroom:v2026.12.1"
  local HOSTILE = '<img src=x onerror="window.__xss=1">'
  local h, srv, health, b
  local apps = {}

  setup(function()
    h = D.start()
    health = H.health_server("ok", { sim_state = h.state })
    srv = H.start({ env = D.mrprov_env(h, { PROFILE = "mindroom", PROVISIONER_API_KEYS = KEY,
      UI_DIR = H.root .. "/ui", HEALTH_URL_TEMPLATE = "http://127.0.0.1:" .. health.port .. "/{app}{path}",
      HEALTH_TIMEOUT_SECONDS = "2", HEALTH_REQUEST_TIMEOUT = "1" }) })
    for _, sub in ipairs({ "sub_ra", "sub_rb", "sub_rc", "sub_rd" }) do
      local code, j = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = sub, tier = "free", account_id = "acct_ro" },
        { Authorization = AUTH.Authorization, Prefer = "wait=60" })
      assert.are.equal(200, code)
      apps[sub] = j.app_name
    end
    -- from now on, sub_rb's deploy of a new image fails, saying something hostile
    -- (the mindroom profile deploys a build context: git:from-archive … APP --)
    D.set_faults(h, { { match = "git:from%-%a+ .*" .. apps.sub_rb:gsub("%-", "%%-") .. " ", action = "fail",
      exit = 1, stderr = "manifest unknown: " .. HOSTILE, times = 20 } })
    b = W.start(tools, { dir = H.tmpdir() })
  end)

  teardown(function()
    if b then b:quit() end
    if health then health.stop() end
    H.cleanup()
    D.stop(h)
  end)

  local function rollout(id)
    local code, r = H.request(srv, "GET", "/api/v1/rollouts/" .. id, nil, AUTH)
    assert.are.equal(200, code)
    return r
  end

  it("pins an instance from its page", function()
    b:go(srv.base .. "/ui/#/instance/sub_rc")
    b:wait("the key dialog", "return document.getElementById('key-dialog').open")
    b:type("#key-input", KEY)
    b:click("#key-save")
    b:wait("the pin button", "return document.querySelector('button[data-action=pin]') !== null && "
      .. "document.querySelector('[data-test=pinned]').textContent === 'no'")
    b:click("button[data-action=pin]")
    b:wait("the pinned instance", "return document.querySelector('button[data-action=unpin]') !== null && "
      .. "document.querySelector('[data-test=pinned]').textContent === 'pinned'", 10)
    local _, st = H.request(srv, "GET", "/api/v1/status/sub_rc", nil, AUTH)
    assert.is_true(st.pinned)
  end)

  it("lists the rollout, shows it per wave and per instance, pauses it and asks before an abort", function()
    -- pinned by the test above; again here (a pin is idempotent) so this test stands alone
    assert.are.equal(200, (H.request(srv, "POST", "/api/v1/instances/sub_rc/pin", nil, AUTH)))
    local code, r = H.request(srv, "POST", "/api/v1/rollouts", { image = V2, waves = { 3, "100%" }, parallel = 3,
      failure_budget = 1, pause_seconds = 3600 }, AUTH)
    assert.are.equal(201, code)
    local id = r.id
    -- the first wave settles: changed, failed (hostile error), skipped (pinned)
    H.wait_for(srv, "/api/v1/rollouts/" .. id, function(x)
      return x.state == "running" and x.wave == 2 and (x.counts.done or 0) == 1 and (x.counts.failed or 0) == 1
        and (x.counts.skipped or 0) == 1
    end, 60, AUTH)

    b:go(srv.base .. "/ui/#/rollouts")
    b:wait("the rollout's row", "return document.querySelector('#rollouts tr[data-rollout=\"' + arguments[0] + "
      .. "'\"][data-state=running]') !== null", 10, id)
    local row = b:run("return document.querySelector('#rollouts tr[data-rollout]').textContent")
    assert.matches(V2, row, 1, true)
    assert.matches("1 changed · 1 failed · 1 skipped / 4", row, 1, true)
    assert.matches("1 of 1 used", row, 1, true)
    b:screenshot(SHOTS .. "/10-rollouts.png")

    b:click("#rollouts tr[data-rollout] a")
    b:wait("the rollout's instances",
      "return document.querySelectorAll('#rollout-instances tr[data-sub]').length === 4")
    local states = b:run("const o = {}; document.querySelectorAll('#rollout-instances tr[data-sub]')"
      .. ".forEach(r => { o[r.dataset.sub] = r.dataset.state; }); return o")
    assert.are.same({ sub_ra = "done", sub_rb = "failed", sub_rc = "skipped", sub_rd = "pending" }, states)
    assert.are.equal(2, b:run("return document.querySelectorAll('#rollout-waves tr[data-wave]').length"))
    local skipped = b:run("return document.querySelector('tr[data-sub=sub_rc] [data-test=step-error]').textContent")
    assert.matches("pinned", skipped, 1, true)
    -- the hostile error is text: shown as written, never an element
    local err = b:run("return document.querySelector('tr[data-sub=sub_rb] [data-test=step-error]').textContent")
    assert.matches(HOSTILE, err, 1, true)
    assert.is_true(b:run("return document.querySelector('#view img') === null && window.__xss === undefined"))
    b:screenshot(SHOTS .. "/11-rollout.png")
    b:run("document.getElementById('rollout-instances').scrollIntoView()")
    b:screenshot(SHOTS .. "/12-rollout-instances.png")

    -- pause: at once, on the same page
    b:run("window.__samePage = true")
    assert.is_true(b:run("return document.querySelector('button[data-action=resume]') === null"))
    b:click("button[data-action=pause]")
    H.eventually("the paused rollout", function() return rollout(id).state == "paused" end, 10)
    b:wait("the paused page", "return window.__samePage && "
      .. "document.querySelector('[data-test=rollout-state]').textContent === 'paused' && "
      .. "document.querySelector('button[data-action=resume]') !== null && "
      .. "document.querySelector('button[data-action=pause]') === null", 10)

    -- abort asks first: cancelled, nothing changes; confirmed, it is aborted
    b:click("button[data-action=abort]")
    b:wait("the confirmation", "return document.getElementById('confirm-dialog').open")
    assert.matches("Abort rollout " .. id, b:run("return document.getElementById('confirm-text').textContent"), 1, true)
    b:click("#confirm-cancel")
    b:wait("the dialog closed", "return !document.getElementById('confirm-dialog').open")
    assert.are.equal("paused", rollout(id).state)
    b:click("button[data-action=abort]")
    b:wait("the confirmation", "return document.getElementById('confirm-dialog').open")
    b:click("#confirm-ok")
    H.eventually("the aborted rollout", function() return rollout(id).state == "aborted" end, 10)
    b:wait("the aborted page",
      "return document.querySelector('[data-test=rollout-state]').textContent === 'aborted' && "
      .. "[...document.querySelectorAll('.actions button')].map(b => b.dataset.action).join() === 'rollback'", 10)
    b:screenshot(SHOTS .. "/13-rollout-aborted.png")
    -- on a phone's width the page does not scroll sideways (tables scroll in their box)
    b:resize(390, 844)
    b:go(srv.base .. "/ui/#/rollout/" .. id)
    b:wait("the narrow page", "return document.querySelectorAll('#rollout-instances tr[data-sub]').length === 4")
    assert.is_true(b:run("return document.documentElement.scrollWidth <= window.innerWidth + 1"))
    b:screenshot(SHOTS .. "/14-rollout-narrow.png")
    b:resize(1280, 900)
    -- the Jobs page: the rollout driver's jobs link to their rollout, not to
    -- an instance page that does not exist
    b:go(srv.base .. "/ui/#/jobs")
    b:wait("the driver's job row",
      [[return document.querySelector('table.jobs a[href="#/rollout/' + arguments[0] + '"]') !== null]], 10, id)
    assert.are.equal(0, b:run([[return document.querySelectorAll('table.jobs a[href^="#/instance/_"]').length]]))
    for _, m in ipairs(b:console()) do
      assert.is_nil(m:find("Content Security Policy", 1, true), m)
    end
  end)
end)
