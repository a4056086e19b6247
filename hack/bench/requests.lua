-- wrk script: cycles through pre-built requests, one per established session, so 64
-- connections drive 64 sessions without per-request formatting cost in wrk.
-- The generated file named by BENCH_SESSIONS defines `sessions` (a list of session ids)
-- and `body` (the JSON-RPC request body).
local reqs = {}
local n = 0

function init(args)
  dofile(os.getenv("BENCH_SESSIONS"))
  for i, sid in ipairs(sessions) do
    local headers = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
    }
    if sid ~= "" then
      headers["Mcp-Session-Id"] = sid
      headers["MCP-Protocol-Version"] = "2025-11-25"
    end
    reqs[i] = wrk.format("POST", "/mcp", headers, body)
  end
  n = math.random(#reqs)
end

function request()
  n = n % #reqs + 1
  return reqs[n]
end
