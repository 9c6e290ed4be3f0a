#!/usr/bin/env bash
# Builds the images the chart runs on this machine's cluster and imports them into its
# containerd. No registry is reachable, so nothing starts from a pulled base image:
# - a Debian bookworm root (scripts/debian-root.sh) with what the Dockerfile's runtime stage
#   installs: nginx-light, libelf1, ca-certificates; plus
#   postgresql-15 for the chart's bundled database;
# - loadlab/loadlab:<appVersion>: that root and the release binary, as the Dockerfile makes it;
# - loadlab/postgresql:15: the same root and an entrypoint that honours the official postgres
#   image's POSTGRES_USER / POSTGRES_DB / POSTGRES_PASSWORD / PGDATA, so the chart is unchanged,
#   and stops on SIGINT as that image does (PostgreSQL's fast shutdown: on SIGTERM it would
#   wait for every client to leave, and a pool never leaves);
# - busybox:1.36 (the chart's `helm test` image) from Debian's busybox-static.
# Both Debian images share the root as their first layer, which containerd stores once.
#   images.sh CONTAINERD_SOCKET
set -euo pipefail

socket="$1"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
packages="nginx-light,libelf1,ca-certificates,postgresql-15,iproute2"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/helm/loadlab/Chart.yaml")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say() { echo "images: $*" >&2; }

root="$(bash "$here/debian-root.sh" images "$packages")"
# The cluster's own postgres starts from the entrypoint below, not from Debian's cluster.
rm -rf "$root/etc/postgresql" "$root/var/lib/postgresql/15"

binary="${CARGO_TARGET_DIR:-$repo/target}/release/loadlab"
say "building the release binary"
(cd "$repo" && cargo build --release --locked -p loadlab >&2)

mkdir -p "$work/loadlab/usr/local/bin"
install -m 0755 "$binary" "$work/loadlab/usr/local/bin/loadlab"
# Debug info is for this machine's debugger, not for every node's image (150 MB -> 30 MB).
objcopy --strip-debug "$work/loadlab/usr/local/bin/loadlab"

mkdir -p "$work/postgresql/usr/local/bin"
cat > "$work/postgresql/usr/local/bin/postgres-entrypoint" <<'SH'
#!/bin/sh
# Starts PostgreSQL 15 as the official image does: initialise PGDATA once with POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB, then run the server in the foreground, listening on all
# addresses with password authentication.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
bin=/usr/lib/postgresql/15/bin
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$(dirname "$PGDATA")" /run/postgresql
  chown postgres:postgres "$(dirname "$PGDATA")" /run/postgresql
  [ -d "$PGDATA" ] && chown -R postgres:postgres "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
# Initialised beside PGDATA and moved into place when whole: a pod killed half-way through
# leaves no PGDATA that looks finished.
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  fresh="$PGDATA.init"
  rm -rf "$fresh"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  "$bin/initdb" -D "$fresh" -U "$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$fresh/pg_hba.conf"
  "$bin/pg_ctl" -D "$fresh" -o "-c listen_addresses='' -c unix_socket_directories=/run/postgresql" -w start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    "$bin/createdb" -h /run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
  fi
  "$bin/pg_ctl" -D "$fresh" -m fast -w stop >/dev/null
  rm -rf "$PGDATA"
  mv "$fresh" "$PGDATA"
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql
SH
chmod 0755 "$work/postgresql/usr/local/bin/postgres-entrypoint"
# The chart's readiness probe runs pg_isready from PATH.
ln -s /usr/lib/postgresql/15/bin/pg_isready "$work/postgresql/usr/local/bin/pg_isready"

mkdir -p "$work/busybox/bin"
cp /bin/busybox "$work/busybox/bin/busybox"
for applet in sh wget cat ls sleep nc; do ln -s busybox "$work/busybox/bin/$applet"; done

pack_and_import() {
  local name="$1" layers="$2" entrypoint="$3" env_json="${4:-}" stop_signal="${5:-}"
  say "packing $name"
  bash "$here/oci-image.sh" "$layers" "$name" "$entrypoint" "$work/image.tar" "$env_json" "$stop_signal"
  ctr --address "$socket" -n k8s.io images import "$work/image.tar" >/dev/null
  rm -f "$work/image.tar"
}

pack_and_import "loadlab/loadlab:$app_version" "$root:$work/loadlab" '["/usr/local/bin/loadlab"]'
pack_and_import "loadlab/postgresql:15" "$root:$work/postgresql" '["/usr/local/bin/postgres-entrypoint"]' \
  '["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","PGDATA=/var/lib/postgresql/data","LANG=C.UTF-8"]' \
  SIGINT
pack_and_import "busybox:1.36" "$work/busybox" '["/bin/sh"]' '["PATH=/bin"]'
say "imported loadlab/loadlab:$app_version, loadlab/postgresql:15, busybox:1.36"
