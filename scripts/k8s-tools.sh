#!/usr/bin/env bash
# Builds the Kubernetes components the real-cluster tests run (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, etcd, CoreDNS and kwok)
# from the Go module proxy, once per version and pinned dependencies, into
# /opt/loadlab-tools/k8s/<version>/bin. Safe to run again: a finished build is kept and reused.
# Prints the bin directory on its last line.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points every k8s.io staging module at
# ./staging with replace directives, which a dependent module ignores. The wrapper module in
# scripts/k8s-tools requires it and pins each staging module to the matching published v0.x.y
# instead; etcd's server is a library module too, and the wrapper's own main calls etcdmain as
# etcd's binary does. Its go.mod and go.sum are committed and built as they are (-mod=readonly),
# so every machine builds the same components: every dependency at the version Kubernetes pins
# (etcd v3.7.0, grpc v1.82.1). They were made with, in that directory:
#   go get k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}@v1.37.2
#   go get go.etcd.io/etcd/server/v3/etcdmain@v3.7.0   # the etcd Kubernetes v1.37.2 requires
set -euo pipefail

module="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/k8s-tools"
K8S_VERSION="$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$module/go.mod")"
[ -n "$K8S_VERSION" ] || { echo "no k8s.io/kubernetes version in $module/go.mod" >&2; exit 1; }
KWOK_VERSION="${LOADLAB_KWOK_VERSION:-v0.8.0}"
COREDNS_VERSION="${LOADLAB_COREDNS_VERSION:-v1.14.7}"
tools="${LOADLAB_TOOLS:-/opt/loadlab-tools}/k8s/${K8S_VERSION}"
bin="$tools/bin"
# A build is kept per version and per go.sum: a changed pin builds again.
sums="$(cat "$module/go.sum" "$module/go.mod" | sha256sum | cut -c1-12)"
stamp="$bin/.complete-${sums}-kwok-${KWOK_VERSION}-coredns-${COREDNS_VERSION}"

if [ -f "$stamp" ]; then
  echo "$bin"
  exit 0
fi
# One build at a time: a second caller waits for the first and then finds it done.
mkdir -p "$tools"
exec 9>"$tools/.lock"
flock 9
if [ -f "$stamp" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "Go is needed to build the Kubernetes components (apt-get install golang-go, or Go from go.dev)" >&2; exit 1; }

src="$tools/src"
rm -rf "$src"
mkdir -p "$src" "$bin"
cp -r "$module/." "$src/"
cd "$src"
started=$(date +%s)
echo "building Kubernetes ${K8S_VERSION} components into $bin (cold: tens of minutes on 2 cores)" >&2

components=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubelet
  k8s.io/kubernetes/cmd/kube-proxy
  k8s.io/kubernetes/cmd/kubectl
)
export GOFLAGS="-mod=readonly -buildvcs=false"

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
version_flags="-X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
version_flags+=" -X k8s.io/component-base/version.gitMajor=1"
version_flags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
version_flags+=" -X k8s.io/component-base/version.gitTreeState=clean"
version_flags+=" -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w ${version_flags}" -o "$bin/" "${components[@]}" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/etcd" ./etcd >&2

# kwok (simulated nodes) and CoreDNS (cluster DNS) have no replace directives: they install as
# they are, each with its own dependencies.
for program in "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "github.com/coredns/coredns@${COREDNS_VERSION}"; do
  GOBIN="$bin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$program" >&2
done

echo "built in $(( $(date +%s) - started )) s" | tee "$bin/.build-time" >&2
touch "$stamp"
echo "$bin"
