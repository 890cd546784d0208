#!/usr/bin/env bash
# What a faster FUSE transport could give strata: libfuse's passthrough_hp example served
# over /dev/fuse and over io_uring (FUSE_IO_URING, Linux 6.14+), beside strata's FUSE union
# and kernel overlayfs, on the work whose time is FUSE round trips, not the disk: the Debian
# minbase rootfs (bench/minbase.sh) in the page cache, 3,000 small files created, a walk of
# a fresh mount with a stat of every entry, the same walk again, a read of every file.
#
#   PASSTHROUGH_HP=/path/to/libfuse/build/example/passthrough_hp bench/fuse-transport.sh [RUNS]
#
# passthrough_hp must come from libfuse ≥ 3.18 configured with liburing (meson finds it through
# pkg-config; LD_LIBRARY_PATH must reach libfuse3.so and liburing.so if they are not installed).
# Prints medians of RUNS rounds (default 3) and, from the fuse:fuse_request_send/_end
# tracepoints of one more round per daemon (when perf is installed), each opcode's median
# latency, the time from the kernel queueing a request to the reply arriving. Needs root; sets
# /sys/module/fuse/parameters/enable_uring for the io_uring rounds and restores it.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
[ "$(id -u)" = 0 ] || { echo "bench/fuse-transport.sh needs root (mounts)" >&2; exit 2; }
hp=${PASSTHROUGH_HP:?set PASSTHROUGH_HP to the passthrough_hp example of libfuse, built with liburing}
uring_param=/sys/module/fuse/parameters/enable_uring
[ -w "$uring_param" ] || { echo "this kernel's fuse has no io_uring ($uring_param)" >&2; exit 2; }
target_dir=${CARGO_TARGET_DIR:-target}
if [ -z "${STRATA_UNIONFS:-}" ]; then
  cargo build --release --bin strata >&2
fi
tarball=$(bench/minbase.sh)

. bench/unionfs-work.sh fuse-transport
unionfs=${STRATA_UNIONFS:-$work/strata-unionfs}
[ -n "${STRATA_UNIONFS:-}" ] || ln -s "$(readlink -f "$target_dir/release/strata")" "$unionfs"
uring_before=$(cat "$uring_param")
trap 'echo "$uring_before" > "$uring_param"; cleanup' EXIT

drivers=(overlay strata passthrough_hp passthrough_hp-io_uring)

unmount() {
  if mountpoint -q "$mnt"; then
    umount "$mnt"
    for _ in $(seq 200); do pgrep -f -- " $mnt\$" >/dev/null || break; sleep 0.01; done
  fi
  # passthrough_hp serves the lower dir itself: its creations land there.
  rm -rf "$work/lower/many"
}

fresh() {
  unmount
  rm -rf "$work/upper" "$work/work"
  mkdir -p "$work/upper" "$work/work"
  local opts="lowerdir=$work/lower,upperdir=$work/upper,workdir=$work/work"
  case $1 in
    overlay) mount -t overlay overlay -o "$opts,index=off,redirect_dir=off,metacopy=off,volatile" "$mnt" ;;
    strata) "$unionfs" none "$mnt" -o "$opts" ;;
    passthrough_hp) echo N > "$uring_param"; "$hp" --foreground "$work/lower" "$mnt" & ;;
    passthrough_hp-io_uring) echo Y > "$uring_param"; "$hp" --foreground -o io_uring "$work/lower" "$mnt" & ;;
  esac
  for _ in $(seq 200); do mountpoint -q "$mnt" && return; sleep 0.01; done
  echo "$1 did not mount on $mnt" >&2
  exit 1
}

create_many() { mkdir "$mnt/many"; for i in $(seq 3000); do echo "small file $i" > "$mnt/many/f$i"; done; }
walk() { find "$mnt" -printf '%s %m\n' > /dev/null; }
read_all() { find "$mnt" -type f -print0 | xargs -0 cat > /dev/null; }


# Everything read once, so that no round depends on the disk.
find "$work/lower" -type f -print0 | xargs -0 cat > /dev/null
for run in $(seq "$runs"); do
  echo "run $run/$runs" >&2
  for d in $(rotated "$run" "${drivers[@]}"); do
    fresh "$d"
    time_it create "$d" create_many
    time_it walk-fresh "$d" walk
    time_it walk-again "$d" walk
    time_it read "$d" read_all
  done
done

declare -A latency
if command -v perf >/dev/null; then
  for d in strata passthrough_hp passthrough_hp-io_uring; do
    fresh "$d"
    perf record -q -o "$work/perf.data" -a -e fuse:fuse_request_send -e fuse:fuse_request_end \
      -- bash -c "$(declare -f create_many walk read_all); mnt='$mnt'; create_many; walk; walk; read_all" 2>/dev/null
    latency[$d]=$(perf script -i "$work/perf.data" 2>/dev/null | awk '
      # The timestamp sits before " fuse:", the request id after "req "; a comm may hold ":".
      { match($0, /[0-9]+\.[0-9]+: +fuse:/); split(substr($0, RSTART, RLENGTH), ts, ":")
        match($0, /req [0-9]+/); id = substr($0, RSTART + 4, RLENGTH - 4) }
      /fuse_request_send/ { match($0, /\(FUSE_[A-Z]+\)/); op[id] = substr($0, RSTART + 6, RLENGTH - 7)
                            sent[id] = ts[1] }
      /fuse_request_end/ && (id in sent) { print op[id], (ts[1] - sent[id]) * 1e6; delete sent[id] }' |
      sort -k1,1 -k2,2n | awk '
      { v[$1, ++c[$1]] = $2 }
      END { for (o in c) { m = c[o] % 2 ? v[o, (c[o] + 1) / 2] : (v[o, c[o] / 2] + v[o, c[o] / 2 + 1]) / 2
                           printf "%s %.0f\n", o, m } }')
  done
fi
unmount

ms() { awk -v us="$1" 'BEGIN { printf "%.0f ms", us/1e3 }'; }

echo
echo "$(nproc) cores, $(uname -r), load average $(cut -d' ' -f1 /proc/loadavg); $runs runs, medians."
echo
echo "| work | kernel overlayfs | strata FUSE | passthrough_hp, /dev/fuse | passthrough_hp, io_uring |"
echo "|---|---|---|---|---|"
for key in create walk-fresh walk-again read; do
  case $key in
    create) label="create 3,000 small files" ;;
    walk-fresh) label="walk, stat of every entry (after the creates)" ;;
    walk-again) label="the same walk again" ;;
    read) label="read every file" ;;
  esac
  row="| $label"
  for d in "${drivers[@]}"; do row+=" | $(ms "$(echo "${samples[$key/$d]}" | median)")"; done
  echo "$row |"
done
if [ ${#latency[@]} -gt 0 ]; then
  echo
  echo "Median latency per request, µs (kernel queues it → reply arrives), one round each:"
  echo
  echo "| opcode | strata FUSE | passthrough_hp, /dev/fuse | passthrough_hp, io_uring |"
  echo "|---|---|---|---|"
  for op in LOOKUP CREATE GETATTR GETXATTR OPEN RELEASE READDIRPLUS OPENDIR FLUSH; do
    row="| $op"
    for d in strata passthrough_hp passthrough_hp-io_uring; do
      v=$(echo "${latency[$d]}" | awk -v o="$op" '$1 == o { print $2 }')
      row+=" | ${v:-—}"
    done
    echo "$row |"
  done
fi
