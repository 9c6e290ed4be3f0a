#!/usr/bin/env bash
# The test command: installs what is missing, then checks formatting, lints and runs every test
# against real nginx and a real Postgres (loadlab's own private cluster unless DATABASE_URL is set).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
