-- Integration: the HTTP front door of the real binary against clients that
-- do not follow the rules — slow senders (slowloris) and requests whose
-- framing or target two parsers could read two ways. Raw bytes over
-- LuaSocket on loopback.
local H = require "harness"
local cjson = require "cjson"
local socket = require "socket"

-- Sends bytes on a new connection (from local address `from`, default the
-- kernel's choice) and reads until the server closes it (bounded by 5 s).
local function raw(srv, bytes, from)
  local c = assert(socket.tcp())
  if from then
    assert(c:bind(from, 0))
  end
  c:settimeout(5)
  assert(c:connect("127.0.0.1", srv.port))
  assert(c:send(bytes))
  local out, _, part = c:receive("*a")
  c:close()
  return out or part or ""
end

-- The status and decoded JSON body of the first answer in text, and how
-- many answers text holds.
local function first_answer(text)
  local code = tonumber(text:match("^HTTP/1%.%d (%d%d%d)"))
  local _, n = text:gsub("HTTP/1%.%d %d%d%d ", "")
  local body = text:match("\r\n\r\n(.*)$") or ""
  local ok, j = pcall(cjson.decode, body)
  return code, ok and j or nil, n
end

local function answered(text)
  return text:match("^HTTP/1%.1 %d%d%d") ~= nil
end

describe("HTTP front door #integration", function()
  local srv

  setup(function()
    srv = H.start()
  end)

  teardown(function()
    H.cleanup()
  end)

  it("closes slow clients after the request deadline, limits them per address, and keeps answering others",
    function()
      -- a one-second deadline for a request and four connections per
      -- address, so that this run stays small and short
      local N, LIMIT = 30, 4
      local lim = H.start({ env = { HTTP_REQUEST_TIMEOUT = "1", HTTP_MAX_CONNECTIONS_PER_IP = tostring(LIMIT) } })
      local slow = {}
      for i = 1, N do
        local c = assert(socket.tcp())
        c:settimeout(2)
        assert(c:connect("127.0.0.1", lim.port))
        -- the start of a request that never ends: one header byte at a time
        c:send("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow[i] = { c = c, open = true }
      end

      -- Drips one byte on every connection still open and notes which ones
      -- the server has closed (end of input, or a failed send).
      local function drip()
        local open = 0
        for _, s in ipairs(slow) do
          if s.open then
            s.c:settimeout(0)
            local _, err = s.c:receive(1)
            if err == "closed" or not s.c:send("a") then
              s.open = false
              s.c:close()
            else
              open = open + 1
            end
          end
        end
        return open
      end

      -- connections over the per-address limit are closed at once
      local open = H.eventually("the connections over the per-address limit to be closed", function()
        local n = drip()
        return n <= LIMIT and n, n .. " of " .. N .. " still open"
      end, 5, 0.1)
      assert.is_true(open >= 1)

      -- another client (another loopback address) is answered meanwhile
      local text = raw(lim, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.2")
      local code, j = first_answer(text)
      assert.are.equal(200, code, text)
      assert.are.equal("healthy", j.status)

      -- the slow ones keep sending, yet are closed once their deadline
      -- (1 s) has passed; 8 s is a generous bound, not a speed claim
      H.eventually("the slow connections to be closed by the server", function()
        local n = drip()
        return n == 0, n .. " slow connection(s) still open"
      end, 8, 0.2)

      -- their places are free again: the same address is answered
      code = first_answer(raw(lim, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
      assert.are.equal(200, code)
      local _, _, metrics = H.request(lim, "GET", "/metrics")
      local reaped = tonumber(metrics:match("\nmrprov_http_request_timeouts_total (%S+)"))
      assert.is_true(reaped ~= nil and reaped >= 1, "no request timeout counted")
      H.stop(lim)
    end)

  it("does not cut an answer that takes longer than the request deadline", function()
    -- /ready asks Dokku for its version; this `dokku` takes 2 s to answer,
    -- twice the deadline, which only bounds the arrival of the request
    local bin = H.tmpdir()
    local f = assert(io.open(bin .. "/dokku", "w"))
    f:write("#!/bin/sh\nsleep 2\necho 'dokku version 0.35.20'\n")
    f:close()
    os.execute("chmod +x " .. H.sh_quote(bin .. "/dokku"))
    local slow = H.start({ env = { HTTP_REQUEST_TIMEOUT = "1", DOKKU_HOST = "local",
                                   LETSENCRYPT_EMAIL = "ops@example.com", PATH = bin .. ":" .. os.getenv("PATH") } })
    local t0 = socket.gettime()
    local text = raw(slow, "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local code, j = first_answer(text)
    assert.are.equal(200, code, "no answer: " .. text)
    assert.are.equal("ok", j.checks.dokku)
    assert.is_true(socket.gettime() - t0 >= 1.5, "the slow Dokku check was not made") -- a lower bound only
    H.stop(slow)
  end)

  describe("refuses with 400 and the error body", function()
    local function refused(bytes, why)
      local text = raw(srv, bytes)
      local code, j, n = first_answer(text)
      assert.are.equal(400, code, text)
      assert.are.equal("bad_request", j and j.error and j.error.code, text)
      assert.matches(why, j.error.message)
      return text, n
    end

    it("two different Content-Length headers, and reads nothing after them as a request", function()
      local body = "{}"
      local smuggled = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      local _, n = refused("POST /api/v1/plan HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        .. "Content-Length: 2\r\nContent-Length: " .. (#body + #smuggled) .. "\r\n\r\n" .. body .. smuggled,
        "Content%-Length")
      assert.are.equal(1, n, "a second answer: the rest of the body was read as a request")
    end)

    it("Content-Length beside Transfer-Encoding", function()
      refused("POST /api/v1/plan HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        .. "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", "Transfer%-Encoding")
    end)

    it("a NUL in the path, percent-encoded or raw", function()
      for _, target in ipairs({ "/health%00", "/health%00/../x", "/api/v1/status/sub_a%00b", "/health\0x",
                                "/health?x=%00" }) do
        refused("GET " .. target .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "NUL")
      end
    end)

    it("HTTP/1.1 without Host, or with two", function()
      refused("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", "Host")
      refused("GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", "Host")
    end)

    it("but not what is well-formed", function()
      -- HTTP/1.0 needs no Host; a repeated equal Content-Length is one length (RFC 9110 §8.6)
      assert.are.equal(200, (first_answer(raw(srv, "GET /health HTTP/1.0\r\n\r\n"))))
      local text = raw(srv, "POST /api/v1/plan HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        .. "Content-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
      assert.are.equal(422, (first_answer(text)), text)
      assert.is_true(answered(raw(srv, "GET /api/v1/status/sub%5Fa HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
      assert.are.equal(200, (first_answer(raw(srv, "GET /h%65alth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))))
    end)
  end)
end)
