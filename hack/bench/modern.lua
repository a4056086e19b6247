-- wrk script for modern-era (2026-07-28) requests: cycles through pre-built requests, each with
-- the SEP-2243 headers that mirror its body, and counts JSON-RPC error answers (HTTP 200 with
-- an "error" member), which wrk's own counters would not see.
-- The generated file named by BENCH_REQUESTS defines `requests`, a list of
-- {method = ..., name = ... or nil, body = ...}.
local reqs = {}
local n = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  rpc_errors = 0
  dofile(os.getenv("BENCH_REQUESTS"))
  for i, r in ipairs(requests) do
    local headers = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["MCP-Protocol-Version"] = "2026-07-28",
      ["Mcp-Method"] = r.method,
    }
    if r.name then
      headers["Mcp-Name"] = r.name
    end
    reqs[i] = wrk.format("POST", "/mcp", headers, r.body)
  end
  n = math.random(#reqs)
end

function request()
  n = n % #reqs + 1
  return reqs[n]
end

function response(status, headers, body)
  if string.find(body, '"error":', 1, true) then
    rpc_errors = rpc_errors + 1
  end
end

function done(summary, latency, requests)
  local e = 0
  for _, t in ipairs(threads) do
    e = e + (t:get("rpc_errors") or 0)
  end
  io.write(string.format("JSON-RPC errors: %d\n", e))
end
