-- wrk script for serving_bench.py: POST one JSON body from a file, report one JSON line of stats.
--
--   wrk -t1 -c32 -d15s --latency -s post_json.lua http://127.0.0.1:8501/v1/models/m:predict -- body.json
--
-- Every connection sends the same body back to back (closed loop). The last line of output is
-- `BENCH_JSON {...}` with requests/s and latency percentiles in microseconds; responses with a
-- status >= 400 are counted in "status_errors" (wrk counts them as requests too).

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s post_json.lua URL -- BODY.json")
   end
   local file = assert(io.open(path, "rb"))
   wrk.body = file:read("*a")
   file:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "requests_per_s": %.2f, '
         .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
         .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, '
         .. '"timeout_errors": %d, "status_errors": %d}\n',
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, errors.connect, errors.read, errors.write, errors.timeout, errors.status))
end
