#!/usr/bin/env bash
# Idempotent machine setup for building and testing istio-cni (Debian 12, as root).
# - installs the Debian packages the e2e tests need (only when dpkg says some are missing;
#   `apt-get update` only when the package lists are absent or the install fails without it)
# - runs `npm ci` in the repo root (skipped when node_modules matches package-lock.json)
# - builds the real-cluster tests' programs and helm from their Go modules (cluster/build.sh k8s,
#   istio, helm) into a cache outside the work tree, keyed by the pinned versions
# Safe to run repeatedly; the second run takes a few seconds.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES=(iptables nftables iproute2 containernetworking-plugins golang-go golang-github-appc-cni-dev openssl python3
  containerd runc podman busybox-static gcc libc6-dev debootstrap fonts-dejavu-core)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: must run as root" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed$'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Update the lists only if there are none yet, or if installing from the current ones fails.
  if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    apt-get update
  fi
  if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  fi
else
  echo "setup.sh: Debian packages already installed"
fi

cd "$REPO_ROOT"
# npm ci wipes and reinstalls node_modules; skip it when the installed tree already matches the lock file.
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.setup-lock-sha256"
if [ -d node_modules ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_hash" ]; then
  echo "setup.sh: node_modules up to date"
else
  npm ci --no-audit --no-fund
  echo "$lock_hash" > "$stamp"
fi

# Kubernetes v1.37.2 + etcd, and Istio's programs (istioctl for kube-inject): cold, each takes
# 10-20 minutes on 2 cores (see docs/real-cluster.md); helm (the chart's lint and
# render, the cluster's install): ~2 minutes; warm, a hash and a stat.
for kit in k8s istio helm; do
  echo "setup.sh: cluster kit $kit in $(bash cluster/build.sh "$kit")"
done
