-- wrk script of bench measurement 6: POST /api/v1/webhooks/supabase with the
-- pre-signed deliveries of BENCH_WEBHOOK_FILE (one a line: webhook-id,
-- webhook-timestamp, webhook-signature and the body, tab-separated). Thread
-- k of T sends lines k+1, k+1+T, ...: every delivery once; a thread that
-- runs out starts its share again (those answers are "duplicate").
local file = os.getenv("BENCH_WEBHOOK_FILE")

local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

local reqs, i = {}, 0
function init()
  local nthreads = tonumber(os.getenv("BENCH_WRK_THREADS") or "") or 1
  local k = 0
  for line in io.lines(file) do
    if k % nthreads == (tid or 0) then
      local id, ts, sig, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/api/v1/webhooks/supabase", {
        ["Content-Type"] = "application/json", ["webhook-id"] = id, ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
      }, body)
    end
    k = k + 1
  end
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end
