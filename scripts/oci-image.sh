#!/usr/bin/env bash
# Packs directories into an image archive that `ctr images import` takes (the docker-archive
# layout: one uncompressed tar per layer, a config, a manifest naming the image), without a
# container engine or registry.
#   oci-image.sh ROOTFS[:ROOTFS...] NAME:TAG ENTRYPOINT_JSON OUT.tar [ENV_JSON] [STOP_SIGNAL]
# Each ROOTFS becomes one layer, in order.
set -euo pipefail

roots="$1" name="$2" entrypoint="$3" out="$4"
env_json="${5:-[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]}"
stop_signal="${6:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

layers=() diff_ids=()
IFS=: read -r -a root_list <<< "$roots"
for root in "${root_list[@]}"; do
  [ -d "$root" ] || { echo "oci-image: $root is not a directory" >&2; exit 1; }
  # Sorted names and fixed times and owners: the same tree gives the same layer digest.
  tar --sort=name --mtime='@0' --numeric-owner --owner=0 --group=0 --xattrs \
    -C "$root" -cf "$work/layer.tar" .
  digest="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
  mkdir -p "$work/$digest"
  mv "$work/layer.tar" "$work/$digest/layer.tar"
  layers+=("\"$digest/layer.tar\"")
  diff_ids+=("\"sha256:$digest\"")
done

join() { local IFS=,; echo "$*"; }
cat > "$work/config.json" <<EOF
{"architecture":"amd64","os":"linux",
 "config":{"Entrypoint":$entrypoint,"Env":$env_json,"WorkingDir":"/"${stop_signal:+,\"StopSignal\":\"$stop_signal\"}},
 "rootfs":{"type":"layers","diff_ids":[$(join "${diff_ids[@]}")]}}
EOF
config_digest="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
mv "$work/config.json" "$work/$config_digest.json"
cat > "$work/manifest.json" <<EOF
[{"Config":"$config_digest.json","RepoTags":["$name"],"Layers":[$(join "${layers[@]}")]}]
EOF
tar -C "$work" -cf "$out" .
