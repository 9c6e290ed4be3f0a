# shellcheck shell=bash
# The pods' bridge and the rules that keep them on it (scripts/cluster.sh). Sourced, not run.
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

network_up() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
  fi
  # Set, not inherited: the kernel then keeps it whatever ports come and go.
  ip link set "$bridge" address "$bridge_mac"
  ip addr replace "$gateway/24" dev "$bridge"
  ip link set "$bridge" up
  mkdir -p "$dir/cni/net.d"
  render cni.conflist bridge pod_cidr gateway service_cidr cluster_cidr dir > "$dir/cni/net.d/10-loadlab.conflist"
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
