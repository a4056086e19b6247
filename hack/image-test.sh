#!/usr/bin/env bash
# The container image, tested with real containers (make image-test, part of make test).
#
#   hack/image-test.sh
#
# 1. Installs podman, runc and iptables when missing (hack/install-tools.sh image; needs root, as podman
#    runs rootful here) and checks that a container can run at all: if not, it fails and says why.
# 2. Builds, with no registry: a base image (FROM scratch plus the shared libraries that `ldd`
#    lists for the binary and a passwd entry for uid 65532: what distroless/cc provides), a Redis
#    image (the host's redis-server, redis-cli, sh, cat and grep with their libraries, and
#    /data owned by uid 999, as in the official image the chart uses), and the Abacus image from
#    the Dockerfile's `prebuilt` stage with target/release/abacus stripped of debug info (what
#    the `dist` profile builds). The Abacus image is tagged a second time as the "new version"
#    of a rolling update.
# 3. Runs tests/image.rs (--ignored) against them: hardened container, three containers behind
#    nginx with a rolling replacement under load, Redis replaced on its named volume. Then
#    tests/chart_pods.rs (--ignored): the chart rendered with these images (helm: HELM, else
#    .tools/bin/helm, else helm on PATH, else hack/install-tools.sh chart), its Redis and Abacus
#    pod templates played with `podman kube play`, and the chart's `helm test` Pod against them.
# 4. Checks that the tests left no container, pod, network or volume of this run behind, then
#    removes everything of the run (on failure or interrupt too): images are tagged per run,
#    containers, pods and networks carry the label abacus.test.run=RUN, volumes carry it or (the
#    ones `podman kube play` makes) are named RUN-*.
#
# Uses hack/containers.conf (CONTAINERS_CONF): ulimits this sandbox allows, and runc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="$ROOT/hack/containers.conf"
RUN="abacus-it-$(date +%s)-$$"
LABEL="abacus.test.run=$RUN"
BASE="localhost/abacus-test-base:$RUN"
REDIS="localhost/abacus-test-redis:$RUN"
IMAGE="localhost/abacus-test:$RUN"
NEXT="localhost/abacus-test:$RUN-next"
BIN="$ROOT/target/release/abacus"

log() { printf '[image-test] %s\n' "$*" >&2; }
die() { printf '[image-test] ERROR: %s\n' "$*" >&2; exit 1; }

bash "$ROOT/hack/install-tools.sh" apt image
command -v podman >/dev/null || die "podman is not installed (hack/install-tools.sh image needs root and apt)"
[[ -x "$BIN" ]] || die "$BIN is missing: run 'make release' first"
HELM="${HELM:-$ROOT/.tools/bin/helm}"
if ! command -v "$HELM" >/dev/null; then
  if command -v helm >/dev/null; then
    HELM="$(command -v helm)"
  else
    bash "$ROOT/hack/install-tools.sh" chart
    HELM="$ROOT/.tools/bin/helm"
  fi
fi
command -v "$HELM" >/dev/null || die "no helm (hack/install-tools.sh chart, or set HELM)"
HELM="$(command -v "$HELM")"

work="$(mktemp -d)"
# run_volumes: the volumes of this run, labelled or (made by podman kube play) named RUN-*.
run_volumes() {
  {
    podman volume ls -q --filter "label=$LABEL" 2>/dev/null || true
    podman volume ls -q 2>/dev/null | awk -v p="$RUN-" 'index($0, p) == 1' || true
  } | sort -u
}
# leftovers: every container, pod, network and volume of this run still there, one per line.
leftovers() {
  podman ps -a --filter "label=$LABEL" --format 'container {{.Names}}' 2>/dev/null || true
  podman pod ls --filter "label=$LABEL" --format 'pod {{.Name}}' 2>/dev/null || true
  podman network ls --filter "label=$LABEL" --format 'network {{.Name}}' 2>/dev/null || true
  run_volumes | sed 's/^/volume /'
}
cleanup() {
  local ids
  ids="$(podman pod ls -q --filter "label=$LABEL" 2>/dev/null || true)"
  [[ -z "$ids" ]] || podman pod rm -f -t 0 $ids >/dev/null 2>&1 || true
  ids="$(podman ps -aq --filter "label=$LABEL" 2>/dev/null || true)"
  [[ -z "$ids" ]] || podman rm -f -t 0 $ids >/dev/null 2>&1 || true
  ids="$(podman network ls -q --filter "label=$LABEL" 2>/dev/null || true)"
  [[ -z "$ids" ]] || podman network rm -f $ids >/dev/null 2>&1 || true
  ids="$(run_volumes)"
  [[ -z "$ids" ]] || podman volume rm -f $ids >/dev/null 2>&1 || true
  podman rmi -f "$NEXT" "$IMAGE" "$REDIS" "$BASE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- can containers run here at all? ------------------------------------------------------------
if ! podman info >"$work/info" 2>"$work/info.err"; then
  die "podman cannot run on this machine: $(tail -5 "$work/info.err")"
fi

# rootfs_add DIR FILE [AS]: copies FILE (following links) into DIR at AS (default: its own path),
# with every shared library ldd lists for it.
rootfs_add() {
  local dir="$1" file="$2" as="${3:-$2}" lib
  mkdir -p "$dir$(dirname "$as")"
  cp -L "$file" "$dir$as"
  for lib in $(ldd "$file" | grep -o '/[^ ]*'); do
    [[ -e "$dir$lib" ]] && continue
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
}

# rootfs_users DIR: /etc/passwd and /etc/group with root and nonroot (65532), and /tmp.
rootfs_users() {
  mkdir -p "$1/etc" "$1/tmp"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$1/etc/group"
}

started=$(date +%s)
log "run $RUN: building the base, Redis and Abacus images (no registry)"
mkdir -p "$work/ctx" "$work/base" "$work/redis/data"
strip -o "$work/ctx/abacus" "$BIN"
# The base gets the binary's libraries, not the binary: the Dockerfile's prebuilt stage adds it.
rootfs_add "$work/base" "$work/ctx/abacus" /usr/local/bin/abacus
rm "$work/base/usr/local/bin/abacus"
rootfs_users "$work/base"
tar -C "$work/base" -c . | podman import -q - "$BASE" >/dev/null

redis_server="$(command -v redis-server)" || die "redis-server is not installed (hack/install-tools.sh apt)"
redis_cli="$(command -v redis-cli)" || die "redis-cli is not installed (hack/install-tools.sh apt)"
rootfs_add "$work/redis" "$redis_server" /usr/bin/redis-server
# What the chart's Redis container and probes run besides redis-server, as the official image
# has them: `sh -c` with cat (printf is a builtin), and `redis-cli ... | grep -q PONG`.
rootfs_add "$work/redis" "$redis_cli" /usr/bin/redis-cli
rootfs_add "$work/redis" "$(readlink -f /bin/sh)" /bin/sh
rootfs_add "$work/redis" "$(command -v cat)" /bin/cat
rootfs_add "$work/redis" "$(command -v grep)" /bin/grep
rootfs_users "$work/redis"
# The official image's redis user (999, the chart's runAsUser) owns /data there. podman 4.3 does
# not apply the chart's fsGroup to volumes; it gives a new volume the ownership of the image's
# directory at the mount point, so the Redis pod's data volume is writable by 999 this way.
printf 'redis:x:999:999:redis:/data:/sbin/nologin\n' >>"$work/redis/etc/passwd"
printf 'redis:x:999:\n' >>"$work/redis/etc/group"
chown 999:999 "$work/redis/data"
tar -C "$work/redis" -c . |
  podman import -q --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'ENTRYPOINT ["/usr/bin/redis-server"]' --change 'WORKDIR /data' - "$REDIS" >/dev/null

version="$(awk -F'"' '/^version *=/ { print $2; exit }' "$ROOT/Cargo.toml")"
podman build -q --format docker -f "$ROOT/Dockerfile" --target prebuilt \
  --build-arg RUNTIME_IMAGE="$BASE" --build-arg BINARY=abacus --build-arg VERSION="$version" \
  -t "$IMAGE" "$work/ctx" >/dev/null
podman tag "$IMAGE" "$NEXT"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "images built in $(($(date +%s) - started)) s; $IMAGE is $((size / 1000000)) MB (binary $(($(stat -c %s "$work/ctx/abacus") / 1000000)) MB)"

# A container that cannot start is a failure with podman's own words, not a skip.
if ! out="$(podman run --rm --read-only --cap-drop=ALL --no-healthcheck "$IMAGE" --version 2>"$work/run.err")"; then
  out="$(cat "$work/run.err")"
  die "a container cannot run on this machine: $out"
fi
[[ "$out" == "abacus $version" ]] || die "the image's abacus --version says '$out', expected 'abacus $version'"

status=0
ABACUS_IMAGE_TEST_IMAGE="$IMAGE" ABACUS_IMAGE_TEST_NEXT="$NEXT" ABACUS_IMAGE_TEST_REDIS="$REDIS" \
  ABACUS_IMAGE_TEST_RUN="$RUN" HELM="$HELM" \
  cargo test --release --no-fail-fast --test image --test chart_pods -- --ignored --nocapture || status=1

left="$(leftovers)"
if [[ -n "$left" ]]; then
  log "FAILED: the tests left these behind:"
  sed 's/^/  /' <<<"$left" >&2
  status=1
fi
if [[ $status -eq 0 ]]; then
  log "passed in $(($(date +%s) - started)) s; nothing left behind"
else
  log "FAILED"
fi
exit $status
