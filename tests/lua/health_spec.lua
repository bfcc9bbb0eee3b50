-- lua/health.lua: the HEALTH_URL_TEMPLATE rules, the URL checked, the
-- backoff, and what a deploy's success does about readiness (the check's
-- runs themselves go through the real binary in tests/integration/health_spec.lua).
local fakes = require "fakes"
fakes.install()
-- the store is not used by what this spec calls (busted insulates spec files)
package.loaded["mrprov.store"] = package.loaded["mrprov.store"]
  or { query = function() return {} end, exec = function() return true end }
local generation = require "generation"
local health = require "health"

describe("health", function()
  local settings

  before_each(function()
    settings = { health_timeout = 300, health_request_timeout = 5, health_recheck_interval = 300 }
    generation.set({ settings = settings, tiers = {}, profiles = {}, hooks = {} })
  end)

  it("accepts a template with the known placeholders only", function()
    assert.truthy(health.template_ok("http://10.0.0.5/{app}/api/ready"))
    assert.truthy(health.template_ok("https://{domain}{path}?sub={subscription_id}"))
    for _, bad in ipairs({ "ftp://x/{app}", "http:///x", "http://x/{apps}", "http://x/{app", "http://x/}",
                           "http://x/ {app}", "http://x/\n", "/{app}/api/ready", ("http://x/" .. ("a"):rep(1100)) }) do
      assert.is_nil(health.template_ok(bad), bad)
    end
    local _, why = health.template_ok("http://x/{secret}")
    assert.matches("unknown placeholder {secret}", why)
  end)

  it("checks https://{domain}{path} of the first app with `health`, or the template filled", function()
    local state = { apps = {
      { name = "mr-a", role = "main" },
      { name = "mr-a-gone", role = "old", absent = true, health = { path = "/x" } },
      { name = "mr-a-web", role = "web", domains = { "a.example.org", "b.example.org" },
        health = { path = "/api/ready" } },
    } }
    local t = health.target(state)
    assert.are.same({ app = "mr-a-web", path = "/api/ready", domain = "a.example.org" }, t)
    assert.are.equal("https://a.example.org/api/ready", health.url(t, "sub_1", settings))
    settings.health_url_template = "http://127.0.0.1:9/{app}/{subscription_id}/{domain}{path}"
    assert.are.equal("http://127.0.0.1:9/mr-a-web/sub_1/a.example.org/api/ready", health.url(t, "sub_1", settings))
    settings.health_url_template = nil
    local none, why = health.url({ app = "mr-a", path = "/r" }, "sub_1", settings)
    assert.is_nil(none)
    assert.matches("no domain", why)
    assert.is_nil(health.target({ apps = { { name = "mr-a", role = "main" } } }))
  end)

  it("fills {host} and {host_address} with the instance's Dokku host", function()
    assert.truthy(health.template_ok("http://{host_address}:8080/{host}/{app}{path}"))
    assert.is_true(health.addresses_host("http://{host}.internal/{app}{path}"))
    assert.is_true(health.addresses_host("http://{host_address}/{app}{path}"))
    assert.is_false(health.addresses_host("http://127.0.0.1/{app}{path}"))
    assert.is_false(health.addresses_host(nil))
    generation.set({ settings = settings, tiers = {}, profiles = {}, hooks = {},
                     hosts = { { name = "eu1", host = "10.0.0.7" }, { name = "us1", host = "dokku-us.internal" } } })
    settings.health_url_template = "http://{host_address}/{host}/{app}{path}"
    local t = { app = "mr-a", path = "/api/ready" }
    assert.are.equal("http://dokku-us.internal/us1/mr-a/api/ready",
      health.url(t, "sub_1", settings, health.host_of("us1", generation.current())))
    assert.are.equal("http://10.0.0.7/eu1/mr-a/api/ready",
      health.url(t, "sub_1", settings, health.host_of("eu1", generation.current())))
    -- without host files: the implicit host, "default", at DOKKU_HOST
    generation.set({ settings = settings, tiers = {}, profiles = {}, hooks = {} })
    local h = health.host_of(nil, generation.current())
    assert.are.equal("default", h.name)
    assert.matches("^http://[^/]*/default/mr%-a/api/ready$", health.url(t, "sub_1", settings, h))
  end)

  it("backs off 1, 2, 4 ... s, capped by a quarter of the bound and by the deadline", function()
    assert.are.equal(1, health.backoff(1, 300, 300))
    assert.are.equal(2, health.backoff(2, 300, 300))
    assert.are.equal(30, health.backoff(10, 300, 300))
    assert.are.equal(5, health.backoff(10, 20, 20))
    assert.are.equal(1, health.backoff(10, 2, 2))
    assert.are.equal(0.5, health.backoff(3, 300, 0.5))
  end)

  it("after a deploy: starting with a check, running without `health`, skipped in dry-run or with a 0 bound", function()
    local state = { apps = { { name = "mr-a", role = "main", domains = { "a.example.org" },
                               health = { path = "/r" } } } }
    local inst = { subscription_id = "sub_1", app_name = "mr-a" }
    local r = health.after_deploy(inst, state, false)
    assert.are.equal("starting", inst.status)
    assert.are.equal("starting", inst.health_state)
    assert.are.equal("https://a.example.org/r", r.check.url)
    assert.are.equal(300, r.check.bound)

    r = health.after_deploy(inst, state, true)
    assert.are.equal("running", inst.status)
    assert.are.equal("skipped", inst.health_state)
    assert.matches("dry%-run", r.note)
    assert.is_nil(r.check)

    settings.health_timeout = 0
    r = health.after_deploy(inst, state, false)
    assert.are.equal("running", inst.status)
    assert.matches("HEALTH_TIMEOUT_SECONDS is 0", r.note)

    r = health.after_deploy(inst, { apps = { { name = "mr-a", role = "main" } } }, false)
    assert.are.equal("running", inst.status)
    assert.is_nil(inst.health_state)
    assert.is_nil(r.note)
  end)

  it("one check: 200 is running; a 503 before the deadline re-queues; after it, unhealthy with the answer", function()
    local url = "http://127.0.0.1:9/mr-a/r"
    local job = { id = "job_1", attempts = 1, request = { url = url, deadline = 100, bound = 60 } }
    fakes.http_answers = { [url] = { 503, "busy: postgres://u:hunter2@db/x\n" .. ("x"):rep(1000) } }
    local fields, inst = health.step(job, { status = "starting", app_name = "mr-a" }, 50)
    assert.are.equal("queued", fields.state)
    assert.is_string(fields.not_before)
    assert.matches("^health: HTTP 503: busy:", fields.waiting_for)
    assert.are.equal("starting", inst.status)
    assert.is_nil(inst.health_error:find("hunter2", 1, true))
    assert.is_true(#inst.health_error < 400)

    local event
    fields, inst, event = health.step(job, { status = "starting", app_name = "mr-a" }, 100)
    assert.are.equal("unhealthy", inst.status)
    assert.matches("^not ready after 60 s: HTTP 503", inst.error)
    assert.are.equal("health_failed", event.kind)
    assert.are.equal("queued", fields.state) -- re-checked every HEALTH_RECHECK_INTERVAL
    settings.health_recheck_interval = 0
    fields = health.step(job, { status = "unhealthy", app_name = "mr-a" }, 100)
    assert.are.equal("failed", fields.state)

    fakes.http_answers = { [url] = { 200, "ok" } }
    fields, inst = health.step(job, { status = "unhealthy", app_name = "mr-a", error = "old" }, 200)
    assert.are.equal("succeeded", fields.state)
    assert.are.equal("running", inst.status)
    assert.are.equal("healthy", inst.health_state)
    assert.is_nil(inst.error)

    fields, inst = health.step(job, { status = "updating", app_name = "mr-a" }, 200)
    assert.are.equal("succeeded", fields.state)
    assert.is_nil(inst)
    fakes.http_answers = nil
  end)
end)
