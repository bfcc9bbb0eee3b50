-- A small W3C WebDriver client over LuaSocket and cjson: starts Debian's
-- chromedriver on a loopback port and drives headless Chromium through it
-- (tests/integration/console_spec.lua). Only what the console's test
-- needs: navigate, run a script, find, click, type, screenshots, the
-- browser's network log (every URL it requested), CDP media emulation.
local cjson = require "cjson"
local http = require "socket.http"
local ltn12 = require "ltn12"
local mime = require "mime"
local socket = require "socket"

local M = {}

M.CHROMIUM = { "/usr/bin/chromium", "/usr/bin/chromium-browser" }
M.DRIVER = { "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver" }

local function first_executable(list)
  for _, p in ipairs(list) do
    if os.execute("test -x '" .. p .. "'") == true then
      return p
    end
  end
end

-- The browser and driver, or nil and why not.
function M.find()
  local browser, driver = first_executable(M.CHROMIUM), first_executable(M.DRIVER)
  if not browser or not driver then
    return nil, "chromium or chromedriver is not installed (Debian packages chromium, chromium-driver; "
      .. "scripts/install-deps.sh installs them)"
  end
  return { browser = browser, driver = driver }
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function call(base, method, path, body)
  local chunks = {}
  local src, headers
  if body ~= nil then
    local data = cjson.encode(body)
    src = ltn12.source.string(data)
    headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#data) }
  end
  local _, code = http.request({ url = base .. path, method = method, source = src, headers = headers,
                                 sink = ltn12.sink.table(chunks) })
  local raw = table.concat(chunks)
  local ok, j = pcall(cjson.decode, raw)
  if not ok then
    error("webdriver " .. method .. " " .. path .. ": " .. tostring(code) .. " " .. raw:sub(1, 300), 3)
  end
  if code ~= 200 then
    local v = type(j) == "table" and j.value or {}
    error("webdriver " .. method .. " " .. path .. ": " .. tostring(code) .. " " .. tostring(v.error) .. ": "
      .. tostring(v.message):sub(1, 500), 3)
  end
  return j.value
end

local Session = {}
Session.__index = Session

-- Starts chromedriver and a headless browser session. opts.width/height.
function M.start(tools, opts)
  opts = opts or {}
  local port = free_port()
  local dir = opts.dir
  local pidfile = dir .. "/chromedriver.pid"
  os.execute("sh -c 'echo $$ > " .. pidfile .. "; exec " .. tools.driver .. " --port=" .. port
    .. " --allowed-ips=127.0.0.1 --log-path=" .. dir .. "/chromedriver.log' >/dev/null 2>&1 &")
  local base = "http://127.0.0.1:" .. port
  local deadline = socket.gettime() + 15
  local ready = false
  while socket.gettime() < deadline and not ready do
    ready = pcall(call, base, "GET", "/status")
    if not ready then socket.sleep(0.1) end
  end
  local f = io.open(pidfile)
  local pid = f and tonumber(f:read("l"))
  if f then f:close() end
  assert(ready, "chromedriver did not answer on port " .. port)
  local s = setmetatable({ base = base, pid = pid, dir = dir }, Session)
  local v = call(base, "POST", "/session", { capabilities = { alwaysMatch = {
    browserName = "chrome",
    ["goog:chromeOptions"] = {
      binary = tools.browser,
      args = { "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-extensions", "--user-data-dir=" .. dir .. "/profile",
               "--window-size=" .. (opts.width or 1280) .. "," .. (opts.height or 900) },
    },
    -- every request the browser makes, for the key-in-URL check
    ["goog:loggingPrefs"] = { performance = "ALL", browser = "ALL" },
  } } })
  s.id = v.sessionId
  s.path = "/session/" .. s.id
  return s
end

function Session:call(method, path, body)
  return call(self.base, method, self.path .. path, body)
end

function Session:go(url)
  return self:call("POST", "/url", { url = url })
end

-- Runs script (a function body; arguments as `arguments`) in the page.
function Session:run(script, ...)
  local args = { ... }
  if #args == 0 then
    args[1] = false -- cjson writes an empty table as {}; WebDriver wants a list
  end
  return self:call("POST", "/execute/sync", { script = script, args = args })
end

-- Polls script until it returns a true value (returned), or fails after
-- timeout seconds with what it last returned.
function Session:wait(what, script, timeout, ...)
  local deadline = socket.gettime() + (timeout or 10)
  local last
  while socket.gettime() < deadline do
    local ok, v = pcall(self.run, self, script, ...)
    if ok and v and v ~= cjson.null then
      return v
    end
    last = ok and v or ("error: " .. tostring(v))
    socket.sleep(0.1)
  end
  error("timed out waiting for " .. what .. "; last: " .. tostring(last), 2)
end

-- An element reference is an object with one member (its name is the
-- protocol's web element identifier).
function Session:find(css)
  local v = self:call("POST", "/element", { using = "css selector", value = css })
  local _, id = next(v)
  return id
end

-- A real click (pointer events through the browser), as a person would.
function Session:click(css)
  return self:call("POST", "/element/" .. self:find(css) .. "/click", {})
end

function Session:type(css, text)
  return self:call("POST", "/element/" .. self:find(css) .. "/value", { text = text })
end

function Session:screenshot(path)
  local png = mime.unb64(self:call("GET", "/screenshot"))
  local f = assert(io.open(path, "wb"))
  f:write(png)
  f:close()
  return #png
end

function Session:resize(width, height)
  return self:call("POST", "/window/rect", { width = width, height = height })
end

-- Chrome DevTools Protocol command through chromedriver.
function Session:cdp(cmd, params)
  return self:call("POST", "/goog/cdp/execute", { cmd = cmd, params = params or {} })
end

-- Every URL the browser requested since the last call (its network log).
function Session:requested_urls()
  local urls = {}
  for _, e in ipairs(self:call("POST", "/se/log", { type = "performance" })) do
    local ok, m = pcall(cjson.decode, e.message)
    local msg = ok and m.message
    if msg and msg.method == "Network.requestWillBeSent" then
      urls[#urls + 1] = msg.params.request.url
    end
  end
  return urls
end

-- The browser console's messages since the last call (CSP violations
-- show here).
function Session:console()
  local out = {}
  for _, e in ipairs(self:call("POST", "/se/log", { type = "browser" })) do
    out[#out + 1] = e.level .. " " .. tostring(e.message)
  end
  return out
end

function Session:quit()
  pcall(call, self.base, "DELETE", self.path)
  if self.pid then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
  end
end

return M
