#!/usr/bin/env bash
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
dir="${LOADLAB_CLUSTER_DIR:-/var/lib/loadlab-cluster}"
node="${LOADLAB_NODE_NAME:-$(hostname -s | tr '[:upper:]' '[:lower:]')}"
bridge=llcni0
gateway=10.234.0.1
pod_cidr=10.234.0.0/24
cluster_cidr=10.234.0.0/16
service_cidr=10.235.0.0/24
service_api_ip=10.235.0.1
etcd_client=127.0.0.1:23790
etcd_peer=127.0.0.1:23800
api_port=6443
guard_chain=LOADLAB-CLUSTER
pki="$dir/pki"
logs="$dir/logs"
run="$dir/run"
containerd_sock="$dir/containerd/containerd.sock"
export KUBECONFIG="$dir/admin.kubeconfig"

say() { echo "cluster: $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "needs root (it runs a kubelet, containerd and iptables)"; }

tools_bin() {
  local bin
  bin="$(bash "$here/k8s-tools.sh" | tail -n 1)"
  [ -x "$bin/kube-apiserver" ] || die "the Kubernetes components did not build (see above)"
  echo "$bin"
}

install_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v file >/dev/null 2>&1 || missing+=(file)
  command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# --- processes -----------------------------------------------------------------------------

# start NAME COMMAND...: runs it in its own session, output to logs/NAME.log, pid in run/.
start() {
  local name="$1"
  shift
  if alive "$name"; then return 0; fi
  setsid "$@" >>"$logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$run/$name.pid"
}

alive() {
  local pidfile="$run/$1.pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stop() {
  local name="$1" pidfile="$run/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds; on timeout shows the log.
wait_for() {
  local what="$1" seconds="$2" log="$3"
  shift 3
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "$what did not come up within ${seconds}s; last lines of $log:"
      tail -n 30 "$log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

# --- certificates --------------------------------------------------------------------------

# cert NAME SUBJECT [SANS]: a key and a certificate signed by the cluster CA.
cert() {
  local name="$1" subject="$2" sans="${3:-}"
  [ -f "$pki/$name.crt" ] && return 0
  openssl genrsa -out "$pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } > "$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

make_pki() {
  mkdir -p "$pki"
  chmod 0700 "$pki"
  if [ ! -f "$pki/ca.crt" ]; then
    openssl genrsa -out "$pki/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=loadlab-cluster-ca" -days 3650 \
      -sha256 -out "$pki/ca.crt" 2>/dev/null
  fi
  [ -f "$pki/sa.key" ] || {
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  }
  cert apiserver "/CN=kube-apiserver" \
    "IP:$gateway,IP:$service_api_ip,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert admin "/O=system:masters/CN=loadlab-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kube-proxy "/CN=system:kube-proxy"
  cert coredns "/CN=loadlab:coredns"
  # `loadlab bench cluster` runs its controller as this user, whose requests alone are audited.
  cert bench-controller "/O=system:masters/CN=loadlab-bench-controller"
  cert "node-$node" "/O=system:nodes/CN=system:node:$node"
  cert "kubelet-$node" "/CN=$node" "IP:$gateway,DNS:$node"
}

# kubeconfig NAME CERT: a kubeconfig for the API on the bridge with that client certificate.
kubeconfig() {
  local name="$1" cert="$2"
  cat > "$dir/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: loadlab
    cluster:
      certificate-authority: $pki/ca.crt
      server: https://$gateway:$api_port
users:
  - name: $name
    user:
      client-certificate: $pki/$cert.crt
      client-key: $pki/$cert.key
contexts:
  - name: loadlab
    context: { cluster: loadlab, user: $name, namespace: default }
current-context: loadlab
EOF
  chmod 0600 "$dir/$name.kubeconfig"
}

# --- network -------------------------------------------------------------------------------

network_up() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
  fi
  ip addr replace "$gateway/24" dev "$bridge"
  ip link set "$bridge" up
  mkdir -p "$dir/cni/net.d"
  cat > "$dir/cni/net.d/10-loadlab.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "loadlab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$pod_cidr", "gateway": "$gateway", "rangeEnd": "10.234.0.199" }]],
        "routes": [{ "dst": "$service_cidr" }, { "dst": "$cluster_cidr" }],
        "dataDir": "$dir/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  # Services reach pods through this machine's netfilter: bridged packets must pass iptables,
  # and a Service address is forwarded back onto the bridge. Nothing leaves the bridge.
  [ -f "$run/ip_forward.before" ] || cat /proc/sys/net/ipv4/ip_forward > "$run/ip_forward.before"
  [ -f "$run/bridge-nf.before" ] || cat /proc/sys/net/bridge/bridge-nf-call-iptables > "$run/bridge-nf.before"
  echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables
  echo 1 > /proc/sys/net/ipv4/ip_forward
  iptables -N "$guard_chain" 2>/dev/null || iptables -F "$guard_chain"
  iptables -A "$guard_chain" -i "$bridge" -o "$bridge" -j ACCEPT
  iptables -A "$guard_chain" -i "$bridge" -j DROP
  iptables -A "$guard_chain" -o "$bridge" -j DROP
  iptables -C FORWARD -j "$guard_chain" 2>/dev/null || iptables -I FORWARD 1 -j "$guard_chain"
}

# kube-proxy's chains in one table: all of them are KUBE-*.
kube_chains() {
  { iptables-save -t "$1" 2>/dev/null | grep -oE '^:KUBE-[A-Z0-9-]+' || true; } | tr -d ':'
}

network_down() {
  if iptables -C FORWARD -j "$guard_chain" 2>/dev/null; then
    iptables -D FORWARD -j "$guard_chain"
  fi
  iptables -F "$guard_chain" 2>/dev/null || true
  iptables -X "$guard_chain" 2>/dev/null || true
  # kube-proxy's rules: the jumps into its chains, then the chains.
  for table in nat filter mangle; do
    kube_chains "$table" | while read -r chain; do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
    { iptables-save -t "$table" 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' || true; } | sed 's/^-A/-D/' | while read -r rule; do
      eval "iptables -t $table $rule" 2>/dev/null || true
    done
    kube_chains "$table" | while read -r chain; do
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  if [ -f "$run/ip_forward.before" ]; then
    cat "$run/ip_forward.before" > /proc/sys/net/ipv4/ip_forward
    rm -f "$run/ip_forward.before"
  fi
  if [ -f "$run/bridge-nf.before" ]; then
    cat "$run/bridge-nf.before" > /proc/sys/net/bridge/bridge-nf-call-iptables
    rm -f "$run/bridge-nf.before"
  fi
  ip route del blackhole 10.236.0.0/16 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$dir/cni/ipam"
}

# --- components ----------------------------------------------------------------------------

start_containerd() {
  mkdir -p "$dir/containerd"
  cat > "$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$dir/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
EOF
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
  cat > "$dir/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    users: ["loadlab-bench-controller"]
  - level: None
EOF
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
  cat > "$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $gateway
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $pki/ca.crt }
authorization: { mode: Webhook }
tlsCertFile: $pki/kubelet-$node.crt
tlsPrivateKeyFile: $pki/kubelet-$node.key
containerRuntimeEndpoint: unix://$containerd_sock
cgroupDriver: cgroupfs
# This machine mounts cgroup v1 (a hybrid hierarchy); the kubelet still runs on it when asked.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$gateway]
clusterDomain: cluster.local
resolvConf: $dir/resolv.conf
serializeImagePulls: false
# Images here are built and imported, never pulled: a kubelet that reclaims disk by deleting
# unused images (image GC, or disk-pressure eviction, which deletes them all) would leave pods
# without their sandbox or their image for good. A crowded disk must fail as a full disk, not as
# a pod that waits for a pull that cannot happen. "0%" disables a threshold, 100 image GC.
evictionHard: { memory.available: "100Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%", imagefs.inodesFree: "0%" }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 110
EOF
  start kubelet "$bin/kubelet" --config "$dir/kubelet/config.yaml" \
    --kubeconfig "$dir/node-$node.kubeconfig" --root-dir "$dir/kubelet/root" \
    --node-ip "$gateway" --hostname-override "$node" --node-labels lab/kind=real --v=1

  cat > "$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: $dir/kube-proxy.kubeconfig }
mode: iptables
clusterCIDR: $cluster_cidr
hostnameOverride: $node
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$gateway/32"]
conntrack: { maxPerCore: 0 }
EOF
  start kube-proxy "$bin/kube-proxy" --config "$dir/kube-proxy.yaml" --v=1

  cat > "$dir/Corefile" <<EOF
.:53 {
    bind $gateway
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $dir/coredns.kubeconfig loadlab
        pods insecure
    }
    cache 5
}
EOF
  start coredns "$bin/coredns" -conf "$dir/Corefile"
}

# What the cluster needs besides its components: CoreDNS may read Services, a default
# StorageClass with one local volume for the chart's Postgres.
apply_cluster_objects() {
  local bin="$1"
  mkdir -p "$dir/volumes/pv0"
  "$bin/kubectl" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: "loadlab:coredns" }
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: "loadlab:coredns" }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "loadlab:coredns" }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: "loadlab:coredns" }]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: { storageclass.kubernetes.io/is-default-class: "true" }
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
---
apiVersion: v1
kind: PersistentVolume
metadata: { name: loadlab-local-0 }
spec:
  capacity: { storage: 20Gi }
  accessModes: [ReadWriteOnce]
  storageClassName: local
  persistentVolumeReclaimPolicy: Retain
  hostPath: { path: $dir/volumes/pv0, type: DirectoryOrCreate }
EOF
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
  local name
  kernel_nodes down
  for name in kwok coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop "$name"
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
  for name in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns kwok; do
    if alive "$name"; then echo "$name: running (pid $(cat "$run/$name.pid"))"; else echo "$name: stopped"; fi
  done
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
  kubeconfig) echo "$KUBECONFIG" ;;
  images) need_root; bash "$here/images.sh" "$containerd_sock" ;;
  kwok) need_root; bash "$here/kwok-nodes.sh" "$dir" "${2:-10}" ;;
  node) need_root; shift; kernel_nodes "$@" ;;
  nodes) need_root; kernel_nodes list ;;
  *) echo "usage: $0 up|down|status|images|kwok N|node add NAME KERNEL|node stop NAME|node remove NAME|nodes|kubeconfig" >&2; exit 2 ;;
esac
