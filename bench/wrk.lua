-- wrk script for bench/run: the request comes from the environment, and `done` prints one
-- JSON line with the counts and latency percentiles (microseconds).
--
--   BENCH_METHOD, BENCH_BODY, BENCH_AUTH   the request (BENCH_AUTH is an Authorization value)
--   BENCH_RATE                             requests per second over all connections; unset or
--                                          0 means as fast as possible (saturation)
--   BENCH_CONNECTIONS                      the -c given to wrk, to pace each connection
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local connections = tonumber(os.getenv("BENCH_CONNECTIONS") or "1") or 1
if rate > 0 then
  -- Each connection sends one request every connections/rate seconds (wrk waits for the
  -- response, then this delay, in whole milliseconds).
  local gap = math.floor(connections * 1000 / rate + 0.5)
  function delay()
    return gap
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
