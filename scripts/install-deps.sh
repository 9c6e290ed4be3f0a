#!/usr/bin/env bash
# Installs what loadlab needs to build, test and run on Debian/Ubuntu. Safe to run again:
# it installs only what is missing. Meant to be sourced (it may extend PATH) or run.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)   # the peer `loadlab bench loadgen` compares with
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Evidence collectors, best effort: without them runs go on and say what is missing.
optional=()
command -v bpftrace >/dev/null 2>&1 || optional+=(bpftrace)   # kernel lock contention
command -v perf >/dev/null 2>&1 || optional+=(linux-perf)      # CPU profiles (Debian's name)
if [ ${#optional[@]} -gt 0 ]; then
  echo "installing (optional): ${optional[*]}"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null 2>&1 \
    || echo "could not install ${optional[*]}: lock contention or CPU profiles will be reported unavailable"
fi

# Kernel tracepoints (lock contention) are read through tracefs.
if [ "$(id -u)" = 0 ] && [ -d /sys/kernel/tracing ] && ! [ -e /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "installing the Rust toolchain (rustup)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
