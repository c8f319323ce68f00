#!/usr/bin/env bash
# By hand on a node, as root: put istio-cni into the node's CNI config, or take it out again.
# The same code as the DaemonSet's installer, run once (`istio-cni install --once` / `uninstall`).
#
#   scripts/cni-entry.sh add [EXECUTABLE]   copy EXECUTABLE (default dist/istio-cni) to $CNI_BIN_DIR/istio-cni
#                                           and put our entry last in the primary config in $CNI_NET_DIR
#   scripts/cni-entry.sh remove             take our entry out of every config in $CNI_NET_DIR and
#                                           remove $CNI_BIN_DIR/istio-cni
#
# Environment (defaults): CNI_NET_DIR (/etc/cni/net.d), CNI_BIN_DIR (/opt/cni/bin); CNI_CONF_NAME,
# CNI_NETWORK_CONFIG, KUBECFG_FILE_NAME as for the installer (docs/operations.md). No kubeconfig is written
# unless KUBERNETES_SERVICE_HOST (and SERVICE_ACCOUNT_PATH, a dir with `token` and `ca.crt`) are set:
# the entry points the plugin at $CNI_NET_DIR/ZZZ-istio-cni-kubeconfig, so put one there.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CNI_NET_DIR="${CNI_NET_DIR:-/etc/cni/net.d}"
CNI_BIN_DIR="${CNI_BIN_DIR:-/opt/cni/bin}"
# On the node itself the installer sees the host's dirs where they are.
export MOUNTED_CNI_NET_DIR="$CNI_NET_DIR" MOUNTED_CNI_BIN_DIRS="$CNI_BIN_DIR"

case "${1:-}" in
  add)
    executable="$(realpath "${2:-$REPO_ROOT/dist/istio-cni}")"
    CNI_BINARY_SOURCE="$executable" exec "$executable" install --once
    ;;
  remove)
    executable="$REPO_ROOT/dist/istio-cni"
    [ -x "$executable" ] || executable="$CNI_BIN_DIR/istio-cni"
    exec "$executable" uninstall
    ;;
  *)
    echo "usage: $0 add [EXECUTABLE] | remove" >&2
    exit 2
    ;;
esac
