#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (run as root), builds dist/istio-cni and runs the demo:
# one pod through the real CNI chain, its rules printed, everything cleaned up. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build
node --import tsx scripts/demo.ts
