#!/usr/bin/env bash
# Layer commit and extraction, strata vs umoci, side by side in one run, on the Debian minbase
# rootfs (bench/minbase.sh). Prints a markdown table of medians for bench/RESULTS.md.
#
#   bench/layers.sh [RUNS]
#
# - commit: a rootfs dir → one gzip layer blob in a store (walk + tar + gzip + sha256 × 2);
#   umoci: `umoci repack` of a bundle whose rootfs holds the same tree over an empty base.
# - extract: the layer blob → an extracted layer dir (gunzip + sha256 × 2 + files);
#   umoci: `umoci unpack` of the same image.
# - sha256 throughput on the rootfs tarball from the page cache; peak RSS of a commit.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
for t in umoci skopeo hyperfine /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing $t: scripts/install-deps" >&2; exit 2; }; done
cargo build -q --release --bin strata && cargo build -q --release -p layerfs --example layerbench
target=${CARGO_TARGET_DIR:-$PWD/target}
S=$target/release/strata B=$target/release/examples/layerbench
tarball=$(bench/minbase.sh)
work=$(mktemp -d /var/tmp/strata-bench-layers.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Inputs: the image in a strata store and as an OCI layout, its rootfs as a plain dir.
$S --root "$work/store" import "$tarball" minbase >/dev/null
skopeo copy -q "oci:$work/store:docker.io/library/minbase:latest" "oci:$work/layout:minbase"
umoci unpack --image "$work/layout:minbase" "$work/bundle" >/dev/null
cfg=$($S --root "$work/store" inspect minbase)
diffid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rootfs"]["diff_ids"][0])' "$cfg")
blob=$($S --root "$work/store" inspect --format manifest minbase | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"].split(":")[1])')
blob="$work/store/blobs/sha256/$blob"
umoci init --layout "$work/empty" && umoci new --image "$work/empty:base"

hf() { hyperfine -N --style basic --runs "$runs" --warmup 1 --export-json "$work/$1.json" "${@:2}" >/dev/null 2>&1; }
hf commit \
  --prepare "rm -rf $work/c-store" -n "strata commit" "$B commit $work/bundle/rootfs $work/c-store gzip" \
  --prepare "sh -c 'rm -rf $work/rb && umoci unpack --image $work/empty:base $work/rb >/dev/null && cp -a $work/bundle/rootfs/. $work/rb/rootfs/'" \
  -n "umoci repack" "umoci repack --image $work/empty:base $work/rb"
hf extract \
  --prepare "rm -rf $work/x-store" -n "strata extract" "$B extract $blob $diffid $work/x-store" \
  --prepare "rm -rf $work/ub" -n "umoci unpack" "umoci unpack --image $work/layout:minbase $work/ub"
sha=$(for i in $(seq 5); do $B sha256 "$tarball"; done | sed 's/.*: \([0-9.]*\) GB\/s/\1/' | sort -n | sed -n 3p)
rm -rf "$work/c-store"
rss=$(/usr/bin/time -f %M $B commit "$work/bundle/rootfs" "$work/c-store" gzip 2>&1 >/dev/null | tail -1)

python3 - "$work" "$sha" "$rss" "$(nproc)" "$(tar tf "$tarball" | wc -l)" "$(du -sb "$work/bundle/rootfs" | cut -f1)" <<'PY'
import json, sys, statistics
work, sha, rss, cores, files, size = sys.argv[1:]
def med(name):
    r = json.load(open(f"{work}/{name}.json"))["results"]
    return {x["command"]: statistics.median(x["times"]) for x in r}
c, x = med("commit"), med("extract")
print(f"Debian minbase rootfs: {int(files):,} entries, {int(size)/1e6:.0f} MB; {cores} cores.\n")
print("| work | strata | umoci | ratio | target |")
print("|---|---|---|---|---|")
print(f"| commit (diff+tar+gzip+hash) | {c['strata commit']:.2f} s | {c['umoci repack']:.2f} s | {c['strata commit']/c['umoci repack']:.2f}× | ≤ 0.33× |")
print(f"| extract | {x['strata extract']:.2f} s | {x['umoci unpack']:.2f} s | {x['strata extract']/x['umoci unpack']:.2f}× | ≤ 0.33× |")
print(f"\nsha256: {sha} GB/s (median of 5, target ≥ 1 GB/s). Peak RSS of a commit: {int(rss)/1024:.1f} MB (bound ≤ 48 MB).")
PY
