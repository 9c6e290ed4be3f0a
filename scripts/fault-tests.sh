#!/usr/bin/env bash
# The slow fault tests on the real cluster (controller/tests/real_cluster/faults.rs), by hand:
# the leader killed five times, an agent unreachable for 90 s, a generator refusing for good, a
# PodSecurity-restricted namespace, long names and five re-creations. Takes about a quarter of
# an hour (the README has the durations measured). Arguments narrow it to tests whose names
# contain them; `debian_defaults::` runs the check of Debian's default perf restriction and a
# soak of the same experiment on one guest, also by hand (controller/tests/real_cluster/
# debian_defaults.rs says why). Whatever it starts is stopped at exit, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
started=$(date +%s)
trap 'bash scripts/cluster.sh down' EXIT
bash scripts/cluster.sh up
bash scripts/cluster.sh images
echo "cluster and images ready in $(( $(date +%s) - started )) s"
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(faults::)
KUBECONFIG="$(bash scripts/cluster.sh kubeconfig)" PATH="$(bash scripts/k8s-tools.sh | tail -n 1):$PATH" \
  cargo test -p loadlab-controller --test real_cluster --locked -- --ignored --test-threads=1 \
  --nocapture "${filters[@]}"
echo "fault tests done in $(( $(date +%s) - started )) s"
