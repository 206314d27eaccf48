-- wrk script: a traffic mix, in a fixed pattern of 20 requests per connection thread:
-- 16 the hot token (80%), 3 the next of many distinct users' tokens (15%), 1 a forged
-- token, new on every request like flood.lua (5%, expected 401).
-- Usage: wrk ... -s mix.lua URL -- HOT_FILE USERS_FILE FORGE_BASE_FILE
-- The 401s are counted apart: `non2xx` in the BENCH line is every other non-2xx/3xx
-- response plus any 401 beyond the forged requests sent; `expected401` the rest.
local hot, users, nusers, head, tail = nil, {}, 0, nil, nil
local i, u, forged = 0, 0, 0
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
-- per-thread counters, read by done() through the thread objects
sent_invalid, got401 = 0, 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local function first_line(path)
  local f = assert(io.open(path, "r"))
  local l = f:read("*l")
  f:close()
  return l
end

function init(args)
  hot = "Bearer " .. first_line(args[1])
  for line in io.lines(args[2]) do
    if #line > 0 then nusers = nusers + 1; users[nusers] = "Bearer " .. line end
  end
  local token = first_line(args[3])
  local dot = token:match("^.*()%.")
  head = token:sub(1, dot + 20)
  tail = token:sub(dot + 27)
  -- threads start at different places in the users' list
  u = ((id or 0) * 7919) % math.max(nusers, 1)
  forged = (id or 0) * 1000000000
end

local function enc(n)
  local out = {}
  for k = 1, 6 do
    local d = n % 64
    out[k] = B64:sub(d + 1, d + 1)
    n = (n - d) / 64
  end
  return table.concat(out)
end

function request()
  if hot == nil then return wrk.format() end -- wrk probes request() before init
  i = i + 1
  local slot = i % 20
  local auth
  if slot == 0 then
    forged = forged + 1
    sent_invalid = sent_invalid + 1
    auth = "Bearer " .. head .. enc(forged) .. tail
  elseif slot <= 3 then
    u = u + 1
    if u > nusers then u = 1 end
    auth = users[u]
  else
    auth = hot
  end
  return wrk.format(nil, nil, { ["Authorization"] = auth })
end

function response(status, headers, body)
  if status == 401 then got401 = got401 + 1 end
end

function done(summary, latency, requests)
  local e = summary.errors
  local sent, got = 0, 0
  for _, t in ipairs(threads) do
    sent = sent + (t:get("sent_invalid") or 0)
    got = got + (t:get("got401") or 0)
  end
  local expected = math.min(got, sent)
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d sockerr=%d expected401=%d invalid_sent=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status - expected, e.connect + e.read + e.write + e.timeout, expected, sent))
end
