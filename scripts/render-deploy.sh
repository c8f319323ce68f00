#!/usr/bin/env bash
# deploy/istio-cni.yaml is the chart deploy/charts/istio-cni rendered with its default values, for
# `kubectl apply -f` without Helm. Run this after changing the chart; test/install/chart.test.ts
# fails while the two differ. helm is built from its Go module (cluster/build.sh helm, cached).
set -euo pipefail
cd "$(dirname "$0")/.."
helm="$(bash cluster/build.sh helm)/helm"
"$helm" template istio-cni deploy/charts/istio-cni --namespace kube-system > deploy/istio-cni.yaml.tmp
mv deploy/istio-cni.yaml.tmp deploy/istio-cni.yaml
echo "render-deploy.sh: wrote deploy/istio-cni.yaml"
