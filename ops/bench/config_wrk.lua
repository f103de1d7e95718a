-- ops/bench/config_wrk.lua: wrk script for ops/bench/config.sh.
--
-- The same operations as config_load.py, from wrk (compiled, epoll, keep-alive):
--   BENCH_SYSTEM=ferry BENCH_OP=write  PUT  /v1/routes/ROUTE/backends/a/weight {"weight":K}
--   BENCH_SYSTEM=ferry BENCH_OP=write-route  PUT /v1/routes/ROUTE (the whole route)
--   BENCH_SYSTEM=ferry BENCH_OP=read   GET  /v1/routes/ROUTE (linearizable by default)
--   BENCH_SYSTEM=etcd  BENCH_OP=write  POST /v3/kv/put   {"key":b64,"value":b64(K)}
--   BENCH_SYSTEM=etcd  BENCH_OP=read   POST /v3/kv/range {"key":b64} (linearizable)
-- K cycles through 1..100. BENCH_ROUTE (default "bench") names the route/key.
-- done() prints one JSON line prefixed with "BENCH_JSON " (latencies in ms).

local system = os.getenv("BENCH_SYSTEM") or "ferry"
local op = os.getenv("BENCH_OP") or "write"
local route = os.getenv("BENCH_ROUTE") or "bench"

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
   return ((data:gsub(".", function(x)
      local r, byte = "", x:byte()
      for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
      return r
   end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
      if #x < 6 then return "" end
      local c = 0
      for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
      return b64chars:sub(c + 1, c + 1)
   end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local key = "/ferry-bench/routes/" .. route .. "/backends/a/weight"
local reqs = {}

-- Built in init(): wrk sets the Host header only then.
local function build()
   local headers = { ["Content-Type"] = "application/json" }
   local ekey = b64(key)
   for k = 1, 100 do
      if system == "ferry" and op == "write" then
         reqs[k] = wrk.format("PUT", "/v1/routes/" .. route .. "/backends/a/weight", headers,
                              '{"weight":' .. k .. '}')
      elseif system == "ferry" and op == "write-route" then
         reqs[k] = wrk.format("PUT", "/v1/routes/" .. route, headers,
                              '{"name":"' .. route .. '","listen":"127.0.0.1:0","backends":' ..
                              '[{"id":"a","addr":"127.0.0.1:9001","weight":' .. k .. '}]}')
      elseif system == "ferry" then
         reqs[k] = wrk.format("GET", "/v1/routes/" .. route, {})
      elseif op == "read" then
         reqs[k] = wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. ekey .. '"}')
      else
         reqs[k] = wrk.format("POST", "/v3/kv/put", headers,
                              '{"key":"' .. ekey .. '","value":"' .. b64(tostring(k)) .. '"}')
      end
   end
end

init = function(args)
   build()
end

local n = 0
request = function()
   n = n + 1
   return reqs[(n % 100) + 1]
end

done = function(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   local ok = summary.requests - e.status
   io.write(string.format(
      'BENCH_JSON {"client":"wrk","requests":%d,"non_2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"timeouts":%d,"elapsed_s":%.4f,"ops_per_s":%.1f,' ..
      '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f}\n',
      summary.requests, e.status, e.connect, e.read, e.write, e.timeout, secs, ok / secs,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency:percentile(99.9) / 1000, latency.max / 1000, latency.mean / 1000))
end
