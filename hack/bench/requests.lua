-- wrk script: cycles through pre-built requests, one per established session, so 64
-- connections drive 64 sessions without per-request formatting cost in wrk.
-- The generated file named by BENCH_SESSIONS defines `sessions` (a list of session ids)
-- and `body` (the JSON-RPC request body).
local reqs = {}
local n = 0

-- Each session cycles through IDS distinct JSON-RPC ids: a legacy session remembers its last 16
-- requests so that a retried one records nothing twice, and a body repeated with one id would
-- measure that shortcut instead of a real call.
local IDS = 32

function init(args)
  dofile(os.getenv("BENCH_SESSIONS"))
  for k = 1, IDS do
    local numbered = string.gsub(body, '"id":7', '"id":' .. k, 1)
    for _, sid in ipairs(sessions) do
      local headers = {
        ["Content-Type"] = "application/json",
        ["Accept"] = "application/json, text/event-stream",
      }
      if sid ~= "" then
        headers["Mcp-Session-Id"] = sid
        headers["MCP-Protocol-Version"] = "2025-11-25"
      end
      reqs[#reqs + 1] = wrk.format("POST", "/mcp", headers, numbered)
    end
  end
  n = math.random(#reqs)
end

function request()
  n = n % #reqs + 1
  return reqs[n]
end
