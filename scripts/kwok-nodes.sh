#!/usr/bin/env bash
# Simulated nodes beside the real one: starts kwok against the cluster (if it is not running)
# and registers N nodes with a spread of kernels, hardware labels and states, as a fleet has
# them. kwok keeps them Ready with a Lease each and runs the pods bound to them as if they were
# real; none of those pods runs anything, and their addresses (10.236.0.0/16) are blackholed
# on this machine so nothing can try to reach them.
#   kwok-nodes.sh CLUSTER_DIR N
# Every 10th node is cordoned, every 25th NotReady; kernels cycle over six releases and
# hardware over three CPU models; every 7th carries a NoSchedule taint.
set -euo pipefail

dir="$1" count="$2"
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(bash "$here/k8s-tools.sh" | tail -n 1)"
export KUBECONFIG="$dir/admin.kubeconfig"
kwok_cidr=10.236.0.0/16

ip route replace blackhole "$kwok_cidr"
if ! { [ -f "$dir/run/kwok.pid" ] && kill -0 "$(cat "$dir/run/kwok.pid")" 2>/dev/null; }; then
  # kwok ships its node and pod lifecycles as stage files in its module, not in the binary.
  stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@${LOADLAB_KWOK_VERSION:-v0.8.0}/kustomize/stage"
  [ -d "$stages" ] || { echo "kwok's stages not found under $stages (run scripts/k8s-tools.sh)" >&2; exit 1; }
  config=()
  for stage in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    config+=(--config "$stages/$stage")
  done
  # Liveness is a Lease per node, as a kubelet's: kwok's heartbeat stage rewrites node status
  # only every 10 to 20 minutes and, without leases (kwok's default), the node controller takes
  # each node for dead after its grace period and marks its pods NotReady for good. A 120 s
  # lease is renewed every 30 s: 33 writes a second for a thousand nodes.
  setsid "$bin/kwok" --kubeconfig "$KUBECONFIG" "${config[@]}" \
    --node-lease-duration-seconds 120 \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom \
    --cidr "$kwok_cidr" --node-ip 10.236.255.254 \
    >>"$dir/logs/kwok.log" 2>&1 < /dev/null &
  echo $! > "$dir/run/kwok.pid"
fi

kernels=(6.1.0-47-cloud-amd64 6.1.0-56-cloud-amd64 6.12.57+deb12-cloud-amd64 6.1.0-47-amd64 6.1.0-56-amd64 6.18.4-generic)
cpus=(epyc-9654 xeon-8480 graviton-emulated)
manifest="$(mktemp)"
trap 'rm -f "$manifest"' EXIT
for i in $(seq 0 $((count - 1))); do
  name="$(printf 'kwok-%04d' "$i")"
  kernel="${kernels[$((i % ${#kernels[@]}))]}"
  cpu="${cpus[$((i % ${#cpus[@]}))]}"
  unschedulable=false
  [ $((i % 10)) -eq 9 ] && unschedulable=true
  status_annotation=""
  ready=True
  if [ $((i % 25)) -eq 24 ]; then
    status_annotation='kwok.x-k8s.io/status: custom'
    ready=False
  fi
  taints="[]"
  [ $((i % 7)) -eq 6 ] && taints='[{ key: lab/reserved, value: "true", effect: NoSchedule }]'
  cat >> "$manifest" <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    $status_annotation
  labels:
    type: kwok
    kubernetes.io/hostname: $name
    lab/cpu: $cpu
    lab/rack: rack-$((i % 20))
spec:
  unschedulable: $unschedulable
  taints: $taints
status:
  allocatable: { cpu: "64", memory: 256Gi, pods: "110" }
  capacity: { cpu: "64", memory: 256Gi, pods: "110" }
  nodeInfo:
    kernelVersion: $kernel
    architecture: amd64
    operatingSystem: linux
  conditions:
    - { type: Ready, status: "$ready", reason: Simulated, message: "kwok node", lastHeartbeatTime: null, lastTransitionTime: null }
EOF
done
"$bin/kubectl" apply --server-side --force-conflicts -f "$manifest" >/dev/null
echo "registered $count simulated nodes" >&2
