#!/usr/bin/env bash
# Kernels as real nodes of this machine's cluster (scripts/cluster.sh): a QEMU guest boots the
# given kernel on a real root file system with containerd, runc, the CNI plugins and a kubelet,
# and joins the API server with TLS both ways (a client certificate for system:node:NAME, a
# serving certificate for the guest's address that the API server verifies).
#
#   kernel-node.sh add NAME KERNEL   # KERNEL: a Debian package (linux-image-6.1.0-47-cloud-amd64-
#                                    # unsigned) or a vmlinuz path with ../lib/modules/<release>
#   kernel-node.sh stop NAME         # power the guest off at once (its Node object stays)
#   kernel-node.sh remove NAME       # power off, delete the Node object, the network, the files
#   kernel-node.sh down              # remove every kernel node
#   kernel-node.sh list
#
# The guest's link is a tap on the pods' bridge: it has the address 10.234.0.(200+i) and pods in
# 10.234.i.0/24, routes to the cluster's pods and Services through this machine and no default
# route; this machine routes 10.234.i.0/24 to it, and the bridge's guard chain (cluster.sh)
# forwards nothing off the bridge. Guest nodes carry the label lab/kind=kernel and the taint
# loadlab.dev/kernel-node=true:NoSchedule, so only pods pinned to them (agents, generators) run
# there. The guest keeps its kernel's defaults (a Debian kernel: perf_event_paranoid 3).
#
# The root disk (per kernel) and the images disk (per set of loadlab images in this machine's
# cluster) are built once and shared read-only by every guest (QEMU's snapshot=on keeps each
# guest's writes in a temporary file); a tar of the node's own files is its third disk.
# Without KVM that runs stock kernels the guest is emulated (TCG; LOADLAB_NODE_ACCEL=kvm where
# KVM runs them): the kernel command line says which (loadlab.accel=), the agent reports it in
# the node's facts, and rates measured there carry the emulation caveat. LOADLAB_NODE_APPEND
# adds to the guest kernel's command line (a driver's module parameters, when debugging one).
set -euo pipefail
shopt -s inherit_errexit

here="$(cd "$(dirname "$0")" && pwd)"
: "${LOADLAB_CLUSTER_DIR:?run through scripts/cluster.sh}"
dir="$LOADLAB_CLUSTER_DIR"
pki="$dir/pki"
nodes="$dir/nodes"
kernels="${LOADLAB_CACHE:-/var/lib/loadlab}/kernels"
bridge="${LOADLAB_BRIDGE:-llcni0}"
gateway="${LOADLAB_GATEWAY:-10.234.0.1}"
cluster_cidr="${LOADLAB_CLUSTER_CIDR:-10.234.0.0/16}"
service_cidr="${LOADLAB_SERVICE_CIDR:-10.235.0.0/24}"
api_port="${LOADLAB_API_PORT:-6443}"
containerd_sock="$dir/containerd/containerd.sock"
memory_mib="${LOADLAB_NODE_MEMORY_MIB:-3072}"
cpus="${LOADLAB_NODE_CPUS:-2}"
max_nodes=50
taint_key=loadlab.dev/kernel-node
export KUBECONFIG="$dir/admin.kubeconfig"

say() { echo "kernel-node: $*" >&2; }
die() { echo "kernel-node: $*" >&2; exit 1; }

k8s_bin=""
kubectl() {
  [ -n "$k8s_bin" ] || k8s_bin="$(bash "$here/k8s-tools.sh" | tail -n 1)"
  "$k8s_bin/kubectl" "$@"
}

# --- the kernel ----------------------------------------------------------------------------

# resolve_kernel KERNEL: prints "IMAGE MODULES_DIR RELEASE".
resolve_kernel() {
  local kernel="$1" root image release
  if [[ "$kernel" =~ ^linux-image-[A-Za-z0-9.+~-]+$ ]]; then
    root="$kernels/$kernel"
    if [ ! -d "$root/boot" ]; then
      say "downloading $kernel"
      mkdir -p "$kernels"
      local work
      work="$(mktemp -d "$kernels/.fetch-XXXXXX")"
      (cd "$work" && apt-get -q -o APT::Sandbox::User=root download "$kernel" >/dev/null 2>"$work/err") \
        || die "kernel package $kernel not found: $(grep '^E:' "$work/err" | tr '\n' ' ')(is the name right? \`apt-get update\` refreshes the lists)"
      dpkg-deb -x "$work"/*.deb "$work/root"
      mv "$work/root" "$root" 2>/dev/null || [ -d "$root/boot" ]
      rm -rf "$work"
    fi
    image="$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)"
    [ -n "$image" ] || die "package $kernel holds no boot/vmlinuz-*"
  else
    image="$kernel"
    [ -f "$image" ] || die "$kernel: no such kernel image (give a vmlinuz path or a Debian package name such as linux-image-6.1.0-47-cloud-amd64-unsigned)"
    root="$(dirname "$(dirname "$image")")"
  fi
  # vmlinuz-<release>, as Debian names it; else the version string in the image's header.
  release="$(basename "$image")"
  release="${release#vmlinuz-}"
  if [ "$release" = "$(basename "$image")" ] || [ ! -d "$root/lib/modules/$release" ]; then
    release="$(file -bL "$image" | sed -n 's/.*version \([^ ]*\) .*/\1/p')"
  fi
  [ -n "$release" ] || die "$image is not an x86 bzImage (no kernel version in its header)"
  [ -d "$root/lib/modules/$release" ] \
    || die "no modules for $release beside $image (expected $root/lib/modules/$release)"
  echo "$image $root/lib/modules/$release $release"
}

# --- disks ---------------------------------------------------------------------------------

node_packages="containerd,runc,containernetworking-plugins,iproute2,kmod,tini,iptables,procps"

# ext4 IMAGE SOURCE_DIR HEADROOM_MIB LABEL: a file system holding SOURCE_DIR, made whole
# beside IMAGE and moved into place.
make_ext4() {
  local image="$1" source="$2" headroom="$3" label="$4" used
  used="$(du -sm "$source" | cut -f1)"
  rm -f "$image.part"
  mkfs.ext4 -q -F -L "$label" -E root_owner=0:0 -d "$source" "$image.part" \
    "$(( used * 13 / 10 + headroom ))M" >/dev/null
  mv "$image.part" "$image"
}

# root_disk MODULES RELEASE: prints the path of the root disk for this kernel.
root_disk() {
  local modules="$1" release="$2" root bin key disk staging
  root="$(bash "$here/debian-root.sh" node-root "$node_packages")"
  bin="$(bash "$here/k8s-tools.sh" | tail -n 1)"
  key="$( { echo "$root"; sha256sum "$bin/kubelet" "$here/kernel-node.sh" "$here/containerd-cri.sh"; } | sha256sum | cut -c1-12)"
  disk="$dir/node-disks/root-$release-$key.ext4"
  if [ ! -f "$disk" ]; then
    say "making the root disk for $release"
    mkdir -p "$dir/node-disks"
    rm -f "$dir/node-disks/root-$release-"*.ext4
    staging="$(mktemp -d "$dir/node-disks/.root-XXXXXX")"
    cp -a "$root/." "$staging/"
    mkdir -p "$staging/lib/modules"
    cp -a "$modules" "$staging/lib/modules/$release"
    chroot "$staging" depmod "$release"
    install -m 0755 "$bin/kubelet" "$staging/usr/local/bin/kubelet"
    write_guest_files "$staging"
    make_ext4 "$disk" "$staging" 256 loadlab-root
    rm -rf "$staging"
  fi
  echo "$disk"
}

# The loadlab images of this machine's cluster, unpacked into a containerd root that the
# guest's containerd opens as its own: nothing is pulled or unpacked in the guest.
images_disk() {
  local refs key disk staging work
  refs="$(ctr --address "$containerd_sock" -n k8s.io images ls 2>/dev/null \
    | awk 'NR > 1 && ($1 ~ /^docker.io\/loadlab\/loadlab:/ || $1 == "loadlab.dev/pause:1") { print $1, $3 }')"
  echo "$refs" | grep -q 'loadlab/loadlab:' \
    || die "the loadlab image is not in the cluster: run \`bash scripts/cluster.sh images\` first"
  key="$(echo "$refs" | sha256sum | cut -c1-12)"
  disk="$dir/node-disks/images-$key.ext4"
  if [ ! -f "$disk" ]; then
    say "making the images disk ($(echo "$refs" | awk '{ print $1 }' | tr '\n' ' '))"
    mkdir -p "$dir/node-disks"
    rm -f "$dir/node-disks/images-"*.ext4
    staging="$(mktemp -d "$dir/node-disks/.images-XXXXXX")"
    work="$(mktemp -d)"
    # shellcheck disable=SC2046
    ctr --address "$containerd_sock" -n k8s.io images export "$work/images.tar" \
      $(echo "$refs" | awk '{ print $1 }')
    cat > "$work/config.toml" <<EOF
version = 2
root = "$staging"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
EOF
    containerd --config "$work/config.toml" > "$work/containerd.log" 2>&1 &
    local pid=$!
    local waited=0
    until ctr --address "$work/containerd.sock" version >/dev/null 2>&1; do
      kill -0 "$pid" 2>/dev/null || { tail -n 20 "$work/containerd.log" >&2; die "the staging containerd stopped"; }
      [ "$waited" -lt 600 ] || die "the staging containerd did not answer"
      sleep 0.1
      waited=$(( waited + 1 ))
    done
    ctr --address "$work/containerd.sock" -n k8s.io images import "$work/images.tar" >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    umount "$work/state"/* 2>/dev/null || true
    make_ext4 "$disk" "$staging" 2048 loadlab-images
    rm -rf "$staging" "$work"
  fi
  echo "$disk"
}

# What every guest runs: its init, containerd's configuration.
write_guest_files() {
  local root="$1"
  mkdir -p "$root/etc/containerd" "$root/etc/loadlab-node" "$root/var/lib/containerd" \
    "$root/var/lib/kubelet" "$root/etc/cni/net.d"
  cat > "$root/etc/containerd/config.toml" <<'EOF'
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
EOF
  bash "$here/containerd-cri.sh" /etc/cni/net.d >> "$root/etc/containerd/config.toml"
  cat > "$root/sbin/loadlab-node-init" <<'EOF'
#!/bin/sh
# PID 1 of a kernel node: tini reaps what containerd's shims leave behind.
exec /usr/bin/tini -- /sbin/loadlab-node-boot
EOF
  cat > "$root/sbin/loadlab-node-boot" <<'EOF'
#!/bin/sh
# Brings a kernel node up: file systems, the node's own files, modules, network, containerd,
# then the kubelet, which joins the cluster. Every step says what failed on the console.
set -u
say() { echo "loadlab-node: $*"; }
fail() { say "$*"; sleep 5; echo o > /proc/sysrq-trigger; exit 1; }
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "no cgroup v2"
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
echo 1 > /proc/sys/kernel/sysrq

for module in virtio_pci virtio_blk virtio_net overlay bridge br_netfilter veth nf_conntrack; do
  modprobe "$module" || say "modprobe $module failed"
done
udev_settle() { n=0; while [ ! -e "$1" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done; }
disk_with_serial() {
  for block in /sys/block/vd*; do
    [ "$(cat "$block/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${block##*/}"; return 0; }
  done
  return 1
}
udev_settle /sys/block/vdb
config="$(disk_with_serial config)" \
  || fail "no config disk among: $(for b in /sys/block/*; do printf '%s(%s) ' "${b##*/}" "$(cat "$b/serial" 2>/dev/null)"; done)"
images="$(disk_with_serial images)" || fail "no images disk"
tar -xf "$config" -C /etc/loadlab-node || fail "the config disk is not a tar"
mount "$images" /var/lib/containerd || fail "cannot mount the images disk"
. /etc/loadlab-node/node.env

hostname "$NODE_NAME"
echo "$NODE_NAME" > /etc/hostname
ip link set lo up
ip addr add "$NODE_ADDRESS/24" dev eth0 || fail "no eth0"
ip link set eth0 up
# The cluster's pods and Services, through this machine; nothing else is routed.
ip route add "$CLUSTER_CIDR" via "$GATEWAY" dev eth0
ip route add "$SERVICE_CIDR" via "$GATEWAY" dev eth0
echo 1 > /proc/sys/net/ipv4/ip_forward
cat > /etc/cni/net.d/10-loadlab.conflist <<CNI
{
  "cniVersion": "0.4.0",
  "name": "loadlab",
  "plugins": [
    {
      "type": "bridge", "bridge": "llcni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY" }]],
        "routes": [{ "dst": "$SERVICE_CIDR" }, { "dst": "$CLUSTER_CIDR" }],
        "dataDir": "/run/cni-ipam"
      }
    }
  ]
}
CNI
echo "+cpuset +cpu +io +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control \
  || say "could not enable every cgroup controller"

containerd > /run/containerd.log 2>&1 &
n=0
until [ -S /run/containerd/containerd.sock ]; do
  [ $n -lt 600 ] || fail "containerd did not start: $(tail -n 5 /run/containerd.log)"
  sleep 0.1; n=$((n + 1))
done
say "containerd up; starting the kubelet as $NODE_NAME ($(uname -r))"
kubelet --config /etc/loadlab-node/kubelet.yaml --kubeconfig /etc/loadlab-node/kubeconfig \
  --root-dir /var/lib/kubelet --node-ip "$NODE_ADDRESS" --hostname-override "$NODE_NAME" \
  --node-labels "lab/kind=kernel,loadlab.dev/kernel=$(uname -r)" --v=1 > /run/kubelet.log 2>&1 &
wait $!
fail "the kubelet stopped: $(tail -n 5 /run/kubelet.log)"
EOF
  chmod 0755 "$root/sbin/loadlab-node-init" "$root/sbin/loadlab-node-boot"
}

# --- one node ------------------------------------------------------------------------------

# The node's own files: its certificates, kubeconfig, kubelet configuration, addresses.
node_config() {
  local name="$1" index="$2" out="$3"
  local address="10.234.0.$((200 + index))" files
  files="$(mktemp -d)"
  local ext="$files/ext"
  openssl genrsa -out "$files/client.key" 2048 2>/dev/null
  openssl req -new -key "$files/client.key" -subj "/O=system:nodes/CN=system:node:$name" \
    -out "$files/client.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$ext"
  openssl x509 -req -in "$files/client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$files/client.crt" 2>/dev/null
  openssl genrsa -out "$files/serving.key" 2048 2>/dev/null
  openssl req -new -key "$files/serving.key" -subj "/CN=$name" -out "$files/serving.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s,DNS:%s\n' \
    "$address" "$name" > "$ext"
  openssl x509 -req -in "$files/serving.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$files/serving.crt" 2>/dev/null
  rm -f "$files"/*.csr "$ext"
  cp "$pki/ca.crt" "$files/ca.crt"
  cat > "$files/node.env" <<EOF
NODE_NAME=$name
NODE_ADDRESS=$address
GATEWAY=$gateway
CLUSTER_CIDR=$cluster_cidr
SERVICE_CIDR=$service_cidr
POD_CIDR=10.234.$index.0/24
POD_GATEWAY=10.234.$index.1
EOF
  echo "nameserver $gateway" > "$files/resolv.conf"
  cat > "$files/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: loadlab
    cluster: { certificate-authority: /etc/loadlab-node/ca.crt, server: "https://$gateway:$api_port" }
users:
  - name: node
    user: { client-certificate: /etc/loadlab-node/client.crt, client-key: /etc/loadlab-node/client.key }
contexts:
  - name: loadlab
    context: { cluster: loadlab, user: node }
current-context: loadlab
EOF
  cat > "$files/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $address
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: /etc/loadlab-node/ca.crt }
authorization: { mode: Webhook }
tlsCertFile: /etc/loadlab-node/serving.crt
tlsPrivateKeyFile: /etc/loadlab-node/serving.key
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
failSwapOn: false
clusterDNS: [$gateway]
clusterDomain: cluster.local
resolvConf: /etc/loadlab-node/resolv.conf
registerWithTaints: [{ key: $taint_key, value: "true", effect: NoSchedule }]
# An emulated guest is slow: report status less often, give the runtime time to answer.
nodeStatusUpdateFrequency: 20s
runtimeRequestTimeout: 10m
maxPods: 20
EOF
  cat "$here/cluster/config/kubelet-keeps-images.yaml" >> "$files/kubelet.yaml"
  tar -C "$files" -cf "$out" .
  rm -rf "$files"
}

qemu_pid() { cat "$nodes/$1/qemu.pid" 2>/dev/null; }
running() { local pid; pid="$(qemu_pid "$1")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

free_index() {
  local index name used
  for index in $(seq 1 "$max_nodes"); do
    used=0
    for name in "$nodes"/*/index; do
      [ -f "$name" ] && [ "$(cat "$name")" = "$index" ] && used=1
    done
    [ "$used" = 0 ] && { echo "$index"; return 0; }
  done
  die "$max_nodes kernel nodes already"
}

accelerator() {
  case "${LOADLAB_NODE_ACCEL:-tcg}" in
    kvm) echo "-accel kvm -cpu host" ;;
    # One host thread runs every virtual CPU in turn: with a thread per CPU, a 6.1.0-56 guest
    # crashed (a call to address 0 on both CPUs at once) as bpftrace detached its probes,
    # which rewrites kernel text another CPU may be running.
    tcg) echo "-accel tcg,thread=single -cpu max" ;;
    *) die "LOADLAB_NODE_ACCEL must be kvm or tcg" ;;
  esac
}

add() {
  local name="$1" kernel="$2"
  [[ "$name" =~ ^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$ ]] \
    || die "node name '$name': lower-case letters, digits and '-', at most 42 characters"
  [ -S "$containerd_sock" ] || die "the cluster is not up: bash scripts/cluster.sh up"
  if running "$name"; then die "node $name already runs (remove it first)"; fi
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: apt-get install qemu-system-x86"
  local resolved image modules release root_image images index tap address begun
  resolved="$(resolve_kernel "$kernel")"
  read -r image modules release <<< "$resolved"
  root_image="$(root_disk "$modules" "$release")"
  images="$(images_disk)"
  mkdir -p "$nodes/$name"
  if [ -f "$nodes/$name/index" ]; then index="$(cat "$nodes/$name/index")"; else index="$(free_index)"; fi
  echo "$index" > "$nodes/$name/index"
  echo "$release" > "$nodes/$name/release"
  node_config "$name" "$index" "$nodes/$name/config.tar"
  tap="llg$index"
  address="10.234.0.$((200 + index))"
  ip link del "$tap" 2>/dev/null || true
  ip tuntap add dev "$tap" mode tap
  ip link set "$tap" master "$bridge" up
  ip route replace "10.234.$index.0/24" via "$address" dev "$bridge"
  begun=$(date +%s)
  # shellcheck disable=SC2046
  qemu-system-x86_64 $(accelerator) -smp "$cpus" -m "${memory_mib}M" \
    -nodefaults -display none -no-reboot \
    -kernel "$image" \
    -append "root=/dev/nvme0n1 rw console=ttyS0 init=/sbin/loadlab-node-init panic=-1 loglevel=4 loadlab.accel=${LOADLAB_NODE_ACCEL:-tcg}${LOADLAB_NODE_APPEND:+ $LOADLAB_NODE_APPEND}" \
    -drive "file=$root_image,if=none,id=root,format=raw,snapshot=on" -device nvme,drive=root,serial=root \
    -drive "file=$images,if=none,id=images,format=raw,snapshot=on" -device virtio-blk-pci,drive=images,serial=images \
    -drive "file=$nodes/$name/config.tar,if=none,id=config,format=raw,readonly=on" -device virtio-blk-pci,drive=config,serial=config \
    -netdev "tap,id=net0,ifname=$tap,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=net0,mac=52:54:00:4c:4c:$(printf %02x "$index"),romfile=" \
    -serial "file:$nodes/$name/console.log" \
    -pidfile "$nodes/$name/qemu.pid" -daemonize
  say "$name boots $release ($address, pods 10.234.$index.0/24); waiting until Ready"
  local deadline=$(( begun + ${LOADLAB_NODE_READY_SECONDS:-900} ))
  until kubectl get node "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; do
    if ! running "$name"; then
      say "the guest stopped; its console:"; tail -n 30 "$nodes/$name/console.log" >&2; exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "$name not Ready in time; its console:"; tail -n 30 "$nodes/$name/console.log" >&2; exit 1
    fi
    sleep 2
  done
  say "$name Ready after $(( $(date +%s) - begun )) s from power-on: $(kubectl get node "$name" -o jsonpath='{.status.nodeInfo.kernelVersion}')"
}

stop_guest() {
  local name="$1" pid
  pid="$(qemu_pid "$name")" || return 0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$nodes/$name/qemu.pid"
}

remove() {
  local name="$1" index
  [ -d "$nodes/$name" ] || die "no kernel node $name"
  stop_guest "$name"
  index="$(cat "$nodes/$name/index" 2>/dev/null || true)"
  if [ -n "$index" ]; then
    ip route del "10.234.$index.0/24" 2>/dev/null || true
    ip link del "llg$index" 2>/dev/null || true
  fi
  kubectl delete node "$name" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "${nodes:?}/$name"
  say "removed $name"
}

list() {
  local node name
  for node in "$nodes"/*/; do
    [ -d "$node" ] || continue
    name="$(basename "$node")"
    if running "$name"; then
      echo "$name: $(cat "$node/release") running (pid $(qemu_pid "$name"), 10.234.0.$((200 + $(cat "$node/index"))))"
    else
      echo "$name: $(cat "$node/release") powered off"
    fi
  done
}

case "${1:-}" in
  add) [ $# = 3 ] || die "usage: add NAME KERNEL"; add "$2" "$3" ;;
  stop) [ $# = 2 ] || die "usage: stop NAME"; stop_guest "$2" ;;
  remove) [ $# = 2 ] || die "usage: remove NAME"; remove "$2" ;;
  down) for node in "$nodes"/*/; do [ -d "$node" ] && remove "$(basename "$node")"; done; true ;;
  list) list ;;
  *) die "usage: kernel-node.sh add NAME KERNEL | stop NAME | remove NAME | down | list" ;;
esac
