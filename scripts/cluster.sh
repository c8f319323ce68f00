#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, with istio-cni installed from deploy/
# (README: "Try it on a real cluster"). As root, on Debian 12:
#   bash scripts/cluster.sh up                 build what is missing, start the cluster, apply our DaemonSet
#   bash scripts/cluster.sh status             components, PIDs, node and DaemonSet
#   bash scripts/cluster.sh inject FILE        FILE (Deployments, Pods...) through istioctl kube-inject, offline
#   bash scripts/cluster.sh rules NS/POD       the pod's nat table, read in its netns on the node
#   bash scripts/cluster.sh down               stop everything and put the machine back as it was
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == up ]]; then
  bash scripts/setup.sh >&2
  npm run --silent build -- --if-stale >&2
fi
exec node --import tsx scripts/cluster.ts "$@"
