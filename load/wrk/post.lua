-- POST the same body on every request: `BODY_FILE` (path, required), `CONTENT_TYPE` (default
-- application/json). No per-response callback (it would make wrk itself the bottleneck); wrk
-- counts answers outside 2xx/3xx in `errors.status`. At the end, prints one line
-- `WRK_JSON {...}` for load/bench_collector.py: requests, duration (us), bytes, socket errors,
-- non-2xx count and latency percentiles (us).
-- With UNIQUE_EVENTS=N instead of BODY_FILE: every request is a fresh batch of N page views with
-- event ids never sent before (load/bench_workers.py counts them all in ClickHouse afterwards;
-- the same body twice would be dropped as a client retry).
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
local unique = tonumber(os.getenv("UNIQUE_EVENTS") or "0")
if unique > 0 then
  local counter = 0
  local prefix = "00000000"
  function init(args)
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    prefix = string.format("%08x", math.random(0, 2147483647))
  end
  function request()
    counter = counter + 1
    local ts = os.time() * 1000
    local events = {}
    for i = 1, unique do
      events[i] = string.format('{"type":"page_view","site_id":"bench.example","anonymous_id":"a%d",' ..
        '"session_id":"s%s%d","ts":%d,"url":"https://bench.example/p%d",' ..
        '"event_id":"%s-0000-4000-8000-%012x"}', counter % 5000, prefix, counter, ts, i % 7, prefix, counter * 1000 + i)
    end
    return wrk.format(nil, nil, nil, "[" .. table.concat(events, ",") .. "]")
  end
else
  local body_file = os.getenv("BODY_FILE")
  assert(body_file, "set BODY_FILE to the request body's path (or UNIQUE_EVENTS)")
  local fh = assert(io.open(body_file, "rb"))
  wrk.body = fh:read("*a")
  fh:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "non_2xx": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
