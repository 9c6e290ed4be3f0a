#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A real Kubernetes cluster on this machine, from real components: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, a kubelet on containerd (this machine is the node),
# kube-proxy and CoreDNS, with TLS everywhere a client meets the API, service-account tokens
# and RBAC on. Everything lives under one directory; `down` stops all of it and removes the
# network it made.
#
#   bash scripts/cluster.sh up        # build what is missing (cached), start, wait until Ready
#   bash scripts/cluster.sh images    # build the loadlab and Postgres images, import them
#   bash scripts/cluster.sh kwok N    # N simulated nodes beside the real one (kwok)
#   bash scripts/cluster.sh node add NAME KERNEL  # a node booting KERNEL under QEMU (a Debian
#                                     # package name or a vmlinuz path); also: node stop NAME,
#                                     # node remove NAME, nodes (scripts/kernel-node.sh)
#   bash scripts/cluster.sh down      # stop everything, remove the network (keeps the cache)
#   bash scripts/cluster.sh status    # what runs
#   export KUBECONFIG=$(bash scripts/cluster.sh kubeconfig)
#
# Pods live on a bridge of their own (10.234.0.0/24, gateway 10.234.0.1, which is also where
# the API server, the kubelet and DNS listen; .200 and up are kernel nodes, whose pods are in
# 10.234.N.0/24). A pod has routes to the bridge, to other nodes' pods (10.234.0.0/16) and to
# Service addresses (10.235.0.0/24) only, and forwarding is on only from that bridge back onto it: a
# pod reaches other pods, Services and this machine's servers on the bridge, never another
# network.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# One file per job (scripts/cluster/), configs as files (scripts/cluster/config/).
# shellcheck source=cluster/common.sh
source "$here/cluster/common.sh"
# shellcheck source=cluster/pki.sh
source "$here/cluster/pki.sh"
# shellcheck source=cluster/network.sh
source "$here/cluster/network.sh"
# shellcheck source=cluster/components.sh
source "$here/cluster/components.sh"

# Every process a cluster runs, in the order they start (down stops them in reverse, containerd
# last, apart).
started_in_order=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns kwok)

up() {
  need_root
  install_packages
  local bin begun
  bin="$(tools_bin)"
  begun=$(date +%s)
  mkdir -p "$dir" "$logs" "$run"
  warn_if_disk_is_short
  make_pki
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kube-proxy kube-proxy
  kubeconfig coredns coredns
  kubeconfig bench-controller bench-controller
  kubeconfig "node-$node" "node-$node"
  network_up
  start_containerd
  start_control_plane "$bin"
  apply_cluster_objects "$bin"
  start_node "$bin"
  wait_for "node $node" 180 "$logs/kubelet.log" node_ready "$bin"
  wait_for "the default ServiceAccount" 60 "$logs/kube-controller-manager.log" \
    "$bin/kubectl" get serviceaccount default
  say "up in $(( $(date +%s) - begun )) s: node $node Ready; export KUBECONFIG=$KUBECONFIG"
}

down() {
  need_root
  local i
  kernel_nodes down
  for (( i = ${#started_in_order[@]} - 1; i > 0; i-- )); do
    stop "${started_in_order[i]}"
  done
  # Containers outlive the kubelet: stop every pod sandbox, then containerd itself.
  if alive containerd; then
    local sandboxes
    sandboxes="$(ctr --address "$containerd_sock" -n k8s.io tasks ls -q 2>/dev/null || true)"
    for task in $sandboxes; do
      ctr --address "$containerd_sock" -n k8s.io tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
    done
    stop containerd
  fi
  # Shims left behind by a containerd that was killed.
  pkill -KILL -f "containerd-shim-runc-v2 -namespace k8s.io -address $containerd_sock" 2>/dev/null || true
  # Volumes the kubelet mounted for pods.
  if [ -d "$dir/kubelet/root" ]; then
    { grep -o " $dir/kubelet/root[^ ]*" /proc/mounts || true; } | sort -r | while read -r mount; do
      umount -l "$mount" 2>/dev/null || true
    done
  fi
  { grep -o " $dir/containerd/[^ ]*" /proc/mounts || true; } | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
  network_down
  # The kubelet's cgroups (cgroup v1: one tree per controller), deepest first.
  find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods -depth -type d \
    -exec rmdir {} + 2>/dev/null || true
  # A cluster started again is new: its etcd and pods start empty, its certificates stay.
  rm -rf "$dir/etcd" "$dir/kubelet" "$dir/containerd/state" "$dir/volumes"
  say "down"
}

status() {
  local name
  for name in "${started_in_order[@]}"; do
    if alive "$name"; then echo "$name: running (pid $(cat "$run/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

# Whether a cluster (or what one leaves on the host) is here: a component running, the pods'
# bridge, or the firewall chains kube-proxy and the guard write (the ones network_down
# removes). Exit status 0 when so.
leftover() {
  local name
  for name in "${started_in_order[@]}"; do
    alive "$name" && return 0
  done
  ip link show "$bridge" >/dev/null 2>&1 && return 0
  iptables -n -L "$guard_chain" >/dev/null 2>&1 && return 0
  local table
  for table in nat filter mangle; do
    [ -n "$(kube_chains "$table")" ] && return 0
  done
  return 1
}

kernel_nodes() {
  LOADLAB_CLUSTER_DIR="$dir" LOADLAB_BRIDGE="$bridge" LOADLAB_GATEWAY="$gateway" \
    LOADLAB_CLUSTER_CIDR="$cluster_cidr" LOADLAB_SERVICE_CIDR="$service_cidr" \
    LOADLAB_API_PORT="$api_port" bash "$here/kernel-node.sh" "$@"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  leftover) leftover ;;
  kubeconfig) echo "$KUBECONFIG" ;;
  images) need_root; bash "$here/images.sh" "$containerd_sock" ;;
  kwok) need_root; bash "$here/kwok-nodes.sh" "$dir" "${2:-10}" ;;
  node) need_root; shift; kernel_nodes "$@" ;;
  nodes) need_root; kernel_nodes list ;;
  *) echo "usage: $0 up|down|status|leftover|images|kwok N|node add NAME KERNEL|node stop NAME|node remove NAME|nodes|kubeconfig" >&2; exit 2 ;;
esac
