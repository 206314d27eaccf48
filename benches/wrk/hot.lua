-- wrk script: one credential on every request (a static request: wrk formats it once
-- after init). Usage: wrk ... -s hot.lua URL -- FILE [HEADER]
-- The first line of FILE is sent as `Authorization: Bearer <line>`, or with HEADER as
-- that header's whole value (e.g. `Cookie` and a line `idfabric_session=...`).
function init(args)
  local f = assert(io.open(args[1], "r"))
  local line = f:read("*l")
  f:close()
  if args[2] then
    wrk.headers[args[2]] = line
  else
    wrk.headers["Authorization"] = "Bearer " .. line
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
