//go:build tools

// Package tools pins Istio's programs that the tests run beside ours as oracles: pilot-agent (its
// istio-iptables subcommand), Istio's own istio-cni plugin, and istioctl (kube-inject).
package tools

import (
	_ "istio.io/istio/cni/cmd/istio-cni"
	_ "istio.io/istio/istioctl/cmd/istioctl"
	_ "istio.io/istio/pilot/cmd/pilot-agent"
)
