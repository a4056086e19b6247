"""Create N initialized legacy sessions on an Abacus URL and write them as a Lua file for wrk.

usage: sessions.py URL N OUT.lua BODY_JSON
"""
import http.client
import json
import sys
import urllib.parse

url, n, out, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
H = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
done = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
sids = []
for _ in range(n):
    conn.request("POST", u.path, init, H)
    r = conn.getresponse()
    r.read()
    sid = r.getheader("mcp-session-id")
    assert r.status == 200 and sid, r.status
    conn.request("POST", u.path, done, dict(H, **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}))
    r2 = conn.getresponse()
    r2.read()
    assert r2.status == 202, r2.status
    sids.append(sid)
with open(out, "w") as f:
    f.write("sessions = {" + ",".join(json.dumps(s) for s in sids) + "}\n")
    f.write("body = " + json.dumps(body) + "\n")
