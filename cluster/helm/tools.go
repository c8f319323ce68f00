//go:build tools

// Package tools pins helm, which the tests use to lint and render the chart in deploy/charts.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
