#!/usr/bin/env bash
# Start an Abacus binary on an ephemeral loopback port and print its URL; the PID goes to $1.
#
#   url=$(hack/start-server.sh PIDFILE LOGFILE [ENV=VALUE ...])
#
# Extra arguments are environment assignments for the server. Waits until /health answers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pidfile="$1"; logfile="$2"; shift 2
bin="${ABACUS_BIN:-$ROOT/target/release/abacus}"
env PORT=0 HOST=127.0.0.1 "$@" "$bin" >"$logfile" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 1 100); do
  addr=$(sed -n 's/^abacus listening on //p' "$logfile" | head -1)
  if [[ -n "$addr" ]] && curl -fsS "http://$addr/health" >/dev/null 2>&1; then
    echo "http://$addr/mcp"
    exit 0
  fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "abacus exited early:" >&2; cat "$logfile" >&2; exit 1
  fi
  sleep 0.1
done
echo "abacus did not become healthy; log:" >&2; cat "$logfile" >&2
exit 1
