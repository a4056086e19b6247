#!/usr/bin/env bash
# Run the official MCP conformance suite (server side) against a running Abacus.
#
#   hack/conformance.sh URL OUTDIR        e.g. hack/conformance.sh http://127.0.0.1:1453/mcp conformance-results
#
# Runs @modelcontextprotocol/conformance 0.2.0-alpha.12 (installed by hack/install-tools.sh into .tools/npm,
# run with Node 22 from .tools/node) twice, with NO expected-failures baseline:
#
#   conformance server --url URL --requirements 2025-11-25 -o OUTDIR/2025-11-25
#   conformance server --url URL --requirements 2026-07-28 -o OUTDIR/2026-07-28
#
# then prints a per-scenario summary parsed from OUTDIR/<rev>/server-<scenario>-<timestamp>/checks.json and
# exits 1 if any scored scenario of either run failed (CONFORMANCE_STRICT=1: also the run-but-not-scored
# ones). The CLI's own console output goes to OUTDIR/<rev>.log (and to the terminal).
#
# The URL must be a loopback one (localhost, 127.0.0.1, [::1]): scenario dns-rebinding-protection fails
# against any other host. Env: CONFORMANCE_TIMEOUT_MS (per scenario, CLI default 30000), CONFORMANCE_STRICT,
# CONFORMANCE_REVISIONS (default "2025-11-25 2026-07-28").
#
# ---- CLI facts (0.2.0-alpha.12, checked with `conformance --help`, `server --help`, `list`) ------------------
# conformance server --url <url> [--scenario <s>] [--suite active|all|draft|pending] [--expected-failures <yml>]
#                    [-o|--output-dir <path>] [--spec-version <v>] [--force] [--requirements <rev>]
#                    [--timeout <ms>=30000] [--verbose]
#   --requirements cannot be combined with --scenario/--suite/--spec-version. Without a baseline the exit code
#   is 1 iff a scored scenario has a FAILURE check (not-scored failures and WARNINGs do not change it).
#   Console: "=== Running scenario: X ===", then "=== SUMMARY ===" lines "✓|✗ X: N passed, M failed",
#   "Total: N passed, M failed", and "Not scored for <rev>: ..." for the unscored ones.
#
# `conformance list --requirements 2025-11-25` server scenarios (30 scored):
#   server-initialize logging-set-level ping completion-complete tools-list tools-call-simple-text
#   tools-call-image tools-call-audio tools-call-embedded-resource tools-call-mixed-content
#   tools-call-with-logging tools-call-error tools-call-with-progress tools-call-sampling tools-call-elicitation
#   elicitation-sep1034-defaults server-sse-multiple-streams elicitation-sep1330-enums resources-list
#   resources-read-text resources-read-binary resources-templates-read resources-subscribe resources-unsubscribe
#   prompts-list prompts-get-simple prompts-get-with-args prompts-get-embedded-resource prompts-get-with-image
#   dns-rebinding-protection
#   run but not scored: server-session-lifecycle (added-after-release), json-schema-2020-12 (pending),
#   server-sse-polling (pending)                                       -> 33 scenarios run
#
# `conformance list --requirements 2026-07-28` server scenarios (37 scored):
#   server-stateless completion-complete tools-list tools-call-simple-text tools-call-image tools-call-audio
#   tools-call-embedded-resource tools-call-mixed-content tools-call-error tools-call-with-progress
#   server-sse-multiple-streams resources-list resources-read-text resources-read-binary
#   resources-templates-read sep-2164-resource-not-found prompts-list prompts-get-simple prompts-get-with-args
#   prompts-get-embedded-resource prompts-get-with-image dns-rebinding-protection caching
#   input-required-result-{basic-elicitation,basic-sampling,basic-list-roots,request-state,
#     multiple-input-requests,multi-round,missing-input-response,non-tool-request,result-type,
#     unsupported-methods,tampered-state,capability-check,ignore-extra-params,validate-input}
#   run but not scored: tasks-{lifecycle,capability-negotiation,wire-fields,request-state-removal,mrtr-input,
#   request-headers,dispatch-and-envelope,status-notifications,required-task-error,mrtr-composition}
#   (extension: Abacus implements the Tasks extension and requires these ten to pass, see below),
#   json-schema-2020-12, http-header-validation, http-custom-header-server-validation (pending)
#                                                                      -> 50 scenarios run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ $# -ne 2 ]]; then
  echo "usage: $0 URL OUTDIR" >&2
  exit 2
fi
URL="$1"
OUTDIR="$2"
read -r -a REVISIONS <<<"${CONFORMANCE_REVISIONS:-2025-11-25 2026-07-28}"
TIMEOUT_MS="${CONFORMANCE_TIMEOUT_MS:-30000}"
STRICT=()
[[ "${CONFORMANCE_STRICT:-0}" == 1 ]] && STRICT=(--strict)

bash "$ROOT/hack/install-tools.sh" node >&2
# shellcheck source=hack/env.sh
. "$ROOT/hack/env.sh"
command -v conformance >/dev/null || { echo "conformance CLI not on PATH after install" >&2; exit 1; }
echo "conformance $(conformance --version) with node $(node --version) against $URL" >&2

case "$URL" in
  http://localhost[:/]* | http://127.* | http://\[::1\]*) ;;
  *) echo "WARNING: $URL is not a loopback URL; dns-rebinding-protection will fail" >&2 ;;
esac

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
overall=0
summaries=()
for rev in "${REVISIONS[@]}"; do
  dir="$OUTDIR/$rev"
  rm -rf "$dir"
  mkdir -p "$dir"
  # Scored server scenarios of this revision: the "Server scenarios" block of `conformance list`.
  conformance list --requirements "$rev" |
    awk '/^Server scenarios/{on=1; next} on && /^[[:space:]]*$/{on=0} on && /^  - /{print $2}' >"$dir.scored"
  # Extension scenarios the suite runs unscored; Abacus implements the Tasks extension, so its
  # `tasks-*` scenarios must pass too.
  conformance list --requirements "$rev" |
    awk '/^  extension/{on=1; next} on && !/^    - /{on=0} on && /\[server\]/ && $2 ~ /^tasks-/{print $2}' >"$dir.extensions"
  echo "=== conformance server --url $URL --requirements $rev -o $dir" >&2
  cli_rc=0
  conformance server --url "$URL" --requirements "$rev" --timeout "$TIMEOUT_MS" -o "$dir" 2>&1 |
    tee "$dir.log" || cli_rc=$?
  sum_rc=0
  node "$ROOT/hack/conformance-summary.mjs" "$dir" "$rev" "$dir.scored" "${STRICT[@]}" \
    --extensions "$dir.extensions" | tee "$dir.summary" ||
    sum_rc=$?
  line="$(grep '^@@SUMMARY ' "$dir.summary" | tail -1 || true)"
  summaries+=("${line#@@SUMMARY }")
  if [[ $cli_rc -ne 0 || $sum_rc -ne 0 ]]; then
    echo "conformance $rev: FAILED (cli exit $cli_rc, summary exit $sum_rc)" >&2
    overall=1
  fi
done

total_pass=0
total_fail=0
echo
echo "=== conformance results (scenarios; details in $OUTDIR) ==="
for s in "${summaries[@]}"; do
  read -r rev p f <<<"$s"
  [[ -n "${rev:-}" ]] || continue
  echo "  $rev: $p passed, $f failed"
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
done
echo "conformance: $total_pass passed, $total_fail failed"
exit "$overall"
