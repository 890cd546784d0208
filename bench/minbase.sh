#!/usr/bin/env bash
# The benchmarks' common input: a debootstrap'd Debian minbase rootfs (~200 MB, ~6,800 files),
# made once and cached. Prints the path of the cached rootfs tarball.
#   bench/minbase.sh            # → $STRATA_BENCH_CACHE/minbase.tar
# The cache is $STRATA_BENCH_CACHE (default /var/cache/strata-bench), shared by every checkout.
set -euo pipefail
cache=${STRATA_BENCH_CACHE:-/var/cache/strata-bench}
out="$cache/minbase.tar"
if [ ! -s "$out" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap missing: scripts/install-deps" >&2; exit 2; }
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/minbase.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  debootstrap --variant=minbase bookworm "$tmp/rootfs" "${mirror:-http://deb.debian.org/debian}" >&2
  rm -rf "$tmp/rootfs"/var/cache/apt/archives/*.deb
  tar --numeric-owner --xattrs -cf "$tmp/minbase.tar" -C "$tmp/rootfs" .
  mv "$tmp/minbase.tar" "$out"
fi
echo "$out"
