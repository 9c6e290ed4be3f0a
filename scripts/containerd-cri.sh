#!/usr/bin/env bash
# The CRI section of a containerd configuration, the same for this machine's node
# (scripts/cluster.sh) and for kernel nodes (scripts/kernel-node.sh): the pause image built
# here, overlayfs, runc with the cgroupfs driver, Debian's CNI plugins.
#   containerd-cri.sh CNI_CONF_DIR [--restrict-oom-score-adj]
set -euo pipefail

conf_dir="$1" restrict="${2:-}"
echo '[plugins."io.containerd.grpc.v1.cri"]'
echo '  sandbox_image = "loadlab.dev/pause:1"'
if [ "$restrict" = --restrict-oom-score-adj ]; then
  echo '  # Without CAP_SYS_RESOURCE (some sandboxes withhold it) no process may lower its OOM'
  echo "  # score, and every pod sandbox asks for -998: keep scores at or above containerd's own."
  echo '  restrict_oom_score_adj = true'
fi
cat <<TOML
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$conf_dir"
TOML
