-- wrk script: a flood of forged bearer tokens, every one distinct (so no cache keyed
-- by token can answer it): a real token whose signature has 6 characters replaced by
-- a per-request counter. Usage: wrk ... -s flood.lua URL -- TOKEN_FILE (first line).
local head, tail = nil, nil
local counter = 0
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

function init(args)
  local f = assert(io.open(args[1], "r"))
  local token = f:read("*l")
  f:close()
  local dot = token:match("^.*()%.")          -- position of the last '.'
  head = token:sub(1, dot + 20)                 -- header.payload. + 20 signature chars
  tail = token:sub(dot + 27)                    -- the rest after the 6 replaced chars
  counter = tonumber(args[2] or "0") or 0
end

local function enc(n)
  local out = {}
  for i = 1, 6 do
    local d = n % 64
    out[i] = B64:sub(d + 1, d + 1)
    n = (n - d) / 64
  end
  return table.concat(out)
end

function request()
  if head == nil then return wrk.format() end   -- wrk probes request() before init
  counter = counter + 1
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. head .. enc(counter) .. tail })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d sockerr=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
