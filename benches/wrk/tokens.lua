-- wrk script: cycles through many bearer tokens, one per request, in file order.
-- Usage: wrk ... -s tokens.lua URL -- TOKEN_FILE [START_LINE]
local tokens = {}
local n, i = 0, 0

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    if #line > 0 then
      n = n + 1
      tokens[n] = "Bearer " .. line
    end
  end
  f:close()
  i = tonumber(args[2] or "0") or 0
end

function request()
  if n == 0 then return wrk.format() end -- wrk probes request() before init
  i = i + 1
  if i > n then i = 1 end
  return wrk.format(nil, nil, { ["Authorization"] = tokens[i] })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
