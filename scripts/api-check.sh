#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a served API: every operation of the OpenAPI document with
# generated inputs, checking for server errors and responses that break the schema.
# Uses DATABASE_URL, or loadlab's private Postgres; run `loadlab run` first to have data.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
# In the project's tools virtualenv (install-deps.sh made it): Debian's own Python refuses pip.
schemathesis=/opt/loadlab-tools/bin/schemathesis
[ -x "$schemathesis" ] || /opt/loadlab-tools/bin/pip install -q schemathesis
cargo build --locked -p loadlab
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
LOADLAB_API_TOKEN=$token ./target/debug/loadlab serve --listen "127.0.0.1:$port" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
"$schemathesis" run "http://127.0.0.1:$port/api/openapi.json" --checks all --max-examples "${EXAMPLES:-50}" \
  -H "Authorization: Bearer $token"
