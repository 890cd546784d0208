#!/usr/bin/env bash
# Union filesystems side by side on the Debian minbase rootfs (bench/minbase.sh) as the lower
# layer: kernel overlayfs (as strata mounts it), strata's FUSE union (strata-unionfs) and
# fuse-overlayfs (Debian's package), in one run, each measurement interleaved across the three
# (in an order rotated from one run to the next).
#
#   bench/unionfs.sh [RUNS]          # RUNS per measurement, default 5; prints medians
#
# Measurements: a tree walk with a stat of every entry, cold (fresh mount, caches dropped) and
# warm, and warm on a read-only union (no upper dir, as `COPY --from` mounts one); a read of every file of the rootfs (cold, then again); a 500 MB sequential read (cold and warm);
# the copy-up of that 500 MB file (one byte appended, fresh mount); the creation of 10,000
# small files; 100 files reopened 100 times each (bench/reopen.py: open, fstat, a 4 KiB read,
# close; warm, as a build reopens its tools and libraries). Then the peak RSS of each FUSE daemon after a walk and a read of everything.
# Needs root. Drops the page cache (echo 3 > /proc/sys/vm/drop_caches) for the cold runs.
#
# STRATA_UNIONFS_BASELINE=/path/to/strata-unionfs (another build, linked under that name) adds
# it as a fourth driver, measured in the same rounds: a change side by side with its parent.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "bench/unionfs.sh needs root (mounts)" >&2; exit 2; }
command -v fuse-overlayfs >/dev/null || { echo "fuse-overlayfs missing: scripts/install-deps" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 missing (bench/reopen.py)" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-target}
if [ -z "${STRATA_UNIONFS:-}" ]; then
  cargo build --release --bin strata >&2
fi
tarball=$(bench/minbase.sh)

. bench/unionfs-work.sh unionfs
# strata-unionfs is the strata binary started under that name.
unionfs=${STRATA_UNIONFS:-$work/strata-unionfs}
[ -n "${STRATA_UNIONFS:-}" ] || ln -s "$(readlink -f "$target_dir/release/strata")" "$unionfs"
mkdir -p "$work/lower/bench"
head -c 500M /dev/urandom > "$work/lower/bench/big.bin"
nfiles=$(find "$work/lower" -path "$work/lower/bench" -prune -o -type f -print | wc -l)
nentries=$(find "$work/lower" | wc -l)
sizemb=$(du -sm --exclude=bench "$work/lower" | cut -f1)

drivers=(overlay strata fuse-overlayfs)
baseline=${STRATA_UNIONFS_BASELINE:-}
[ -z "$baseline" ] || drivers+=(baseline)
opts() { echo "lowerdir=$work/lower,upperdir=$work/upper,workdir=$work/work"; }

unmount() {
  if mountpoint -q "$mnt"; then
    umount "$mnt"
    # FUSE daemons exit once the mount is gone.
    for _ in $(seq 200); do pgrep -f -- "$mnt" >/dev/null || break; sleep 0.01; done
  fi
}

# Mounts `driver` at $mnt with the union options OPTIONS (overlayfs also with OVERLAY_EXTRA).
mount_driver() {
  local driver=$1 options=$2 overlay_extra=${3:-}
  case $driver in
    overlay) mount -t overlay overlay -o "$options$overlay_extra" "$mnt" ;;
    strata) "$unionfs" none "$mnt" -o "$options" ;;
    baseline) "$baseline" none "$mnt" -o "$options" ;;
    fuse-overlayfs) fuse-overlayfs -o "$options" "$mnt" 2>/dev/null ;;
  esac
}

# A fresh mount of `driver` with an empty upper dir.
fresh() {
  unmount
  rm -rf "$work/upper" "$work/work"
  mkdir -p "$work/upper" "$work/work"
  mount_driver "$1" "$(opts)" ",index=off,redirect_dir=off,metacopy=off,volatile"
}

# A fresh read-only mount of `driver`: the rootfs under an empty layer, no upper dir
# (overlayfs wants two layers for that).
fresh_read_only() {
  unmount
  mkdir -p "$work/empty"
  mount_driver "$1" "lowerdir=$work/empty:$work/lower"
}

daemon_pid() { pgrep -f -- "-o .*$work/lower.* $mnt\$" | head -1; }

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

walk() { find "$mnt" -printf '%s %m\n' > /dev/null; }
read_all() { find "$mnt" -path "$mnt/bench" -prune -o -type f -print0 | xargs -0 cat > /dev/null; }
seq_read() { dd if="$mnt/bench/big.bin" of=/dev/null bs=1M status=none; }
copy_up() { printf x >> "$mnt/bench/big.bin"; }
create_many() {
  mkdir "$mnt/many"
  for i in $(seq 10000); do echo "small file $i" > "$mnt/many/f$i"; done
}


for run in $(seq "$runs"); do
  echo "run $run/$runs" >&2
  for d in $(rotated "$run" "${drivers[@]}"); do
    fresh "$d"; drop_caches; time_it walk-cold "$d" walk
    time_it walk-warm "$d" walk
    fresh_read_only "$d"; walk; time_it walk-read-only "$d" walk
    fresh "$d"; drop_caches; time_it read-cold "$d" read_all
    time_it read-again "$d" read_all
    fresh "$d"; drop_caches; time_it seq-cold "$d" seq_read
    time_it seq-warm "$d" seq_read
    fresh "$d"; seq_read; time_it copy-up "$d" copy_up
    fresh "$d"; time_it create "$d" create_many
    fresh "$d"; python3 bench/reopen.py "$mnt" 100 1 > /dev/null
    samples[reopen/$d]+="$(( $(python3 bench/reopen.py "$mnt" 100 100) * 1000 )) "
  done
done

# Peak RSS of the FUSE daemons after walking and reading the whole rootfs (and the big file).
declare -A rss
for d in strata fuse-overlayfs; do
  fresh "$d"; walk; read_all; seq_read
  pid=$(daemon_pid)
  rss[$d]=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
done
unmount

ms() { awk -v us="$1" 'BEGIN { if (us >= 100000) printf "%.2f s", us/1e6; else printf "%.1f ms", us/1e3 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a/b }'; }

echo
echo "Debian minbase rootfs: $nentries entries, $nfiles files, $sizemb MB; a 500 MB file beside it."
# How idle CPUs wait decides what a FUSE round trip costs (two wakeups): on a VM whose idle
# vCPUs halt at once (guest_halt_poll_ns=0), every round-trip-bound row is several times what
# it is with halt-polling on (bench/RESULTS.md, unionfs, seventh session). Some kernels' fuse
# has a `wake_here` parameter with the same effect (eighth session).
idle=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo unknown)
halt_poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
[ -r "$halt_poll" ] && idle+=" with guest_halt_poll_ns=$(cat "$halt_poll")"
wake_here=/sys/module/fuse/parameters/wake_here
[ -r "$wake_here" ] && idle+=", fuse wake_here=$(cat "$wake_here")"
echo "$(nproc) cores (cpuidle: $idle), load average $(cut -d' ' -f1 /proc/loadavg); $runs runs, medians."
echo
header="| work | kernel overlayfs | strata FUSE | fuse-overlayfs | strata ÷ overlayfs | fuse-overlayfs ÷ strata |"
rule="|---|---|---|---|---|---|"
[ -z "$baseline" ] || { header+=" baseline strata | baseline ÷ strata |"; rule+="---|---|"; }
echo "$header"
echo "$rule"
for key in walk-cold walk-warm walk-read-only read-cold read-again seq-cold seq-warm copy-up create reopen; do
  case $key in
    walk-cold) label="tree walk, stat of every entry (cold)" ;;
    walk-warm) label="tree walk, stat of every entry (warm)" ;;
    walk-read-only) label="tree walk, stat of every entry (warm, read-only union)" ;;
    read-cold) label="read every file of the rootfs (cold)" ;;
    read-again) label="read every file again" ;;
    seq-cold) label="500 MB sequential read (cold)" ;;
    seq-warm) label="500 MB sequential read (warm)" ;;
    copy-up) label="copy-up of the 500 MB file" ;;
    create) label="create 10,000 small files" ;;
    reopen) label="reopen 100 files 100 times (warm)" ;;
  esac
  o=$(echo "${samples[$key/overlay]}" | median)
  s=$(echo "${samples[$key/strata]}" | median)
  f=$(echo "${samples[$key/fuse-overlayfs]}" | median)
  row="| $label | $(ms "$o") | $(ms "$s") | $(ms "$f") | $(ratio "$s" "$o") | $(ratio "$f" "$s") |"
  if [ -n "$baseline" ]; then
    b=$(echo "${samples[$key/baseline]}" | median)
    row+=" $(ms "$b") | $(ratio "$b" "$s") |"
  fi
  echo "$row"
done
echo
echo "Peak RSS after walking and reading it all: strata-unionfs $((rss[strata] / 1024)) MB, fuse-overlayfs $((rss[fuse-overlayfs] / 1024)) MB."
