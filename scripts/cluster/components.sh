# shellcheck shell=bash
# The cluster's processes: containerd, the control plane, the node and DNS, and the objects the
# cluster needs besides them (scripts/cluster.sh). Sourced, not run.
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

start_containerd() {
  mkdir -p "$dir/containerd"
  render containerd.toml containerd_sock dir > "$dir/containerd/config.toml"
  bash "$here/containerd-cri.sh" "$dir/cni/net.d" --restrict-oom-score-adj \
    >> "$dir/containerd/config.toml"
  start containerd containerd --config "$dir/containerd/config.toml"
  wait_for containerd 60 "$logs/containerd.log" ctr --address "$containerd_sock" version
  import_pause_image
}

# The pod sandbox image: Kubernetes' own pause program, built here (no registry to pull from).
import_pause_image() {
  if ctr --address "$containerd_sock" -n k8s.io images ls -q | grep -qx 'loadlab.dev/pause:1'; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  local sources
  sources=("$(go env GOMODCACHE)"/k8s.io/kubernetes@*/build/pause/linux/pause.c)
  local source="${sources[-1]}"
  [ -f "$source" ] || die "pause.c not found in the Go module cache (run scripts/k8s-tools.sh)"
  mkdir -p "$work/root"
  gcc -Os -static -o "$work/root/pause" "$source" -DVERSION=loadlab
  bash "$here/oci-image.sh" "$work/root" "loadlab.dev/pause:1" '["/pause"]' "$work/pause.tar"
  ctr --address "$containerd_sock" -n k8s.io images import --no-unpack=false "$work/pause.tar" >/dev/null
  rm -rf "$work"
}

start_control_plane() {
  local bin="$1"
  mkdir -p "$dir/etcd"
  render audit-policy.yaml > "$dir/audit-policy.yaml"
  start etcd "$bin/etcd" --name loadlab --data-dir "$dir/etcd" \
    --listen-client-urls "http://$etcd_client" --advertise-client-urls "http://$etcd_client" \
    --listen-peer-urls "http://$etcd_peer" --initial-advertise-peer-urls "http://$etcd_peer" \
    --initial-cluster "loadlab=http://$etcd_peer" --listen-metrics-urls "" \
    --quota-backend-bytes 4294967296
  wait_for etcd 60 "$logs/etcd.log" curl -fsS "http://$etcd_client/health"

  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://$etcd_client" \
    --bind-address "$gateway" --advertise-address "$gateway" --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$service_cidr" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,OwnerReferencesPermissionEnforcement \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$logs/audit.log" \
    --audit-log-maxsize 200 --audit-log-maxbackup 1 \
    --allow-privileged=true --profiling=false --v=1
  wait_for kube-apiserver 180 "$logs/kube-apiserver.log" \
    curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://$gateway:$api_port/readyz"

  # A node is NotReady after 3 minutes without a Lease renewal, not 50 s: a margin for a
  # thousand simulated nodes' renewals (scripts/kwok-nodes.sh) on two busy cores, as pods the
  # node controller marks NotReady stay so (kwok, unlike a kubelet, never reports them ready
  # again). The benchmark's figures were measured with it; it was not tried without.
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=true --service-cluster-ip-range "$service_cidr" \
    --node-monitor-grace-period=3m \
    --profiling=false --v=1
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
}

start_node() {
  local bin="$1"
  mkdir -p "$dir/kubelet"
  echo "nameserver $gateway" > "$dir/resolv.conf"
  {
    render kubelet.yaml containerd_sock gateway pki node dir
    cat "$configs/kubelet-keeps-images.yaml"
  } > "$dir/kubelet/config.yaml"
  start kubelet "$bin/kubelet" --config "$dir/kubelet/config.yaml" \
    --kubeconfig "$dir/node-$node.kubeconfig" --root-dir "$dir/kubelet/root" \
    --node-ip "$gateway" --hostname-override "$node" --node-labels lab/kind=real --v=1

  render kube-proxy.yaml cluster_cidr gateway node dir > "$dir/kube-proxy.yaml"
  start kube-proxy "$bin/kube-proxy" --config "$dir/kube-proxy.yaml" --v=1

  render Corefile gateway dir > "$dir/Corefile"
  start coredns "$bin/coredns" -conf "$dir/Corefile"
}

# What the cluster needs besides its components: CoreDNS may read Services, a default
# StorageClass with one local volume for the chart's Postgres.
apply_cluster_objects() {
  local bin="$1"
  mkdir -p "$dir/volumes/pv0"
  render cluster-objects.yaml dir | "$bin/kubectl" apply -f - >/dev/null
}

node_ready() {
  "$1/kubectl" get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

# The tests' images, kernel nodes' disks and Postgres volumes take a few GiB; with the kubelet's
# disk eviction off (see start_node) a full disk shows as failed writes, so say it beforehand.
warn_if_disk_is_short() {
  local free_kib
  free_kib="$(df --output=avail -k "$dir" | tail -n 1 | tr -d ' ')"
  if [ "$free_kib" -lt $((6 * 1024 * 1024)) ]; then
    say "warning: $((free_kib / 1024)) MiB free under $dir; the real-cluster tests need about 6 GiB"
  fi
}
