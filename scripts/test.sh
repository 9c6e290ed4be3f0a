#!/usr/bin/env bash
# The test command: installs what is missing, then checks formatting, lints and runs every test
# against real nginx and a real Postgres (loadlab's own private cluster unless DATABASE_URL is set).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh

# A test run builds once from scratch: incremental caches only cost disk here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
