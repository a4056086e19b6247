#!/usr/bin/env bash
# The Helm chart on a real cluster (make kind-test). Needs Docker, kind, kubectl, helm (3.14+ or
# 4) and cargo; exits 2 naming what is missing (a test failure exits 1). Not part of make test:
# CI machines without a Docker engine cannot run it (.github/workflows/kind-test.yaml does).
#
#   1. a kind cluster: 1 control plane, 2 workers (hack/kind-config.yaml; reused if it exists);
#   2. the image from the Dockerfile's builder stage, tagged with the commit, `kind load`ed;
#   3. helm upgrade --install (NodePort 30080 -> 127.0.0.1:18080), rollouts, helm test;
#   4. the conformance suite, both requirement sets, through the Service (conformance toolset);
#   5. tests/e2e_kind.rs: a rolling upgrade (new image tag, then a restart-only setting) under 50
#      sessions of load with 0 failed requests and 0 lost sessions; the Redis pod deleted with
#      every session surviving; a live ConfigMap edit applied by every pod with no restart;
#   6. on failure: logs and cluster state into target/kind-logs;
#   7. the cluster is deleted (KEEP_CLUSTER=1 keeps it).
#
# Env: KIND_CLUSTER (abacus-e2e), KIND_NODE_IMAGE (kindest/node image to pin; default: kind's
# own for its version), KEEP_CLUSTER, NAMESPACE (abacus-e2e).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-abacus-e2e}"
NAMESPACE="${NAMESPACE:-abacus-e2e}"
BASE_URL="http://127.0.0.1:18080"
LOGS="$ROOT/target/kind-logs"

log() { printf '[kind-test] %s\n' "$*" >&2; }
missing() { printf '[kind-test] needs %s\n' "$*" >&2; exit 2; }

# ---- 0. preconditions (exit 2) -------------------------------------------------------------------
command -v docker >/dev/null || missing "docker (the CLI and a running engine)"
docker info >/dev/null 2>&1 || missing "a running Docker engine ('docker info' does not answer)"
command -v kind >/dev/null || missing "kind (https://kind.sigs.k8s.io)"
command -v kubectl >/dev/null || missing "kubectl"
command -v helm >/dev/null || missing "helm 3.14+ or 4"
command -v cargo >/dev/null || missing "cargo"

SHA="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || date +%s)"
TAG="kind-$SHA"
created=0

collect_logs() {
  mkdir -p "$LOGS"
  log "collecting logs into ${LOGS#"$ROOT"/}"
  kubectl -n "$NAMESPACE" get all,cm,pdb,events -o wide >"$LOGS/state.txt" 2>&1 || true
  kubectl -n "$NAMESPACE" describe pods >"$LOGS/pods.txt" 2>&1 || true
  kubectl -n "$NAMESPACE" logs -l app.kubernetes.io/instance=abacus --all-containers --prefix \
    --tail=500 >"$LOGS/logs.txt" 2>&1 || true
  kind export logs "$LOGS/kind" --name "$CLUSTER" >/dev/null 2>&1 || true
}

finish() {
  local rc=$?
  [[ $rc -eq 0 ]] || collect_logs
  if [[ "${KEEP_CLUSTER:-0}" != 1 && $created -eq 1 ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  [[ $rc -eq 0 ]] && log "passed" || log "FAILED (exit $rc)"
  exit "$rc"
}
trap finish EXIT

# ---- 1. cluster --------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
else
  image_args=()
  [[ -n "${KIND_NODE_IMAGE:-}" ]] && image_args=(--image "$KIND_NODE_IMAGE")
  log "creating kind cluster $CLUSTER (1 control plane, 2 workers)"
  kind create cluster --name "$CLUSTER" --config "$ROOT/hack/kind-config.yaml" \
    "${image_args[@]}" --wait 180s
  created=1
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

# ---- 2. image (never :latest, which the kubelet would try to pull) -------------------------------
log "docker build -t abacus:$TAG (the Dockerfile's builder stage)"
docker build -t "abacus:$TAG" "$ROOT"
docker tag "abacus:$TAG" "abacus:$TAG-next"
kind load docker-image "abacus:$TAG" "abacus:$TAG-next" --name "$CLUSTER"

# ---- 3. install, rollouts, helm test -----------------------------------------------------------
values="$(mktemp)"
cat >"$values" <<YAML
image: {repository: abacus, tag: "$TAG", pullPolicy: Never}
service: {type: NodePort, nodePort: 30080}
config:
  toolsets: [conformance, calculator]
  # Every request reaches Abacus from kube-proxy's node addresses: no per-client limit here.
  rateLimitMax: 0
  logLevel: info
YAML
log "helm upgrade --install abacus charts/abacus -n $NAMESPACE"
helm upgrade --install abacus "$ROOT/charts/abacus" -n "$NAMESPACE" --create-namespace \
  -f "$values" --wait --timeout 300s
kubectl -n "$NAMESPACE" rollout status deployment/abacus --timeout=180s
kubectl -n "$NAMESPACE" rollout status statefulset/abacus-redis --timeout=180s
helm test abacus -n "$NAMESPACE" --logs --timeout 120s

for _ in $(seq 1 60); do
  curl -fsS --max-time 2 "$BASE_URL/health/ready" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS --max-time 2 "$BASE_URL/health/ready" >/dev/null || {
  log "the NodePort does not answer on $BASE_URL"
  exit 1
}

# ---- 4. conformance through the Service --------------------------------------------------------
log "conformance suite through the Service ($BASE_URL/mcp)"
bash "$ROOT/hack/conformance.sh" "$BASE_URL/mcp" "$ROOT/target/kind-conformance"

# ---- 5. upgrade under load, Redis pod deletion, live ConfigMap edit ------------------------------
log "cargo test --test e2e_kind (rolling upgrade under load, Redis restart, live config)"
ABACUS_E2E_BASE_URL="$BASE_URL" ABACUS_E2E_NAMESPACE="$NAMESPACE" ABACUS_E2E_VALUES="$values" \
  ABACUS_E2E_CHART="$ROOT/charts/abacus" ABACUS_E2E_TAG="$TAG" \
  cargo test --release --test e2e_kind -- --ignored --test-threads=1 --nocapture
