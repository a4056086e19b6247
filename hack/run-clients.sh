#!/usr/bin/env bash
# Run the real-client scenarios against a running Abacus:
#
#   hack/run-clients.sh URL          e.g. hack/run-clients.sh http://127.0.0.1:1453/mcp
#
#   tests/clients/ts_scenario.mjs   @modelcontextprotocol/sdk 1.32.2 on Node 22 (.tools/node, .tools/npm)
#   tests/clients/py_scenario.py    Python mcp 2.3.0 (.tools/venv)
#   tests/clients/inspector_scenario.mjs   the MCP Inspector CLI 2.12.0 (.tools/npm), one CLI run per check
#
# All run (even when one fails); exits 1 if any fails. Installs the tools first when missing
# (hack/install-tools.sh node python; quick when already installed). ABACUS_VERBOSE=1 logs every check.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -ne 1 ]]; then
  echo "usage: $0 URL" >&2
  exit 2
fi
export ABACUS_URL="$1"

bash "$ROOT/hack/install-tools.sh" node python >&2
# shellcheck source=hack/env.sh
. "$ROOT/hack/env.sh"

export PYTHONDONTWRITEBYTECODE=1
passed=0
failed=0
run() {
  local name="$1"
  shift
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "=== $name FAILED (exit $?)"
    failed=$((failed + 1))
  fi
}
[[ "$(node --version)" == v22.* ]] || { echo "node on PATH is $(node --version), expected v22 from .tools" >&2; exit 1; }
run ts_scenario node "$ROOT/tests/clients/ts_scenario.mjs"
run py_scenario "$ABACUS_TOOLS_DIR/venv/bin/python" "$ROOT/tests/clients/py_scenario.py"
run inspector_scenario node "$ROOT/tests/clients/inspector_scenario.mjs"

echo "clients: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
