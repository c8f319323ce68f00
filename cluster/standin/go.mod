module istio-cni-ts/cluster/standin

go 1.26.0
