#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (run as root) and runs every test: unit and end-to-end.
# Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build
npm test
