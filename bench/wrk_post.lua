-- wrk script of the Mimiverse benchmarks: POST a JSON body, report one JSON line.
--
--   wrk -t1 -c8 -d6s -s bench/wrk_post.lua URL -- PATH HEAD [TAIL]
--
-- With TAIL every request's body is HEAD .. n .. TAIL (n counts requests, so no two bodies
-- are equal and nothing can be served from a cache); without it every body is HEAD, built
-- into a request once. One thread (-t1): the counter is per thread.

local path, head, tail, fixed
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  path, head, tail = args[1], args[2], args[3]
  if tail == nil then
    fixed = wrk.format("POST", path, headers, head)
  end
end

function request()
  if fixed ~= nil then
    return fixed
  end
  if path == nil then
    return wrk.format() -- wrk checks the script once before any init: a valid request
  end
  counter = counter + 1
  return wrk.format("POST", path, headers, head .. counter .. tail)
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"seconds":%.6f,"errors":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration / 1e6, errors, e.status,
    latency:percentile(50), latency:percentile(99)))
end
