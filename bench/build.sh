#!/usr/bin/env bash
# strata build vs buildah bud --layers (runc), side by side in one run, on Dockerfiles/bench.
# Prints a markdown table of medians for bench/RESULTS.md.
#
#   bench/build.sh [RUNS]
#
# Both build the same Dockerfile from the same busybox base (made from the host's static
# busybox): strata from its store, buildah from an OCI archive of the same image (its FROM is
# the Dockerfile's BASE build argument). Cold: an empty cache, the base already present.
# Rebuild: the same build again, unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
for t in buildah runc skopeo hyperfine /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing $t: scripts/install-deps" >&2; exit 2; }; done
cargo build -q --release --bin strata
S=${CARGO_TARGET_DIR:-$PWD/target}/release/strata
work=$(mktemp -d /var/tmp/strata-bench-build.XXXXXX)
trap 'buildah --root "$work/bh" --runroot "$work/bh-run" rm -a >/dev/null 2>&1 || true; umount -R "$work/bh" 2>/dev/null || true; rm -rf "$work"' EXIT

scripts/make-busybox-rootfs "$work/busybox.tar"
Dockerfiles/bench/make-context.sh "$work/ctx"
$S --root "$work/seed" import "$work/busybox.tar" busybox >/dev/null
skopeo copy -q "oci:$work/seed:docker.io/library/busybox:latest" "oci-archive:$work/busybox-oci.tar:busybox"
B="buildah --root $work/bh --runroot $work/bh-run --storage-driver overlay"
base="oci-archive:$work/busybox-oci.tar"
bud="$B bud --runtime runc --layers --build-arg BASE=$base -t bench -q $work/ctx"
sbuild="$S --root $work/store build -t bench --progress plain $work/ctx"

hyperfine -N --style basic --runs "$runs" --export-json "$work/cold.json" \
  --prepare "sh -c 'rm -rf $work/store && $S --root $work/store import $work/busybox.tar busybox >/dev/null'" \
  -n "strata cold" "$sbuild" \
  --prepare "sh -c '$B rm -a >/dev/null 2>&1; $B rmi -a -f >/dev/null 2>&1; $B pull -q $base >/dev/null'" \
  -n "buildah cold" "$bud" >/dev/null 2>&1
hyperfine -N --style basic --runs "$((runs * 2))" --warmup 1 --export-json "$work/warm.json" \
  -n "strata rebuild" "$sbuild" -n "buildah rebuild" "$bud" >/dev/null 2>&1
# every step of the rebuild is cached
cached=$($sbuild 2>&1 | grep -c ' CACHED$')
steps=$($sbuild 2>&1 | grep -c '^#[0-9]* \[')
rm -rf "$work/store" && $S --root "$work/store" import "$work/busybox.tar" busybox >/dev/null
rss=$(/usr/bin/time -f %M $sbuild 2>&1 >/dev/null | tail -1)

python3 - "$work" "$cached" "$steps" "$rss" "$(nproc)" <<'PY'
import json, sys, statistics
work, cached, steps, rss, cores = sys.argv[1:]
def med(name):
    r = json.load(open(f"{work}/{name}.json"))["results"]
    return {x["command"]: statistics.median(x["times"]) for x in r}
c, w = med("cold"), med("warm")
print(f"Dockerfiles/bench (3 stages, 17 steps, 501 context files, ~2,500 files made); {cores} cores.\n")
print("| build | strata | buildah bud --layers | ratio | target |")
print("|---|---|---|---|---|")
print(f"| cold (empty cache) | {c['strata cold']:.2f} s | {c['buildah cold']:.2f} s | {c['strata cold']/c['buildah cold']:.3f}× | ≤ 0.33× |")
print(f"| unchanged rebuild | {w['strata rebuild']*1000:.0f} ms | {w['buildah rebuild']*1000:.0f} ms | {w['strata rebuild']/w['buildah rebuild']:.3f}× | ≤ 0.05× (≤ 50 ms) |")
print(f"\nRebuild: {cached} of {steps} steps CACHED. Peak RSS of a cold strata build: {int(rss)/1024:.1f} MB (bound ≤ 48 MB; the steps' own processes run in the sandbox).")
PY
