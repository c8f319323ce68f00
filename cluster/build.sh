#!/usr/bin/env bash
# Builds the cluster kit's Go programs once into a cache outside the work tree, keyed by the
# pinned versions (the hash of the module's go.mod and go.sum): a second run builds nothing.
#   cluster/build.sh k8s     kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl, etcd
#   cluster/build.sh istio   pilot-agent, istio-cni, istioctl (from cluster/istio)
#   cluster/build.sh helm    helm (from cluster/helm)
# Prints the bin directory on stdout. Cache root: $ISTIO_CNI_CACHE (default /var/cache/istio-cni-ts).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kit="${1:?usage: build.sh k8s|istio|helm}"
cache_root="${ISTIO_CNI_CACHE:-/var/cache/istio-cni-ts}"
export PATH="/usr/local/go/bin:$PATH"   # Debian's golang-go (1.19) is older than these modules need

module="$here/$kit"
[[ -f "$module/go.mod" ]] || { echo "build.sh: no module $module" >&2; exit 2; }
# Bump when the build flags below change, so that the cache key changes with them.
recipe=1
key="$( (cat "$module/go.mod" "$module/go.sum"; echo "recipe $recipe") | sha256sum | cut -c1-12)"
out="$cache_root/$kit-$key"
if [[ -f "$out/.complete" ]]; then echo "$out/bin"; exit 0; fi
# Two test runs asking for the same kit at once: the second waits for the first's build.
mkdir -p "$cache_root"
exec 9>"$cache_root/$kit.lock"
flock 9
if [[ -f "$out/.complete" ]]; then echo "$out/bin"; exit 0; fi

rm -rf "$out.tmp"; mkdir -p "$out.tmp/bin"
cd "$module"
version_flags() { # $1 = version (vX.Y.Z): what hack/lib/version.sh stamps into a release build
  local v="$1" major minor; major="${v#v}"; major="${major%%.*}"; minor="$(echo "$v" | cut -d. -f2)"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$p" "$v" "$p" "$major" "$p" "$minor" "$p"
  done
}
start=$(date +%s)
case "$kit" in
  k8s)
    v="$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' go.mod)"
    go build -trimpath -ldflags "-s -w $(version_flags "$v")" -o "$out.tmp/bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/bin/etcd" go.etcd.io/etcd/server/v3
    ;;
  istio)
    v="$(awk '$1=="istio.io/istio"{print $2; exit}' go.mod)"
    go build -trimpath -ldflags "-s -w -X istio.io/istio/pkg/version.buildVersion=$(cat "$(go list -m -f '{{.Dir}}' istio.io/istio)/VERSION")-${v##*-}" -o "$out.tmp/bin/" \
      istio.io/istio/pilot/cmd/pilot-agent istio.io/istio/cni/cmd/istio-cni istio.io/istio/istioctl/cmd/istioctl
    ;;
  helm)
    go build -trimpath -ldflags "-s -w" -o "$out.tmp/bin/helm" helm.sh/helm/v3/cmd/helm
    ;;
  *) echo "build.sh: unknown kit $kit" >&2; exit 2 ;;
esac
echo "build.sh: $kit built in $(( $(date +%s) - start )) s" >&2
touch "$out.tmp/.complete"
rm -rf "$out"; mv "$out.tmp" "$out"
echo "$out/bin"
