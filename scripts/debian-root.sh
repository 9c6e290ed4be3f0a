#!/usr/bin/env bash
# A Debian bookworm root with the given packages, made once by debootstrap from Debian's own
# packages (no registry is reachable) and cached under /opt/loadlab-tools/KIND/bookworm-<key>,
# the key naming the package list; prints the root's path. Downloaded packages, package lists
# and documentation are left out: nothing made from the root needs them.
#   debian-root.sh KIND PACKAGES   # PACKAGES: comma-separated, as debootstrap --include takes
set -euo pipefail

kind="$1" packages="$2"
key="$(echo "bookworm $packages v1" | sha256sum | cut -c1-12)"
base="${LOADLAB_TOOLS:-/opt/loadlab-tools}/$kind/bookworm-$key"

if [ ! -f "$base/.complete" ]; then
  echo "debian-root: making the $kind root (debootstrap, a minute or two)" >&2
  rm -rf "$base"
  mkdir -p "$base"
  debootstrap --variant=minbase --include="$packages" bookworm "$base/rootfs" \
    http://deb.debian.org/debian > "$base/debootstrap.log" 2>&1 \
    || { tail -n 20 "$base/debootstrap.log" >&2; exit 1; }
  rm -rf "$base/rootfs/var/cache/apt/archives/"*.deb "$base/rootfs/var/lib/apt/lists/"* \
    "$base/rootfs/usr/share/doc" "$base/rootfs/usr/share/man" "$base/rootfs/usr/share/info"
  touch "$base/.complete"
fi
echo "$base/rootfs"
