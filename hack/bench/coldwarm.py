"""Cold versus warm first requests in Redis mode: sessions are created on node A, then each is
used on node B, whose cache has never seen it (cold: one Redis read), and again (warm).

usage: coldwarm.py URL_A URL_B N
Prints: cold_p50 cold_p99 warm_p50 warm_p99 (ms)
"""
import http.client
import json
import sys
import time
import urllib.parse

url_a, url_b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
H = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def conn_for(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port), u.path


def post(conn, path, body, headers):
    conn.request("POST", path, body, headers)
    r = conn.getresponse()
    r.read()
    return r


ca, pa = conn_for(url_a)
cb, pb = conn_for(url_b)
init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
done = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
calc = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                   "params": {"name": "calculate", "arguments": {"a": 6, "b": 7, "op": "multiply"}}})
sids = []
for _ in range(n):
    r = post(ca, pa, init, H)
    sid = r.getheader("mcp-session-id")
    assert r.status == 200 and sid
    assert post(ca, pa, done, dict(H, **{"Mcp-Session-Id": sid})).status == 202
    sids.append(sid)
cold, warm = [], []
for sid in sids:
    h = dict(H, **{"Mcp-Session-Id": sid})
    t0 = time.perf_counter()
    assert post(cb, pb, calc, h).status == 200
    t1 = time.perf_counter()
    assert post(cb, pb, calc, h).status == 200
    t2 = time.perf_counter()
    cold.append((t1 - t0) * 1000)
    warm.append((t2 - t1) * 1000)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


print(f"{pct(cold, 0.5):.3f} {pct(cold, 0.99):.3f} {pct(warm, 0.5):.3f} {pct(warm, 0.99):.3f}")
