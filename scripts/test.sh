#!/usr/bin/env bash
# The test command: installs what is missing, then checks formatting, lints and runs every test
# against real nginx and a real Postgres (loadlab's own private cluster unless DATABASE_URL is set).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh

# A test run builds once from scratch: incremental caches only cost disk here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all -- --check
shellcheck -x scripts/*.sh scripts/cluster/*.sh .ci/run
bash scripts/chart-lint.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
# A cluster left by a run that was killed keeps kube-proxy's firewall rules, and with them
# connection tracking of every loopback connection: under the storm tests its table fills and
# drops SYNs. Take it down before measuring anything.
if [ "$(id -u)" = 0 ] && bash scripts/cluster.sh leftover; then
  echo "a loadlab cluster (or its firewall rules) was left on this machine: taking it down first"
  bash scripts/cluster.sh down
fi
cargo test --workspace --locked

# The real cluster on this machine (scripts/cluster.sh): the chart installed with helm, an
# experiment applied with kubectl and run on real pods. Whatever it starts is stopped at exit,
# pass or fail. The fault tests (minutes each) run by hand: scripts/fault-tests.sh.
if [ "${LOADLAB_SKIP_CLUSTER:-}" = 1 ]; then
  echo "LOADLAB_SKIP_CLUSTER=1: the real-cluster tests are skipped"
  exit 0
fi
cluster_started=$(date +%s)
trap 'bash scripts/cluster.sh down' EXIT
bash scripts/cluster.sh up
bash scripts/cluster.sh images
echo "cluster and images ready in $(( $(date +%s) - cluster_started )) s"
KUBECONFIG="$(bash scripts/cluster.sh kubeconfig)" PATH="$(bash scripts/k8s-tools.sh | tail -n 1):$PATH" \
  cargo test -p loadlab-controller --test real_cluster --locked -- --ignored --test-threads=1 \
  --skip faults:: --skip debian_defaults::
echo "real-cluster tests done in $(( $(date +%s) - cluster_started )) s"
