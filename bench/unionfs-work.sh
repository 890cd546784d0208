# Sourced by the union filesystem benchmarks, with the path of the minbase rootfs tarball in
# $tarball (bench/minbase.sh) and a name as $1: makes $work, a fresh dir under
# $STRATA_BENCH_TMP (default /tmp), with the rootfs extracted to $work/lower and the mount
# point $mnt, and a trap that unmounts and removes it all on exit.
work=$(mktemp -d "${STRATA_BENCH_TMP:-/tmp}/strata-bench-$1.XXXXXX")
mnt=$work/mnt
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/lower" "$mnt"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$tarball" -C "$work/lower"
