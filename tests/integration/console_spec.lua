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
