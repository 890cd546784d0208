# Sourced by the union filesystem benchmarks, with the path of the minbase rootfs tarball in
# $tarball (bench/minbase.sh) and a name as $1: makes $work, a fresh dir under
# $STRATA_BENCH_TMP (default /tmp), with the rootfs extracted to $work/lower and the mount
# point $mnt, and a trap that unmounts and removes it all on exit; and the timing helpers
# (time_it, median, rotated) the benchmarks share.
work=$(mktemp -d "${STRATA_BENCH_TMP:-/tmp}/strata-bench-$1.XXXXXX")
mnt=$work/mnt
cleanup() {
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/lower" "$mnt"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$tarball" -C "$work/lower"

declare -A samples
# time_it KEY DRIVER COMMAND...: runs COMMAND, appends its wall time (µs) to samples[KEY/DRIVER].
time_it() {
  local key=$1 driver=$2; shift 2
  local t0 t1
  t0=$(date +%s%N); "$@"; t1=$(date +%s%N)
  samples[$key/$driver]+="$(( (t1 - t0) / 1000 )) "
}

# The median of the numbers on stdin (separated by spaces or newlines).
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# rotated N WORD...: the words one per line, starting from the (N mod count)th. A run takes the
# drivers in the order rotated by its number, so that no driver always comes after the same
# one (whose deletions the upper filesystem is still digesting, whose page cache is left).
rotated() {
  local n=$1; shift
  local words=("$@") i
  for ((i = 0; i < ${#words[@]}; i++)); do echo "${words[(i + n) % ${#words[@]}]}"; done
}
