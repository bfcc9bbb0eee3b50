-- The console's server side (issue 17 item 2) through the real binary:
-- the static files of /ui and /docs (types, ETag, HEAD, security headers,
-- no key needed, and nothing outside UI_DIR/DOCS_DIR ever served), and the
-- API reads and actions the console needs: GET /api/v1/instances (filters,
-- paging, counts), GET /api/v1/jobs (failed ones with their failed step),
-- POST /api/v1/jobs/{id}/retry, GET /api/v1/system, POST /api/v1/reload,
-- each behind the API key. Failures come from the Dokku simulator's faults
-- (tests/fixtures/dokku-sim, over a real sshd).
local H = require "harness"
local D = require "dokku_harness"
local socket = require "socket"

local KEY = "console-api-key-0123456789"
local AUTH = { Authorization = "Bearer " .. KEY }

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- One raw request; the status and the whole answer (no client normalises
-- the path: "..", "//" and "%2e" reach the server as written).
local function raw(srv, target, method)
  local c = assert(socket.connect("127.0.0.1", srv.port))
  c:settimeout(10)
  c:send((method or "GET") .. " " .. target .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  local text = c:receive("*a")
  c:close()
  return tonumber(text:match("^HTTP/1%.1 (%d+)")), text
end

describe("console API #integration", function()
  local srv, h, docs, ui, outside

  setup(function()
    -- a UI_DIR with a symlink out of it and one within it, and a DOCS_DIR
    -- with a placeholder api.html (the docs helper writes the real one)
    ui = H.tmpdir()
    os.execute("cp -r " .. H.sh_quote(H.root .. "/ui") .. "/. " .. H.sh_quote(ui))
    outside = H.tmpdir()
    write(outside .. "/secret.txt", "outside-secret")
    os.execute("ln -s " .. H.sh_quote(outside .. "/secret.txt") .. " " .. H.sh_quote(ui .. "/leak.txt"))
    os.execute("ln -s " .. H.sh_quote(outside) .. " " .. H.sh_quote(ui .. "/outdir"))
    os.execute("ln -s app.css " .. H.sh_quote(ui .. "/alias.css"))
    write(ui .. "/.hidden", "hidden")
    docs = H.tmpdir()
    write(docs .. "/api.html", "<!doctype html><title>API</title><link rel=stylesheet href=/docs/api.css>")
    write(docs .. "/api.css", "body{}")
    h = D.start()
    D.set_faults(h, { { match = "git:from%-image mr%-subfail", action = "fail", exit = 1,
                        stderr = "image pull failed: manifest unknown", times = 1 } })
    srv = H.start({ env = D.mrprov_env(h, { PROVISIONER_API_KEYS = KEY, UI_DIR = ui, DOCS_DIR = docs }) })
    for _, sub in ipairs({ "sub_ok1", "sub_ok2", "sub_fail" }) do
      local code = H.request(srv, "POST", "/api/v1/provision",
        { subscription_id = sub, tier = sub == "sub_ok2" and "starter" or "free", account_id = "acct_" .. sub },
        { Authorization = AUTH.Authorization, Prefer = "wait=60" })
      assert.are.equal(200, code)
    end
  end)

  teardown(function()
    H.cleanup()
    D.stop(h)
  end)

  describe("static files", function()
    it("serves the console without a key, with its type, ETag and strict headers", function()
      for _, path in ipairs({ "/ui", "/ui/", "/ui/index.html" }) do
        local code, _, body, hd = H.request(srv, "GET", path)
        assert.are.equal(200, code, path)
        assert.are.equal("text/html; charset=utf-8", hd["content-type"])
        assert.matches("<title>mrprov console</title>", body, 1, true)
        local csp = hd["content-security-policy"]
        assert.matches("script-src 'self'", csp, 1, true)
        assert.matches("style-src 'self'", csp, 1, true)
        assert.matches("frame-ancestors 'none'", csp, 1, true)
        assert.matches("base-uri 'none'", csp, 1, true)
        assert.matches("form-action 'none'", csp, 1, true)
        assert.is_nil(csp:find("unsafe", 1, true))
        assert.are.equal("nosniff", hd["x-content-type-options"])
        assert.are.equal("no-referrer", hd["referrer-policy"])
        assert.are.equal("DENY", hd["x-frame-options"])
        assert.are.equal("no-cache", hd["cache-control"])
        assert.matches('^"[0-9a-f]+%-[0-9a-f]+"$', hd.etag)
      end
      local _, _, _, js = H.request(srv, "GET", "/ui/app.js")
      assert.are.equal("text/javascript; charset=utf-8", js["content-type"])
      local _, _, _, css = H.request(srv, "GET", "/ui/app.css")
      assert.are.equal("text/css; charset=utf-8", css["content-type"])
    end)

    it("has no inline script or style in the console's page", function()
      local html = H.read_file(H.root .. "/ui/index.html")
      local scripts = 0
      for attrs, body in html:gmatch("<script([^>]*)>(.-)</script>") do
        scripts = scripts + 1
        assert.matches('src="/ui/', attrs, 1, true)
        assert.are.equal("", body)
      end
      assert.are.equal(select(2, html:gsub("<script", "")), scripts)
      assert.is_nil(html:find("<style", 1, true))
      assert.is_nil(html:find("style=", 1, true))
      assert.is_nil(html:lower():find(" on%a+=\""), "an inline event handler")
    end)

    it("answers 304 to a matching If-None-Match, and HEAD with the headers and no body", function()
      local _, _, _, hd = H.request(srv, "GET", "/ui/app.js")
      local code, _, body = H.request(srv, "GET", "/ui/app.js", nil, { ["If-None-Match"] = hd.etag })
      assert.are.equal(304, code)
      assert.are.equal("", body)
      local hcode, text = raw(srv, "/ui/app.js", "HEAD")
      assert.are.equal(200, hcode)
      assert.matches("Content%-Length: " .. #H.read_file(H.root .. "/ui/app.js"), text)
      assert.matches("\r\n\r\n$", text)
      assert.matches("Content%-Security%-Policy", text)
    end)

    it("serves /docs as DOCS_DIR/api.html and its assets, with the same headers", function()
      for _, path in ipairs({ "/docs", "/docs/" }) do
        local code, _, body, hd = H.request(srv, "GET", path)
        assert.are.equal(200, code)
        assert.matches("<title>API</title>", body, 1, true)
        assert.matches("frame-ancestors 'none'", hd["content-security-policy"], 1, true)
      end
      local code, _, body, hd = H.request(srv, "GET", "/docs/api.css")
      assert.are.equal(200, code)
      assert.are.equal("body{}", body)
      assert.are.equal("text/css; charset=utf-8", hd["content-type"])
    end)

    it("serves a symlink that stays inside the directory", function()
      local code, _, body = H.request(srv, "GET", "/ui/alias.css")
      assert.are.equal(200, code)
      assert.are.equal(H.read_file(H.root .. "/ui/app.css"), body)
    end)

    it("never serves a file outside UI_DIR or DOCS_DIR, nor a hidden one: 404", function()
      for _, target in ipairs({ "/ui/../lua/api.lua", "/ui/..%2flua/api.lua", "/ui/%2e%2e/lua/api.lua",
                                "/ui/%2E%2E%2Flua%2Fapi.lua", "/ui/./index.html", "/ui//index.html",
                                "/ui/index.html/", "/ui/leak.txt", "/ui/outdir/secret.txt", "/ui/.hidden",
                                "/ui/%69ndex.html", "/ui/nope.js", "/ui/" .. ui .. "/index.html",
                                "/docs/../ui/index.html", "/docs/..", "/ui/..", "/ui/a\\..\\b",
                                "/docs//etc/passwd", "/uix", "/ui/x%00" }) do
        local code, text = raw(srv, target)
        assert.is_true(code == 404 or code == 400, target .. " answered " .. tostring(code))
        assert.is_nil(text:find("outside-secret", 1, true), target)
        assert.is_nil(text:find("local M = {}", 1, true), target)
      end
    end)

    it("does not take other methods", function()
      local code = H.request(srv, "POST", "/ui/index.html", "{}")
      assert.are.equal(405, code)
    end)
  end)

  describe("the API's new routes", function()
    it("all need the key", function()
      for _, r in ipairs({ { "GET", "/api/v1/instances" }, { "GET", "/api/v1/jobs" }, { "GET", "/api/v1/system" },
                           { "POST", "/api/v1/reload" }, { "POST", "/api/v1/jobs/job_00/retry" } }) do
        local code = H.request(srv, r[1], r[2])
        assert.are.equal(401, code, r[1] .. " " .. r[2])
      end
    end)

    it("lists instances with counts per status, filters and paging", function()
      local code, j = H.request(srv, "GET", "/api/v1/instances", nil, AUTH)
      assert.are.equal(200, code)
      assert.are.equal(3, j.total)
      assert.are.equal(2, j.counts.running)
      assert.are.equal(1, j.counts.failed)
      local by = {}
      for _, i in ipairs(j.instances) do by[i.subscription_id] = i end
      assert.are.equal("failed", by.sub_fail.status)
      assert.matches("manifest unknown", by.sub_fail.error)
      assert.are.equal("provision", by.sub_fail.job.operation)
      assert.are.equal("failed", by.sub_fail.job.state)
      assert.matches("^https://", by.sub_ok1.urls.frontend)

      local _, f = H.request(srv, "GET", "/api/v1/instances?status=failed", nil, AUTH)
      assert.are.equal(1, f.total)
      assert.are.equal("sub_fail", f.instances[1].subscription_id)
      -- the counts ignore the status filter (the console's chips), not the others
      assert.are.equal(2, f.counts.running)
      local _, t = H.request(srv, "GET", "/api/v1/instances?tier=starter", nil, AUTH)
      assert.are.equal(1, t.total)
      assert.are.equal(0, t.counts.failed)
      local _, q = H.request(srv, "GET", "/api/v1/instances?q=ok", nil, AUTH)
      assert.are.equal(2, q.total)
      local _, w = H.request(srv, "GET", "/api/v1/instances?q=%25", nil, AUTH) -- LIKE's wildcard is literal
      assert.are.equal(0, w.total)
      local _, d = H.request(srv, "GET", "/api/v1/instances?drift=true", nil, AUTH)
      assert.are.equal(0, d.total)
      local _, p1 = H.request(srv, "GET", "/api/v1/instances?limit=2", nil, AUTH)
      local _, p2 = H.request(srv, "GET", "/api/v1/instances?limit=2&offset=2", nil, AUTH)
      assert.are.equal(2, #p1.instances)
      assert.are.equal(1, #p2.instances)
      assert.are.equal(3, p2.total)
      -- every instance is on the implicit host ("default": no host files)
      local _, dh = H.request(srv, "GET", "/api/v1/instances?host=default", nil, AUTH)
      assert.are.equal(3, dh.total)
      assert.are.equal("default", dh.instances[1].host)
      local _, xh = H.request(srv, "GET", "/api/v1/instances?host=x", nil, AUTH)
      assert.are.equal(0, xh.total)
      for _, bad in ipairs({ "status=nope", "limit=0", "limit=501", "offset=-1", "drift=maybe", "tier=a%20b",
                             "host=a%20b" }) do
        local c, e = H.request(srv, "GET", "/api/v1/instances?" .. bad, nil, AUTH)
        assert.are.equal(422, c, bad)
        assert.are.equal("invalid_value", e.error.code)
      end
    end)

    it("lists failed jobs with the error and the step that failed", function()
      local code, j = H.request(srv, "GET", "/api/v1/jobs?state=failed", nil, AUTH)
      assert.are.equal(200, code)
      assert.are.equal(1, j.total)
      local job = j.jobs[1]
      assert.are.equal("sub_fail", job.subscription_id)
      assert.are.equal("provision", job.operation)
      assert.matches("manifest unknown", job.error)
      assert.matches("git:from%-image mr%-subfail", job.failed_step.command)
      assert.matches("manifest unknown", job.failed_step.error)
      assert.is_true(job.retryable)
      local _, all = H.request(srv, "GET", "/api/v1/jobs?subscription_id=sub_ok1", nil, AUTH)
      assert.are.equal(1, all.total)
      assert.are.equal("succeeded", all.jobs[1].state)
      assert.is_false(all.jobs[1].retryable)
      local c = H.request(srv, "GET", "/api/v1/jobs?state=done", nil, AUTH)
      assert.are.equal(422, c)
    end)

    it("retries a failed job as a new job of its operation, and only that", function()
      local _, ok1 = H.request(srv, "GET", "/api/v1/jobs?subscription_id=sub_ok1", nil, AUTH)
      local code, e = H.request(srv, "POST", "/api/v1/jobs/" .. ok1.jobs[1].id .. "/retry", nil, AUTH)
      assert.are.equal(409, code)
      assert.matches("only a failed job", e.error.message)
      assert.are.equal(404, (H.request(srv, "POST", "/api/v1/jobs/job_0123/retry", nil, AUTH)))
      assert.are.equal(404, (H.request(srv, "POST", "/api/v1/jobs/nope/retry", nil, AUTH)))

      local _, failed = H.request(srv, "GET", "/api/v1/jobs?state=failed", nil, AUTH)
      local id = failed.jobs[1].id
      local rc, r = H.request(srv, "POST", "/api/v1/jobs/" .. id .. "/retry", nil,
        { Authorization = AUTH.Authorization, Prefer = "wait=60" })
      assert.are.equal(200, rc)
      assert.are.equal(id, r.retry_of)
      assert.are.equal("provision", r.operation)
      assert.are_not.equal(id, r.job_id)
      assert.are.equal("succeeded", r.job_state)
      local _, st = H.request(srv, "GET", "/api/v1/status/sub_fail", nil, AUTH)
      assert.are.equal("running", st.status)
      -- the failed one is superseded now
      local c2, e2 = H.request(srv, "POST", "/api/v1/jobs/" .. id .. "/retry", nil, AUTH)
      assert.are.equal(409, c2)
      assert.matches("later job", e2.error.message)
    end)

    it("reports the system: readiness, generation, last reload, Dokku, the outbox", function()
      local code, s = H.request(srv, "GET", "/api/v1/system", nil, AUTH)
      assert.are.equal(200, code)
      assert.is_true(s.ready)
      assert.are.equal("ssh", s.dokku.mode)
      assert.are.equal("ok", s.dokku.state)
      assert.is_false(s.supabase.configured)
      assert.are.equal(0, s.supabase.outbox.pending)
      assert.are.equal(0, s.supabase.outbox.parked)
      assert.are.equal("none", s.config.last_reload.outcome)
      assert.is_number(s.config.generation)
    end)
  end)
end)

describe("console API: reload #integration", function()
  teardown(H.cleanup)

  it("reloads as SIGHUP does, and reports a refused reload's error", function()
    local tiers = H.tmpdir()
    os.execute("cp " .. H.sh_quote(H.root .. "/tiers") .. "/*.lua " .. H.sh_quote(tiers))
    local srv = H.start({ env = { TIERS_DIR = tiers } })
    local _, before = H.request(srv, "GET", "/api/v1/system")
    local code, r = H.request(srv, "POST", "/api/v1/reload")
    assert.are.equal(200, code)
    assert.are.equal(before.config.generation + 1, r.generation)
    local _, s = H.request(srv, "GET", "/api/v1/system")
    assert.are.equal("success", s.config.last_reload.outcome)
    assert.matches("^%d%d%d%d%-", s.config.last_reload.at)
    assert.are.equal(r.generation, s.config.generation)

    write(tiers .. "/broken.lua", "return {")
    local c2, e = H.request(srv, "POST", "/api/v1/reload")
    assert.are.equal(422, c2)
    assert.are.equal("reload_failed", e.error.code)
    assert.matches("broken", e.error.message)
    local _, s2 = H.request(srv, "GET", "/api/v1/system")
    assert.are.equal("failure", s2.config.last_reload.outcome)
    assert.matches("broken", s2.config.last_reload.error)
    assert.are.equal(r.generation, s2.config.generation) -- the running generation keeps serving
    assert.matches("reload refused", H.log_text(srv))
    H.stop(srv)
  end)
end)
