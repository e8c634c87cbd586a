-- POST the same body on every request: `BODY_FILE` (path, required), `CONTENT_TYPE` (default
-- application/json). No per-response callback (it would make wrk itself the bottleneck); wrk
-- counts answers outside 2xx/3xx in `errors.status`. At the end, prints one line
-- `WRK_JSON {...}` for load/bench_collector.py: requests, duration (us), bytes, socket errors,
-- non-2xx count and latency percentiles (us).
local body_file = os.getenv("BODY_FILE")
assert(body_file, "set BODY_FILE to the request body's path")
local fh = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = fh:read("*a")
fh:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"

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
