"""Write the wrk requests (for hack/bench/modern.lua) of the task benchmarks.

usage: tasks.py URL create OUT.lua     one task-augmented tools/call (slow_compute, 1 ms)
       tasks.py URL get OUT.lua N      tasks/get of N finished tasks, created here first

Both declare the Tasks extension in each request's _meta, as a 2026-07-28 client does.
"""
import http.client
import json
import sys
import time
import urllib.parse

url, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
u = urllib.parse.urlparse(url)
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}},
}


def body(method, params):
    params = dict(params, _meta=META)
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})


def post(conn, method, name, text):
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
        "Mcp-Name": name,
    }
    conn.request("POST", u.path, text, headers)
    r = conn.getresponse()
    answer = json.loads(r.read())
    assert r.status == 200 and "result" in answer, answer
    return answer["result"]


create = body("tools/call", {"name": "slow_compute", "arguments": {"seconds": 0.001, "label": "bench"}})
if mode == "create":
    requests = [("tools/call", "slow_compute", create)]
else:
    conn = http.client.HTTPConnection(u.hostname, u.port)
    ids = [post(conn, "tools/call", "slow_compute", create)["taskId"] for _ in range(int(sys.argv[4]))]
    time.sleep(0.5)
    for i in ids:
        assert post(conn, "tasks/get", i, body("tasks/get", {"taskId": i}))["status"] == "completed"
    requests = [("tasks/get", i, body("tasks/get", {"taskId": i})) for i in ids]
with open(out, "w") as f:
    f.write("requests = {\n")
    for method, name, text in requests:
        f.write("  {method = %s, name = %s, body = %s},\n" % (json.dumps(method), json.dumps(name), json.dumps(text)))
    f.write("}\n")
