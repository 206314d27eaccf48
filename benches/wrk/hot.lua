-- wrk script: one bearer token on every request (a static request: wrk formats it
-- once after init). Usage: wrk ... -s hot.lua URL -- TOKEN_FILE (first line is used).
function init(args)
  local f = assert(io.open(args[1], "r"))
  local token = f:read("*l")
  f:close()
  wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
