#!/usr/bin/env bash
# Builds every Dockerfile conformance case twice, on kernel overlayfs and on strata's FUSE
# union, with SOURCE_DATE_EPOCH=0 so that times do not differ, and compares the layer digests
# (diff ids and blob digests) of the two images. Prints one line per case.
#   bench/unionfs-same-layers.sh STRATA_BINARY [CONFORMANCE_DIR]
set -u
bin=$(readlink -f "${1:?usage: unionfs-same-layers.sh STRATA_BINARY [CONFORMANCE_DIR]}")
cases=${2:-$(dirname "$0")/../../shared/conformance}
[ -d "$cases" ] || { echo "no conformance cases at $cases" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/strata-same-layers.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$here/scripts/make-busybox-rootfs" "$tmp/busybox.tar"
export SOURCE_DATE_EPOCH=0
same=0; differ=0; skipped=0
for c in "$cases"/*/; do
  [ -f "$c/Dockerfile" ] || continue
  name=$(basename "$c")
  digests=()
  for driver in overlay fuse; do
    store="$tmp/$name-$driver"
    "$bin" --root "$store" import "$tmp/busybox.tar" busybox:latest >/dev/null
    if ! "$bin" --root "$store" --storage-driver "$driver" build -t "case-$name" --progress plain "$c" >"$tmp/$name-$driver.log" 2>&1; then
      digests+=("build failed")
      continue
    fi
    digests+=("$("$bin" --root "$store" inspect --format manifest "case-$name" \
      | python3 -c 'import json,sys; print(" ".join(l["digest"] for l in json.load(sys.stdin)["layers"]))')")
  done
  if [ "${digests[0]}" = "build failed" ] && [ "${digests[1]}" = "build failed" ]; then
    echo "skip $name (the build fails on both drivers, as the case expects or not)"; skipped=$((skipped+1))
  elif [ "${digests[0]}" = "${digests[1]}" ]; then
    echo "same   $name ($(wc -w <<<"${digests[0]}") layers)"; same=$((same+1))
  else
    echo "DIFFER $name"; echo "  overlay: ${digests[0]}"; echo "  fuse:    ${digests[1]}"; differ=$((differ+1))
  fi
done
echo "$same same, $differ different, $skipped not built"
[ "$differ" -eq 0 ]
