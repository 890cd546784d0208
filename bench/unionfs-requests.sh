#!/usr/bin/env bash
# The FUSE requests strata's union daemon gets per operation: a round trip costs 100–300 µs
# on a busy 2-vCPU VM, so counting them judges a change better than wall-clock time does.
#
#   bench/unionfs-requests.sh [STRATA_UNIONFS]    # default: target/release/strata
#
# Mounts the Debian minbase rootfs (bench/minbase.sh) as the one lower layer with the daemon
# in debug mode (`-d`, which logs every request), runs each workload on a fresh mount after
# `echo 3 > /proc/sys/vm/drop_caches`, and prints the requests it caused, by opcode (xattr
# requests with their name). Workloads: a cold and a warm tree walk (`find -printf '%s %m'`),
# `cat` of every file, 1,000 `echo x > d/fN`, and one file written in 100 writes. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/unionfs-requests.sh needs root (mounts)" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-target}
bin=${1:-$target_dir/release/strata}
tarball=$(bench/minbase.sh)

. bench/unionfs-work.sh requests
# strata-unionfs is the strata binary started under that name.
ln -s "$(readlink -f "$bin")" "$work/strata-unionfs"

# count NAME WARMUP MEASURED: the requests MEASURED causes on a fresh mount (after WARMUP).
count() {
  local name=$1 warmup=$2 measured=$3
  rm -rf "$work/upper" "$work/work"
  mkdir -p "$work/upper" "$work/work"
  "$work/strata-unionfs" -f -d \
    -o "lowerdir=$work/lower,upperdir=$work/upper,workdir=$work/work" "$mnt" 2> "$work/log" &
  local pid=$!
  for _ in $(seq 200); do mountpoint -q "$mnt" && break; sleep 0.05; done
  sync
  echo 3 > /proc/sys/vm/drop_caches
  [ -z "$warmup" ] || M=$mnt bash -c "$warmup"
  sleep 0.2
  local start
  start=$(wc -l < "$work/log")
  M=$mnt bash -c "$measured"
  sleep 0.3
  umount "$mnt"
  wait "$pid" || true
  echo "== $name"
  tail -n "+$((start + 1))" "$work/log" | sed 's/\x1b\[[0-9;]*m//g' | awk '
    /FUSE\(/ { for (i = 1; i <= NF; i++) if ($i == "ino") {
      op = $(i + 2)
      if (op ~ /XATTR$/ && $(i + 3) == "name") { n = $(i + 4); sub(/,$/, "", n); op = op " " n }
      print op; break } }' | sort | uniq -c | sort -rn
}

walk='find "$M" -printf "%s %m\n" >/dev/null'
count "tree walk (cold)" "" "$walk"
count "tree walk (warm)" "$walk" "$walk"
count "cat of every file (cold)" "" 'find "$M" -type f -print0 | xargs -0 cat >/dev/null'
count "create 1,000 files" 'mkdir "$M/d"' 'for i in $(seq 1000); do echo x > "$M/d/f$i"; done'
count "one file in 100 writes" "" 'dd if=/dev/zero of="$M/big" bs=4k count=100 status=none'
echo "($(find "$work/lower" -type d | wc -l) directories, $(find "$work/lower" -type f | wc -l) files)"
