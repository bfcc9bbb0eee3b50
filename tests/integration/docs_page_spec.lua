-- The API reference page (docs/api.html, issue 17 item 1) in a real headless
-- browser (Debian's chromium): served with a strict Content-Security-Policy
-- (no inline script or style, nothing from another origin), it renders every
-- operation of openapi.json — method, path and operationId — and the browser
-- reports no CSP violation. The page reads the spec from /openapi.json, so
-- it is in step with the document by construction; this checks it renders
-- all of it.
--
-- Served by the real binary when it serves /docs (the console's serving of
-- DOCS_DIR), otherwise by tests/fixtures/docs-server, which implements the
-- same contract (GET /docs → docs/api.html, /docs/<file>, /openapi.json).
local H = require "harness"
local cjson = require "cjson"

local METHODS = { get = true, put = true, post = true, delete = true, patch = true, head = true, options = true }

-- { "GET /health getHealth", ... } from openapi.json, sorted.
local function spec_operations()
  local text = H.read_file(H.root .. "/openapi.json")
  assert.is_string(text)
  local doc = cjson.decode(text)
  local ops = {}
  for path, item in pairs(doc.paths) do
    for method, op in pairs(item) do
      if METHODS[method] then
        ops[#ops + 1] = method:upper() .. " " .. path .. " " .. tostring(op.operationId)
      end
    end
  end
  table.sort(ops)
  return ops
end

-- The same list from the DOM Swagger UI rendered: each operation block is
-- <div class="opblock opblock-METHOD" ...> followed by its path
-- (data-path="...") and its operationId (class opblock-summary-operation-id).
local function page_operations(dom)
  local ops = {}
  for method, block in dom:gmatch('<div class="opblock opblock%-(%a+)"[^>]*>(.-)</button>') do
    local path = block:match('data%-path="([^"]*)"')
    local id = block:match('opblock%-summary%-operation%-id">([^<]*)<')
    ops[#ops + 1] = method:upper() .. " " .. tostring(path) .. " " .. tostring(id)
  end
  table.sort(ops)
  return ops
end

-- Loads url in headless chromium; returns the DOM after the page's scripts
-- ran and the browser's log (console messages, CSP reports among them).
local function browse(url)
  local dir = H.tmpdir()
  local cmd = "timeout 120 chromium --headless --no-sandbox --disable-gpu --no-first-run"
    .. " --user-data-dir=" .. H.sh_quote(dir .. "/profile")
    .. " --enable-logging=stderr --log-level=0 --virtual-time-budget=20000 --window-size=1200,2400"
    .. " --dump-dom " .. H.sh_quote(url) .. " >" .. dir .. "/dom.html 2>" .. dir .. "/chromium.log"
  os.execute(cmd)
  return H.read_file(dir .. "/dom.html") or "", H.read_file(dir .. "/chromium.log") or ""
end

-- A base URL that serves /docs, and a function that stops what was started.
local function serve()
  -- DOCS_DIR: the server runs in a temporary directory, where ./docs is not
  local s = H.start({ env = { DOCS_DIR = H.root .. "/docs" } })
  local code = H.request(s, "GET", "/docs")
  if code == 200 then
    return s.base, function() H.stop(s) end, "mrprov"
  end
  H.stop(s)
  local dir = H.tmpdir()
  os.execute("lua5.4 " .. H.sh_quote(H.root .. "/tests/fixtures/docs-server") .. " " .. H.sh_quote(H.root)
    .. " " .. H.sh_quote(dir) .. " >/dev/null 2>&1 &")
  local port = H.eventually("the docs server's port", function()
    return tonumber(H.read_file(dir .. "/port") or "")
  end, 10)
  return "http://127.0.0.1:" .. port, function()
    local f = assert(io.open(dir .. "/stop", "w"))
    f:close()
  end, "tests/fixtures/docs-server"
end

describe("docs/api.html", function()
  local base, stop

  setup(function()
    local by
    base, stop, by = serve()
    print("# /docs served by " .. by)
  end)

  teardown(function()
    stop()
    H.cleanup()
  end)

  it("renders every operation of openapi.json under a strict CSP, with no violation", function()
    local dom, log = browse(base .. "/docs")
    local want = spec_operations()
    assert.is_true(#want > 0)
    assert.are.same(want, page_operations(dom))
    assert.is_nil(log:match("[^\n]*Content Security Policy[^\n]*"))
    assert.is_nil(dom:find("Could not load /openapi.json", 1, true))
  end)
end)
