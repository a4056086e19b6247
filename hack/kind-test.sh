#!/usr/bin/env bash
# make kind-test: the Helm chart on a real Kubernetes cluster (kind), end to end.
#
#   bash hack/kind-test.sh
#
# Needs Docker (the CLI and a running engine), kind, kubectl, helm 3.14+ or 4, cargo, curl and
# npm (hack/install-tools.sh bootstraps Node 22 and the MCP conformance suite with it). When any
# is missing it names every missing one and exits 2 without touching anything; a failed step or
# test exits 1. Not part of `make test`, which needs no Docker engine;
# .github/workflows/kind-test.yaml runs it on GitHub's runners.
#
#   0. preconditions; the e2e test binary is compiled and the image built before any cluster
#      exists, so that a compile error costs no cluster;
#   1. a kind cluster of 1 control plane and 2 workers (hack/kind-config.yaml: NodePort 30080
#      published on 127.0.0.1:18080), or the existing one of that name, checked to be that shape;
#   2. the image from the Dockerfile (compiled in its builder stage), tagged abacus:kind-<commit>
#      and abacus:kind-<commit>-next (for the upgrade test), loaded into the nodes: never
#      :latest, which the kubelet would try to pull; pullPolicy Never;
#   3. helm upgrade --install (NodePort Service, rate limit off, toolsets conformance and
#      calculator), the rollouts of the Deployment and the Redis StatefulSet, helm test;
#   4. the official MCP conformance suite, both requirement sets, through the NodePort;
#   5. tests/e2e_kind.rs: two rolling upgrades under 50 sessions of load, the Redis pod deleted,
#      a live ConfigMap edit (KIND_SENTINEL=1: then Redis with Sentinel and the Redis test again);
#   6. on failure: cluster state, pod descriptions, every container's logs and `kind export logs`
#      into target/kind-logs;
#   7. the cluster is deleted, after a failure too (KEEP_CLUSTER=1 keeps it).
#
# Environment:
#   KIND_CLUSTER     the kind cluster's name (default abacus-e2e); an existing one is reused.
#   KIND_NODE_IMAGE  the node image (default: Kubernetes 1.36.1, pinned by digest below).
#   KEEP_CLUSTER=1   keep the cluster afterwards, to look around or to run again faster.
#   KIND_SENTINEL=1  after the tests, switch the release to Redis Sentinel and delete the master.
#
# kubectl and helm use a kubeconfig of their own (in a temporary folder): your current context
# is neither used nor changed. With KEEP_CLUSTER=1: `kind export kubeconfig --name abacus-e2e`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CLUSTER="${KIND_CLUSTER:-abacus-e2e}"
# The node image kind v0.32.0 was released with (its pkg/apis/config/defaults/image.go; also in
# its release notes). Node images are only guaranteed to work with the kind release that built
# them, and only the digest identifies that build: the tag alone may name another build.
PINNED_NODE_IMAGE="kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"
PINNED_FOR_KIND="v0.32."
NODE_IMAGE="${KIND_NODE_IMAGE:-$PINNED_NODE_IMAGE}"
# The tests expect these names: release abacus makes deployment/abacus, configmap/abacus-config,
# statefulset/abacus-redis.
NAMESPACE=abacus-e2e
RELEASE=abacus
CHART="$ROOT/charts/abacus"
# Must match hack/kind-config.yaml (checked on the cluster itself in check_cluster).
NODE_PORT=30080
HOST_PORT=18080
BASE_URL="http://127.0.0.1:$HOST_PORT"
LOGS="$ROOT/target/kind-logs"
CONFORMANCE_OUT="$ROOT/target/kind-conformance"

STAGE=setup       # setup: no cluster yet; cluster: there is one, logs can be collected
CANNOT_RUN=0      # 1: a precondition is missing (exit 2, not 1)
OWN_CLUSTER=0     # 1: this run created or adopted the cluster, so teardown deletes it
HELM_MAJOR=0
WORK=""

log() { printf '[kind-test] %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
sha256() { if have sha256sum; then sha256sum; else shasum -a 256; fi; }

# cannot_run LINE...: the machine cannot run this test (exit 2, distinct from a failure).
cannot_run() {
  printf '[kind-test] cannot run here; needs:\n' >&2
  printf '  - %s\n' "$@" >&2
  printf '[kind-test] no cluster was created or changed (exit 2; a failed test exits 1)\n' >&2
  CANNOT_RUN=1
  exit 2
}

# ---- 0. preconditions --------------------------------------------------------------------------

# `docker info` asks the engine; bounded, since a stale socket can make it hang.
docker_answers() {
  if have timeout; then
    timeout 30 docker info >/dev/null 2>&1
  else
    docker info >/dev/null 2>&1
  fi
}

# Sets HELM_MAJOR; true for helm 3.14 or newer (3.14 has --set-json with lists and the rollout
# waits this script relies on; 4 applies server-side).
helm_supported() {
  local v
  v="$(helm version --short 2>/dev/null)" || return 1   # e.g. v3.14.4+g81c902a, v4.3.1+gc0d08d0
  [[ $v =~ ^v([0-9]+)\.([0-9]+) ]] || return 1
  HELM_MAJOR="${BASH_REMATCH[1]}"
  local minor="${BASH_REMATCH[2]}"
  ((HELM_MAJOR > 3 || (HELM_MAJOR == 3 && minor >= 14)))
}

check_preconditions() {
  local missing=()
  if ! have docker; then
    missing+=("docker: the Docker CLI and a running engine (https://docs.docker.com/engine/install/)")
  elif ! docker_answers; then
    missing+=("a running Docker engine: 'docker info' does not answer (start Docker; check DOCKER_HOST and access to its socket)")
  fi
  have kind || missing+=("kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)")
  have kubectl || missing+=("kubectl (https://kubernetes.io/docs/tasks/tools/)")
  if ! have helm; then
    missing+=("helm 3.14+ or 4 (https://helm.sh/docs/intro/install/)")
  elif ! helm_supported; then
    missing+=("helm 3.14+ or 4 (found $(helm version --short 2>/dev/null || echo 'an unreadable version'))")
  fi
  have cargo || missing+=("cargo (https://rustup.rs)")
  have curl || missing+=("curl")
  have npm || missing+=("npm, with any Node >= 18 (hack/install-tools.sh installs Node 22 and the conformance suite with it)")
  ((${#missing[@]} == 0)) || cannot_run "${missing[@]}"

  local kind_version
  kind_version="$(kind version)"
  if [[ -z "${KIND_NODE_IMAGE:-}" && $kind_version != "kind $PINNED_FOR_KIND"* ]]; then
    log "WARNING: $kind_version may not support the pinned node image, built for kind" \
      "${PINNED_FOR_KIND}x; if the cluster does not start, set KIND_NODE_IMAGE to an image" \
      "from your kind release's notes (https://github.com/kubernetes-sigs/kind/releases)"
  fi
  log "docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null);" \
    "$kind_version; kubectl $(kubectl version --client 2>/dev/null | sed -n 's/^Client Version: //p');" \
    "helm $(helm version --short); $(cargo --version)"
}

# ---- teardown (trap) ---------------------------------------------------------------------------

collect_logs() {
  rm -rf "$LOGS"
  mkdir -p "$LOGS"
  log "collecting cluster state and logs into ${LOGS#"$ROOT"/}"
  kubectl get nodes -o wide >"$LOGS/nodes.txt" 2>&1
  kubectl -n "$NAMESPACE" get all,cm,pdb,pvc,events -o wide >"$LOGS/state.txt" 2>&1
  kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp >"$LOGS/events.txt" 2>&1
  kubectl -n "$NAMESPACE" describe pods >"$LOGS/pods.txt" 2>&1
  {
    helm status "$RELEASE" -n "$NAMESPACE"
    helm history "$RELEASE" -n "$NAMESPACE"
    helm get values "$RELEASE" -n "$NAMESPACE" --all
  } >"$LOGS/helm.txt" 2>&1
  # Per pod, so that no log is cut (a label selector limits kubectl logs to 10 lines a pod).
  local pod
  for pod in $(kubectl -n "$NAMESPACE" get pods -o name 2>/dev/null); do
    kubectl -n "$NAMESPACE" logs "$pod" --all-containers --prefix --timestamps \
      >>"$LOGS/logs.txt" 2>&1
    kubectl -n "$NAMESPACE" logs "$pod" --all-containers --prefix --timestamps --previous \
      >>"$LOGS/logs-previous.txt" 2>/dev/null
  done
  kind export logs "$LOGS/kind" --name "$CLUSTER" >/dev/null 2>&1
}

teardown() {
  ((OWN_CLUSTER)) || return 0
  if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
    log "KEEP_CLUSTER=1: kind cluster $CLUSTER kept (kubectl: kind export kubeconfig --name" \
      "$CLUSTER; remove: kind delete cluster --name $CLUSTER)"
    return 0
  fi
  log "deleting kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >/dev/null 2>&1 ||
    log "WARNING: kind delete cluster --name $CLUSTER failed"
}

on_exit() {
  local rc=$?
  set +e
  trap - EXIT
  if ((rc != 0)) && [[ $STAGE == cluster ]]; then
    collect_logs
  fi
  teardown
  [[ -n "$WORK" ]] && rm -rf "$WORK"
  if ((rc == 0)); then
    log "passed"
    exit 0
  fi
  ((CANNOT_RUN)) && exit 2
  log "FAILED (exit $rc)$([[ $STAGE == cluster ]] && echo "; logs in ${LOGS#"$ROOT"/}")"
  exit 1
}

# ---- 1. the cluster ----------------------------------------------------------------------------

# (grep without -q reads to the end: with pipefail, an early exit could fail kind on SIGPIPE.)
cluster_exists() { kind get clusters 2>/dev/null | grep -x "$CLUSTER" >/dev/null; }

# The cluster hack/kind-config.yaml describes: 3 nodes, the NodePort published on the host port.
check_cluster() {
  local nodes mapping
  nodes="$(kubectl get nodes --no-headers 2>/dev/null | wc -l)"
  mapping="$(docker port "$CLUSTER-control-plane" "$NODE_PORT/tcp" 2>/dev/null || true)"
  if ((nodes != 3)) || ! grep -qx "127.0.0.1:$HOST_PORT" <<<"$mapping"; then
    printf 'kind cluster %s is not the one hack/kind-config.yaml makes (%s nodes, NodePort %s published on "%s"); delete it (kind delete cluster --name %s) or set KIND_CLUSTER to another name\n' \
      "$CLUSTER" "$nodes" "$NODE_PORT" "$mapping" "$CLUSTER"
    return 1
  fi
}

# An existing cluster of that name is checked before anything is built: one of another shape is
# left alone (exit 2).
check_existing_cluster() {
  cluster_exists || return 0
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
  local why
  why="$(check_cluster)" || cannot_run "$why"
}

create_or_reuse_cluster() {
  # From here on the cluster is this run's to clean up (unless KEEP_CLUSTER=1).
  OWN_CLUSTER=1
  if cluster_exists; then
    log "reusing kind cluster $CLUSTER"
  else
    log "creating kind cluster $CLUSTER (1 control plane, 2 workers; $NODE_IMAGE)"
    kind create cluster --name "$CLUSTER" --config "$ROOT/hack/kind-config.yaml" \
      --image "$NODE_IMAGE" --kubeconfig "$KUBECONFIG" --wait 300s
    check_cluster >&2
  fi
  STAGE=cluster
  kubectl wait --for=condition=Ready nodes --all --timeout=300s >/dev/null
  log "Kubernetes $(kubectl version 2>/dev/null | sed -n 's/^Server Version: //p')," \
    "nodes: $(kubectl get nodes --no-headers -o custom-columns=NAME:.metadata.name | tr '\n' ' ')"
}

# ---- 2. the image ------------------------------------------------------------------------------

# kind-<commit>; if the build context (.dockerignore lets through only Cargo.toml, Cargo.lock, src/
# and benches/) differs from the commit, a hash of it is added: a reused cluster must never keep
# running an older binary under the same tag.
image_tag() {
  local sha
  if sha="$(git rev-parse --short HEAD 2>/dev/null)" &&
    [[ -z "$(git status --porcelain -- Cargo.toml Cargo.lock src benches)" ]]; then
    echo "kind-$sha"
    return
  fi
  local sum
  sum="$({
    find Cargo.toml Cargo.lock src benches -type f | LC_ALL=C sort
    find Cargo.toml Cargo.lock src benches -type f -print0 | LC_ALL=C sort -z | xargs -0 cat
  } | sha256 | cut -c1-12)"
  echo "kind-${sha:-src}-dirty-$sum"
}

build_image() {
  log "docker build -t abacus:$TAG (compiled in the Dockerfile's builder stage)"
  docker build -t "abacus:$TAG" "$ROOT"
  # The same image under a second tag: test a rolls the Deployment from one tag to the other.
  docker tag "abacus:$TAG" "abacus:$TAG-next"
}

load_image() {
  log "kind load docker-image abacus:$TAG abacus:$TAG-next"
  kind load docker-image "abacus:$TAG" "abacus:$TAG-next" --name "$CLUSTER"
}

# ---- 3. install --------------------------------------------------------------------------------

helm_force() {
  # Helm 4 applies server-side: take back fields a kubectl edit (test c) left to another manager.
  ((HELM_MAJOR >= 4)) && echo --force-conflicts
  return 0
}

wait_rollouts() {
  kubectl -n "$NAMESPACE" rollout status "deployment/$RELEASE" --timeout=300s
  kubectl -n "$NAMESPACE" rollout status "statefulset/$RELEASE-redis" --timeout=300s
}

install_release() {
  log "helm upgrade --install $RELEASE charts/abacus -n $NAMESPACE (image abacus:$TAG)"
  # rateLimitMax=0: every request reaches the pods from a node address through kube-proxy, so a
  # per-client limit would count all tests as one client. No allowedHosts: the tests use
  # 127.0.0.1, and loopback names always pass the Host check.
  # shellcheck disable=SC2046 # helm_force prints one flag or nothing
  helm upgrade --install "$RELEASE" "$CHART" -n "$NAMESPACE" --create-namespace \
    --set image.repository=abacus --set image.tag="$TAG" --set image.pullPolicy=Never \
    --set service.type=NodePort --set service.nodePort="$NODE_PORT" \
    --set config.rateLimitMax=0 \
    --set-json 'config.toolsets=["conformance","calculator"]' \
    $(helm_force) --wait --timeout 300s
  wait_rollouts
  log "helm test $RELEASE"
  helm test "$RELEASE" -n "$NAMESPACE" --logs --timeout 180s
}

wait_node_port() {
  local i
  for ((i = 0; i < 60; i++)); do
    curl -fsS --noproxy '*' --max-time 2 "$BASE_URL/health/ready" >/dev/null 2>&1 && return 0
    sleep 1
  done
  log "the NodePort does not answer: $BASE_URL/health/ready"
  return 1
}

# ---- 4. conformance, 5. tests ------------------------------------------------------------------

run_conformance() {
  log "the MCP conformance suite through the NodePort ($BASE_URL/mcp)"
  bash "$ROOT/hack/conformance.sh" "$BASE_URL/mcp" "$CONFORMANCE_OUT"
}

# run_e2e [FILTER]: tests/e2e_kind.rs, one test at a time, in name order.
run_e2e() {
  log "cargo test --release --test e2e_kind${1:+ $1}"
  ABACUS_E2E_BASE_URL="$BASE_URL" ABACUS_E2E_NAMESPACE="$NAMESPACE" \
    cargo test --release --test e2e_kind -- --ignored --test-threads=1 --nocapture "$@"
}

# Redis with Sentinel in the same release (the StatefulSet is updated in place; pod 0 keeps the
# data), then the Redis test again, which then deletes the master's pod.
run_sentinel() {
  log "switching $RELEASE to Redis Sentinel (3 Redis pods, a Sentinel beside each)"
  # shellcheck disable=SC2046 # helm_force prints one flag or nothing
  helm upgrade "$RELEASE" "$CHART" -n "$NAMESPACE" --reuse-values \
    --set redis.sentinel.enabled=true $(helm_force) --wait --timeout 600s
  wait_rollouts
  run_e2e b_sessions_survive_the_redis_pod_being_deleted
}

# ---- main --------------------------------------------------------------------------------------

check_preconditions
WORK="$(mktemp -d)"
export KUBECONFIG="$WORK/kubeconfig"
trap on_exit EXIT
trap 'exit 130' INT TERM
check_existing_cluster

log "compiling tests/e2e_kind.rs"
cargo test --release --test e2e_kind --no-run
TAG="$(image_tag)"
build_image
create_or_reuse_cluster
load_image
install_release
wait_node_port
run_conformance
run_e2e
if [[ "${KIND_SENTINEL:-0}" == 1 ]]; then
  run_sentinel
fi
