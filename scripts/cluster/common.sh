# shellcheck shell=bash disable=SC2034  # the settings here are read by the files that source it
# What every part of scripts/cluster.sh shares: where things are, messages, processes and
# config templates. Sourced, not run.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
configs="$here/cluster/config"
dir="${LOADLAB_CLUSTER_DIR:-/var/lib/loadlab-cluster}"
node="${LOADLAB_NODE_NAME:-$(hostname -s | tr '[:upper:]' '[:lower:]')}"
bridge=llcni0
# The gateway's MAC, fixed: a bridge left to itself takes its lowest port's address, so a pod
# or a kernel node's tap leaving would change the gateway under every peer's ARP entry.
bridge_mac=02:4c:4c:00:00:01
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

# render TEMPLATE NAME...: scripts/cluster/config/TEMPLATE with each @NAME@ replaced by the value
# of the variable NAME; a placeholder left without a value is an error, not an empty string.
render() {
  local template="$1" text placeholder
  shift
  text="$(cat "$configs/$template")"
  for placeholder in "$@"; do
    text="${text//"@${placeholder}@"/"${!placeholder}"}"
  done
  if [[ "$text" =~ @[a-z_]+@ ]]; then
    die "$template: ${BASH_REMATCH[0]} has no value"
  fi
  printf '%s\n' "$text"
}
