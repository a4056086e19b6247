#!/usr/bin/env bash
# End-to-end tests against the real binary: the official conformance suite (both requirement
# sets, conformance toolset enabled) and the two real-client scenarios (calculator toolset),
# first against single nodes, then (cluster) through nginx round-robin in front of 3 Redis-backed
# nodes (hack/cluster.sh), where consecutive requests of one session land on different nodes.
#
#   hack/e2e.sh [conformance|clients|cluster|all]
#
# cluster: conformance suite through the LB (results in conformance-results-cluster/, with the
# node, nginx and Redis logs copied to conformance-results-cluster/cluster-logs/), then a spread
# check (every node's mcp_requests_total grew during the conformance run; one session's 6 pings
# through the LB were served by 3 different upstreams, per node metrics and nginx's access log),
# then the real-client scenarios through the LB of a second cluster (calculator toolset).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:-all}"
case "$what" in conformance | clients | cluster | all) ;; *)
  echo "usage: $0 [conformance|clients|cluster|all]" >&2
  exit 2
  ;;
esac
work="$(mktemp -d)"
pids=()
cluster_dir="$work/cluster"
cluster() { CLUSTER_DIR="$cluster_dir" LB_PORT=0 bash "$ROOT/hack/cluster.sh" "$@"; }
cleanup() {
  local p i
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -d "$cluster_dir" ]] && cluster down >/dev/null 2>&1
  # Wait until the single nodes are gone and reaped (no <defunct> left in ps right after).
  for p in "${pids[@]}"; do
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

status=0
if [[ "$what" == conformance || "$what" == all ]]; then
  url=$("$ROOT/hack/start-server.sh" "$work/c.pid" "$work/c.log" \
    TOOLSETS=conformance,calculator RATE_LIMIT_MAX=0 SSE_POST_CLOSE_AFTER=0)
  pids+=("$(cat "$work/c.pid")")
  echo "conformance server at $url"
  out="$ROOT/conformance-results"
  rm -rf "$out"
  "$ROOT/hack/conformance.sh" "$url" "$out" || status=1
fi
if [[ "$what" == clients || "$what" == all ]]; then
  url=$("$ROOT/hack/start-server.sh" "$work/k.pid" "$work/k.log" RATE_LIMIT_MAX=0)
  pids+=("$(cat "$work/k.pid")")
  echo "client-scenario server at $url"
  "$ROOT/hack/run-clients.sh" "$url" || status=1
fi

# ---- cluster ------------------------------------------------------------------------------------
NODES=3

# node_metric PORT [METHOD]: sum of mcp_requests_total over all labels (or those of METHOD), read
# from the node itself, not through the LB. Prints nothing when /metrics does not answer.
node_metric() {
  local text
  text=$(curl -fsS --noproxy '*' --max-time 5 "http://127.0.0.1:$1/metrics") || return 0
  awk -v m="${2:-}" '
    /^mcp_requests_total[{ ]/ && (m == "" || index($0, "method=\"" m "\"")) { s += $NF }
    END { printf "%d\n", s }' <<<"$text"
}

# node_metrics METHOD: one sum per node, space-separated, in node order.
node_metrics() {
  local p out=()
  for p in "${ports[@]}"; do out+=("$(node_metric "$p" "${1:-}")"); done
  echo "${out[*]}"
}

# spread_growth BEFORE AFTER: fails unless every node's mcp_requests_total grew.
spread_growth() {
  local -a b a
  read -r -a b <<<"$1"
  read -r -a a <<<"$2"
  local i ok=0
  for ((i = 0; i < NODES; i++)); do
    local d=$((${a[$i]:-0} - ${b[$i]:-0}))
    echo "  node$i (127.0.0.1:${ports[$i]}): mcp_requests_total ${b[$i]:-?} -> ${a[$i]:-?} (+$d)"
    [[ -n "${a[$i]:-}" && "$d" -gt 0 ]] || ok=1
  done
  return $ok
}

# ping_spread URL: one session through the LB (initialize + notifications/initialized), then 6
# pings with its id; they must all succeed and be served by >= 3 different upstreams, judged both
# by the nodes' own metrics and by the upstream=... field of nginx's access log.
ping_spread() {
  local url=$1 hdr="$work/init.headers" sid i body code ok=0
  local -a h=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream')
  body=$(curl -sS --noproxy '*' --max-time 10 -D "$hdr" -X POST "$url" "${h[@]}" \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e-spread","version":"1"}}}') ||
    { echo "  initialize through the LB failed"; return 1; }
  sid=$(awk -F': *' 'tolower($1) == "mcp-session-id" { print $2 }' "$hdr" | tr -d '\r')
  [[ -n "$sid" ]] || { echo "  initialize answered without Mcp-Session-Id: $body"; return 1; }
  h+=(-H "Mcp-Session-Id: $sid" -H 'MCP-Protocol-Version: 2025-11-25')
  code=$(curl -sS --noproxy '*' --max-time 10 -o /dev/null -w '%{http_code}' -X POST "$url" "${h[@]}" \
    -d '{"jsonrpc":"2.0","method":"notifications/initialized"}') || code=000
  [[ "$code" == 202 ]] || { echo "  notifications/initialized: HTTP $code (want 202)"; return 1; }

  local access="$cluster_dir/nginx/access.log" lines_before before after
  before=$(node_metrics ping)
  lines_before=$(wc -l <"$access")
  for i in 1 2 3 4 5 6; do
    body=$(curl -sS --noproxy '*' --max-time 10 -w ' HTTP %{http_code}' -X POST "$url" "${h[@]}" \
      -d "{\"jsonrpc\":\"2.0\",\"id\":$((i + 1)),\"method\":\"ping\"}") || body="curl failed"
    if [[ "$body" != *'"result":{}'*' HTTP 200' ]]; then
      echo "  ping $i in session $sid: $body"
      ok=1
    fi
  done
  # nginx logs a request after answering it and the nodes count after handling it: allow a moment.
  local -a b a ups
  local total=0 served=0
  for ((i = 0; i < 50; i++)); do
    after=$(node_metrics ping)
    read -r -a b <<<"$before"
    read -r -a a <<<"$after"
    total=0 served=0
    local j
    for ((j = 0; j < NODES; j++)); do
      local d=$((${a[$j]:-0} - ${b[$j]:-0}))
      total=$((total + d))
      ((d > 0)) && served=$((served + 1))
    done
    ((total >= 6)) && (($(wc -l <"$access") >= lines_before + 6)) && break
    sleep 0.1
  done
  mapfile -t ups < <(tail -n +"$((lines_before + 1))" "$access" | grep -o 'upstream=[^ ]*' | cut -d= -f2)
  local distinct
  distinct=$(printf '%s\n' "${ups[@]}" | sort -u | grep -c . || true)
  echo "  session $sid: 6 pings through the LB"
  for ((j = 0; j < NODES; j++)); do
    echo "    node$j (127.0.0.1:${ports[$j]}): ping requests ${b[$j]:-?} -> ${a[$j]:-?} (+$((${a[$j]:-0} - ${b[$j]:-0})))"
  done
  echo "    node metrics: $total pings counted on $served distinct nodes"
  echo "    nginx access log: ${#ups[@]} requests, upstreams ${ups[*]:-none} -> $distinct distinct"
  ((total == 6 && served >= 3)) || { echo "  node metrics: want 6 pings on >= 3 nodes"; ok=1; }
  ((${#ups[@]} == 6 && distinct >= 3)) || { echo "  access log: want 6 requests on >= 3 upstreams"; ok=1; }
  return $ok
}

# keep_logs DEST: copies the cluster's logs (nodes, nginx, Redis) for inspection after the run.
keep_logs() {
  mkdir -p "$1"
  cp "$cluster_dir"/node*.log "$cluster_dir"/redis.log "$1"/ 2>/dev/null || true
  cp "$cluster_dir"/nginx/access.log "$1"/nginx-access.log 2>/dev/null || true
  cp "$cluster_dir"/nginx/error.log "$1"/nginx-error.log 2>/dev/null || true
}

if [[ "$what" == cluster || "$what" == all ]]; then
  started=$SECONDS
  out="$ROOT/conformance-results-cluster"
  rm -rf "$out"
  echo "=== cluster: conformance through nginx round-robin over $NODES Redis-backed nodes"
  if url=$(cluster up "$NODES" TOOLSETS=conformance,calculator RATE_LIMIT_MAX=0 SSE_POST_CLOSE_AFTER=0 | tail -1) &&
    [[ "$url" == http://* ]] && mapfile -t ports < <(cluster ports) && ((${#ports[@]} == NODES)); then
    echo "conformance cluster LB at $url (nodes on ports ${ports[*]})"
    before=$(node_metrics)
    "$ROOT/hack/conformance.sh" "$url" "$out" || status=1
    after=$(node_metrics)
    echo "=== cluster spread: every node served part of the conformance run"
    if spread_growth "$before" "$after"; then echo "spread (conformance run): OK"; else
      echo "spread (conformance run): FAILED (a node's mcp_requests_total did not grow)"
      status=1
    fi
    echo "=== cluster spread: one session's consecutive requests hit different nodes"
    if ping_spread "$url"; then echo "spread (one session, 6 pings): OK"; else
      echo "spread (one session, 6 pings): FAILED"
      status=1
    fi
  else
    echo "cluster (conformance) did not start" >&2
    status=1
  fi
  keep_logs "$out/cluster-logs"
  cluster down >/dev/null 2>&1 || true

  # The nodes close POST streams after 250 ms (SEP-1699 polling), so the clients' longer calls
  # (demo_progress, streamed calculate) only finish if the real clients resume them with GET +
  # Last-Event-ID, which round-robin sends to another node.
  echo "=== cluster: real-client scenarios through nginx round-robin over $NODES Redis-backed nodes (POST streams closed after 250 ms)"
  if url=$(cluster up "$NODES" RATE_LIMIT_MAX=0 SSE_POST_CLOSE_AFTER=250 | tail -1) && [[ "$url" == http://* ]]; then
    echo "client-scenario cluster LB at $url"
    "$ROOT/hack/run-clients.sh" "$url" || status=1
    # nginx logs each request's Last-Event-ID (lei="..."): resumptions of POST streams (p…).
    resumes=$(grep '"GET /mcp HTTP/1.1" 200' "$cluster_dir/nginx/access.log" | grep -c 'lei="p' || true)
    echo "  POST streams resumed by the real clients with GET + Last-Event-ID through the LB: $resumes"
    if [[ "${resumes:-0}" -lt 2 ]]; then
      echo "  expected the clients to resume their closed POST streams with GET" >&2
      status=1
    fi
  else
    echo "cluster (clients) did not start" >&2
    status=1
  fi
  keep_logs "$out/cluster-logs/clients"
  cluster down >/dev/null 2>&1 || true
  echo "cluster e2e wall time: $((SECONDS - started))s"
fi
exit $status
