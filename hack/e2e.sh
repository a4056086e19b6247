#!/usr/bin/env bash
# End-to-end tests against the real binary: the official conformance suite (both requirement
# sets, conformance toolset enabled) and the two real-client scenarios (calculator toolset).
#
#   hack/e2e.sh [conformance|clients|all]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:-all}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
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
exit $status
