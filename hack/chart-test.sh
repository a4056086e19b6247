#!/usr/bin/env bash
# Offline checks of the Helm chart (make chart-test, part of make test):
#
#   1. helm lint --strict, for every value set below;
#   2. helm template of every value set, validated by kubernetes-validate --strict against every
#      Kubernetes minor from 1.30 to 1.37 (1.29 must be refused: the chart needs the native
#      preStop sleep);
#   3. a security scan (checkov) of the rendered manifests and the Dockerfile: every failed check
#      fails the run unless .checkov.yaml skips it with a reason;
#   4. manifests/ is what `make manifests` renders now.
#
# The chart's properties (probes, RBAC, drain arithmetic, ...) are cargo tests: tests/chart.rs.
# Tools come from hack/install-tools.sh chart (.tools/bin); HELM, KUBERNETES_VALIDATE and
# CHECKOV override them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/charts/abacus"
HELM="${HELM:-$ROOT/.tools/bin/helm}"
KV="${KUBERNETES_VALIDATE:-$ROOT/.tools/bin/kubernetes-validate}"
CHECKOV="${CHECKOV:-$ROOT/.tools/bin/checkov}"
# checkov: no calls to the Prisma Cloud platform (no API key; guideline mapping off).
export BC_SKIP_MAPPING=TRUE
VERSIONS=(1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0 1.36.0 1.37.0)

log() { printf '[chart-test] %s\n' "$*" >&2; }
die() { printf '[chart-test] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in "$HELM" "$KV" "$CHECKOV"; do
  [[ -x "$tool" ]] || die "$tool is missing: run hack/install-tools.sh chart"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The value sets, as values files.
mkdir -p "$work/values"
: >"$work/values/defaults.yaml"
cat >"$work/values/minimal.yaml" <<'YAML'
replicaCount: 1
podDisruptionBudget: {enabled: false}
redis: {persistence: {enabled: false}}
YAML
cat >"$work/values/external-redis.yaml" <<'YAML'
redis: {enabled: false}
externalRedis:
  url: rediss://redis.example.com:6380
  existingSecret: managed-redis
  tlsCaSecret: managed-redis-ca
YAML
cat >"$work/values/sentinel.yaml" <<'YAML'
redis: {sentinel: {enabled: true}}
YAML
cat >"$work/values/everything.yaml" <<'YAML'
ingress: {enabled: true, tls: [{hosts: [abacus.example.com], secretName: abacus-tls}]}
httpRoute: {enabled: true, parentRefs: [{name: gateway}], hostnames: [mcp.example.com]}
autoscaling: {enabled: true}
metrics: {serviceMonitor: {enabled: true}}
networkPolicy: {enabled: true}
otel: {enabled: true, endpoint: "http://otel-collector.observability:4317"}
grafanaDashboard: {enabled: true}
auth: {jwks: '{"keys":[]}'}
config:
  auth: {issuer: "https://issuer.example.com", audience: "https://mcp.example.com/mcp"}
  sampleToolName: echo
YAML
SETS=(defaults minimal external-redis sentinel everything)

started=$(date +%s)
failed=0
for name in "${SETS[@]}"; do
  args=(-f "$work/values/$name.yaml")
  if ! "$HELM" lint --strict "$CHART" "${args[@]}" >"$work/lint-$name.log" 2>&1; then
    log "FAILED: helm lint --strict ($name)"
    cat "$work/lint-$name.log" >&2
    failed=1
  fi
  for v in "${VERSIONS[@]}"; do
    "$HELM" template abacus "$CHART" -n abacus --kube-version "$v" "${args[@]}" \
      >"$work/$name-$v.yaml" 2>"$work/$name-$v.err" || {
      log "FAILED: helm template ($name, Kubernetes $v)"
      cat "$work/$name-$v.err" >&2
      failed=1
    }
  done
done
[[ $failed -eq 0 ]] || die "rendering failed"

# One kubernetes-validate run per Kubernetes version, over every value set.
for v in "${VERSIONS[@]}"; do
  if ! "$KV" --strict -k "$v" --quiet "$work"/*-"$v".yaml >"$work/kv-$v.log" 2>&1; then
    log "FAILED: kubernetes-validate --strict -k $v"
    cat "$work/kv-$v.log" >&2
    failed=1
  fi
done
if "$HELM" template abacus "$CHART" --kube-version 1.29.0 >/dev/null 2>"$work/old.err"; then
  log "FAILED: the chart renders for Kubernetes 1.29, which lacks the native preStop sleep"
  failed=1
fi
log "lint and schema validation: ${#SETS[@]} value sets x ${#VERSIONS[@]} Kubernetes versions"

# Security scan of what would be applied (defaults and every option on) and of the Dockerfile.
mkdir -p "$work/scan"
cp "$work/defaults-1.33.0.yaml" "$work/everything-1.33.0.yaml" "$work/sentinel-1.33.0.yaml" "$work/scan/"
if ! (cd "$ROOT" && "$CHECKOV" --config-file .checkov.yaml -d "$work/scan" --framework kubernetes \
  --quiet --compact >"$work/checkov-k8s.log" 2>&1); then
  log "FAILED: checkov (rendered manifests)"
  cat "$work/checkov-k8s.log" >&2
  failed=1
fi
if ! (cd "$ROOT" && "$CHECKOV" --config-file .checkov.yaml -f Dockerfile --framework dockerfile \
  --quiet --compact >"$work/checkov-docker.log" 2>&1); then
  log "FAILED: checkov (Dockerfile)"
  cat "$work/checkov-docker.log" >&2
  failed=1
fi

# manifests/ must be current.
if ! bash "$ROOT/hack/manifests.sh" --check; then
  log "FAILED: manifests/ is stale: run make manifests"
  failed=1
fi

if [[ $failed -eq 0 ]]; then
  log "passed in $(($(date +%s) - started)) s"
else
  log "FAILED"
fi
exit $failed
