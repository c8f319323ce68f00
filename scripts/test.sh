#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (run as root) and runs every test: unit and end-to-end.
# Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Istio's own programs, the oracles of test/compat/ (built once into /var/cache/istio-cni-ts).
bash cluster/build.sh istio >/dev/null
npm run build
npm test
