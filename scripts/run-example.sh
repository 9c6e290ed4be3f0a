#!/usr/bin/env bash
# The main job: installs what is missing, builds loadlab, and runs the bundled experiment
# against a local nginx. Results go to DATABASE_URL, or to loadlab's own Postgres when unset.
# Usage: bash scripts/run-example.sh [experiment.yaml]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
cargo build --release --locked -p loadlab
exec ./target/release/loadlab run "${1:-examples/local.yaml}"
