#!/usr/bin/env bash
# Builds the Kubernetes components the real-cluster tests run (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, etcd, CoreDNS and kwok)
# from the Go module proxy, once per version, into /opt/loadlab-tools/k8s/<version>/bin. Safe to run again: a
# finished build is kept and reused. Prints the bin directory on its last line.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points every k8s.io staging module at
# ./staging with replace directives, which a dependent module ignores. A small wrapper module
# requires it and pins each staging module to the matching published v0.x.y instead. etcd's
# server is a library module too; the wrapper's own main calls etcdmain as etcd's binary does.
set -euo pipefail

K8S_VERSION="${LOADLAB_K8S_VERSION:-v1.37.2}"
KWOK_VERSION="${LOADLAB_KWOK_VERSION:-v0.8.0}"
COREDNS_VERSION="${LOADLAB_COREDNS_VERSION:-v1.14.7}"
tools="${LOADLAB_TOOLS:-/opt/loadlab-tools}/k8s/${K8S_VERSION}"
bin="$tools/bin"
stamp="$bin/.complete-kwok-${KWOK_VERSION}-coredns-${COREDNS_VERSION}"

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

staging_version="v0.${K8S_VERSION#v1.}"
src="$tools/src"
mkdir -p "$src/etcd" "$bin"
cd "$src"
started=$(date +%s)
echo "building Kubernetes ${K8S_VERSION} components into $bin (cold: tens of minutes on 2 cores)" >&2

{
  echo "module loadlab.dev/k8s-tools"
  echo
  echo "go 1.26.0"
  echo
  echo "require k8s.io/kubernetes ${K8S_VERSION}"
  echo
  echo "replace ("
  for module in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go \
    cloud-provider cluster-bootstrap code-generator component-base component-helpers \
    controller-manager cri-api cri-client cri-streaming csi-translation-lib \
    dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator \
    kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils \
    pod-security-admission sample-apiserver streaming; do
    echo "	k8s.io/${module} => k8s.io/${module} ${staging_version}"
  done
  echo ")"
} > go.mod
cat > etcd/main.go <<'GO'
// The etcd server, as etcd's own binary starts it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

components=(
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubelet
  k8s.io/kubernetes/cmd/kube-proxy
  k8s.io/kubernetes/cmd/kubectl
)
export GOFLAGS="-mod=mod -buildvcs=false"
go get "${components[@]/%/@${K8S_VERSION}}" >&2
go get go.etcd.io/etcd/server/v3/etcdmain >&2

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
