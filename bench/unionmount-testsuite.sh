#!/usr/bin/env bash
# Runs the overlay unionmount-testsuite (github.com/amir73il/unionmount-testsuite) against
# strata's FUSE union, the way it runs fuse-overlayfs: `mount -t fuse.strata-unionfs`, every
# test on its own, one layer (--ov) and with the upper layer rotated into the lower stack
# (--ov=3). Prints one line per test and a summary per mode.
#
#   bench/unionmount-testsuite.sh SUITE_DIR [FUSE_PROGRAM]
#
# SUITE_DIR is a checkout of the suite (it is not vendored here). FUSE_PROGRAM defaults to
# strata-unionfs (target/release/strata under that name, built if missing); fuse-overlayfs compares. mount(8) looks for
# `fuse.PROGRAM` helpers on a fixed PATH of system dirs, so the program is linked into
# /usr/local/bin for the run (and the link removed after, unless it was already there).
# Needs root and python3.
set -euo pipefail
suite=$(readlink -f "${1:?usage: unionmount-testsuite.sh SUITE_DIR [FUSE_PROGRAM]}")
program=${2:-strata-unionfs}
[ -x "$suite/run" ] || { echo "$suite has no ./run: not a unionmount-testsuite checkout" >&2; exit 2; }
cd "$(dirname "$0")/.."
link=""
if [ "$program" = strata-unionfs ] && ! command -v strata-unionfs >/dev/null; then
  target_dir=${CARGO_TARGET_DIR:-target}
  [ -x "$target_dir/release/strata" ] || cargo build --release --bin strata >&2
  link=/usr/local/bin/strata-unionfs   # strata, started under that name
  ln -s "$(readlink -f "$target_dir/release/strata")" "$link"
fi
work=$(mktemp -d /var/tmp/strata-unionmount.XXXXXX)
trap '[ -n "$link" ] && rm -f "$link"; (cd "$suite" && UNIONMOUNT_BASEDIR="$work/base" ./run -c >/dev/null 2>&1 || true); rm -rf "$work"' EXIT
mkdir -p "$work/base"
chmod 755 "$work"   # the suite runs some probes as an unprivileged user
cd "$suite"
for mode in --ov --ov=3; do
  pass=0; fail=0; failed=()
  for t in $(ls tests | sed -n 's/\.py$//p'); do
    if UNIONMOUNT_BASEDIR="$work/base" timeout 300 ./run "$mode" "--fuse=$program" "$t" > "$work/$t.log" 2>&1; then
      pass=$((pass+1))
    else
      fail=$((fail+1)); failed+=("$t: $(grep -m1 -E 'Expected|error|Error|rror' "$work/$t.log" | cut -c1-160)")
    fi
  done
  echo "$program $mode: $pass passed, $fail failed"
  for f in "${failed[@]}"; do echo "  FAIL $f"; done
done
