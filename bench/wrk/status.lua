-- wrk script of bench measurements 1 and 5: GET /api/v1/status/{id}, cycling
-- through the ids BENCH_STATUS_PREFIX0001 .. BENCH_STATUS_PREFIX<N>
-- (N = BENCH_STATUS_N), each thread from its own starting point, with the
-- API key BENCH_API_KEY when set.
local prefix = os.getenv("BENCH_STATUS_PREFIX") or "bench_http_"
local n = tonumber(os.getenv("BENCH_STATUS_N") or "") or 1000
local key = os.getenv("BENCH_API_KEY")

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local i = 0
function init()
  i = ((tid or 0) * 389) % n
  if key then
    wrk.headers["X-API-Key"] = key
  end
end

function request()
  i = i % n + 1
  return wrk.format("GET", string.format("/api/v1/status/%s%04d", prefix, i))
end
