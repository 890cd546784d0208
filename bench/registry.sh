#!/usr/bin/env bash
# strata pull/push against a local CNCF distribution registry, side by side with skopeo (and
# umoci for extraction), on the Debian minbase rootfs (bench/minbase.sh) imported as one image.
#   bench/registry.sh             # RUNS=5 by default; needs root, docker-registry, skopeo, umoci, hyperfine
# pull: `strata pull` into a fresh store (layers extracted) vs `skopeo copy docker://… oci:…`
#       followed by `umoci unpack`;
# push: `strata push` to a fresh repository vs `skopeo copy oci:STORE:… docker://…` to one,
#       skopeo's blob-info cache cleared before every run (no mounts for either tool).
# copy: `strata copy docker://A docker://B` vs `skopeo copy` of the same, to a fresh
#       repository of a second registry (every blob moves) and of the same registry.
# Then the peak RSS of each (GNU time), for the minbase image and for a 1 MB busybox image.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
target=${CARGO_TARGET_DIR:-target}
strata=${STRATA:-$target/release/strata}
[ -x "$strata" ] || cargo build --release --bin strata
for t in docker-registry skopeo umoci hyperfine /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "$t missing: scripts/install-deps" >&2; exit 2; }
done
tarball=$(bench/minbase.sh)
work=$(mktemp -d "${STRATA_BENCH_TMP:-/tmp}/strata-bench-registry.XXXXXX")
registry_pids=()
cleanup() {
  for pid in "${registry_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# start_registry NAME: a docker-registry on a free loopback port, at host:port $addr.
start_registry() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  addr=127.0.0.1:$port
  cat > "$work/$1.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/$1
http:
  addr: $addr
YAML
  docker-registry serve "$work/$1.yml" >"$work/$1.log" 2>&1 &
  registry_pids+=($!)
  for _ in $(seq 100); do curl -fsS "http://$addr/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
}
start_registry registry; reg=$addr
start_registry registry2; reg2=$addr

src=$work/src
mkdir -p "$work/runs"
"$strata" --root "$src" import "$tarball" minbase:latest >/dev/null
"$strata" --root "$src" push --progress plain minbase:latest "$reg/bench/minbase:v1" >/dev/null 2>&1
size=$(du -b "$src"/blobs/sha256 | tail -1 | cut -f1)
echo "image: $(basename "$tarball") imported, $((size / 1000000)) MB of blobs; registry at $reg; $runs runs" >&2
cache=/var/lib/containers/cache/blob-info-cache-v1.boltdb
strata_version=$("$strata" --version)
echo "$strata_version; $(skopeo --version); $(umoci --version)" >&2

# Every run writes into directories of its own, named in --prepare: removing the last run's
# 300 MB just before would make the file system's inode allocator, not the tools, the subject.
hyperfine --runs "$runs" --export-json "$work/pull.json" --style basic \
  --prepare "echo $work/runs/s\$(date +%s%N) > $work/dest" \
  -n "strata pull" "$strata --root \$(cat $work/dest) pull --progress plain $reg/bench/minbase:v1" \
  --prepare "echo $work/runs/k\$(date +%s%N) > $work/dest; rm -f $cache" \
  -n "skopeo copy + umoci unpack" \
  "skopeo copy -q --src-tls-verify=false docker://$reg/bench/minbase:v1 oci:\$(cat $work/dest)-oci:v1 && umoci unpack --image \$(cat $work/dest)-oci:v1 \$(cat $work/dest)-bundle"

# A fresh repository for every push: its name is drawn in --prepare.
hyperfine --runs "$runs" --export-json "$work/push.json" --style basic \
  --prepare "echo s\$(date +%s%N) > $work/repo; rm -f $cache" \
  -n "strata push" "$strata --root $src push --progress plain minbase:latest $reg/fresh/\$(cat $work/repo):v1" \
  --prepare "echo k\$(date +%s%N) > $work/repo; rm -f $cache" \
  -n "skopeo copy (push)" \
  "skopeo copy -q --dest-tls-verify=false oci:$src:docker.io/library/minbase:latest docker://$reg/fresh/\$(cat $work/repo):v1"

# Registry to registry: to a fresh repository of the second registry, then of the same one.
for where in other same; do
  dest=$reg2; [ $where = same ] && dest=$reg
  hyperfine --runs "$runs" --export-json "$work/copy-$where.json" --style basic \
    --prepare "echo s\$(date +%s%N) > $work/repo; rm -f $cache" \
    -n "strata copy ($where registry)" "$strata --root $src copy --progress plain docker://$reg/bench/minbase:v1 docker://$dest/copies/\$(cat $work/repo):v1" \
    --prepare "echo k\$(date +%s%N) > $work/repo; rm -f $cache" \
    -n "skopeo copy ($where registry)" \
    "skopeo copy -q --src-tls-verify=false --dest-tls-verify=false docker://$reg/bench/minbase:v1 docker://$dest/copies/\$(cat $work/repo):v1"
done

python3 - "$work/pull.json" "$work/push.json" "$work/copy-other.json" "$work/copy-same.json" <<'PY'
import json, statistics, sys
print("| command | median [s] | min [s] | max [s] | median ÷ the other tool's |")
print("|---|---|---|---|---|")
for path in sys.argv[1:]:
    rs = json.load(open(path))["results"]
    med = [statistics.median(r["times"]) for r in rs]
    for i, r in enumerate(rs):
        other = med[1 - i]
        print(f"| {r['command']} | {med[i]:.3f} | {min(r['times']):.3f} | {max(r['times']):.3f} | {med[i] / other:.2f} |")
PY

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
busybox=$work/busybox.tar
scripts/make-busybox-rootfs "$busybox" >/dev/null 2>&1
"$strata" --root "$src" import "$busybox" busybox:latest >/dev/null
"$strata" --root "$src" push busybox:latest "$reg/bench/busybox:v1" >/dev/null 2>&1
echo
echo "| peak RSS (MB) | busybox (1 MB) | minbase |"
echo "|---|---|---|"
rm -rf "$work/p1" "$work/p2"
sp1=$(rss "$strata" --root "$work/p1" pull --progress plain "$reg/bench/busybox:v1")
sp2=$(rss "$strata" --root "$work/p2" pull --progress plain "$reg/bench/minbase:v1")
echo "| strata pull | $((sp1 / 1024)) | $((sp2 / 1024)) |"
rm -rf "$work/o1" "$work/o2" "$work/b1" "$work/b2" $cache
kc1=$(rss skopeo copy -q --src-tls-verify=false "docker://$reg/bench/busybox:v1" "oci:$work/o1:v1")
kc2=$(rss skopeo copy -q --src-tls-verify=false "docker://$reg/bench/minbase:v1" "oci:$work/o2:v1")
echo "| skopeo copy (pull) | $((kc1 / 1024)) | $((kc2 / 1024)) |"
ku1=$(rss umoci unpack --image "$work/o1:v1" "$work/b1")
ku2=$(rss umoci unpack --image "$work/o2:v1" "$work/b2")
echo "| umoci unpack | $((ku1 / 1024)) | $((ku2 / 1024)) |"
sq1=$(rss "$strata" --root "$src" push --progress plain busybox:latest "$reg/rss/s1:v1")
sq2=$(rss "$strata" --root "$src" push --progress plain minbase:latest "$reg/rss/s2:v1")
echo "| strata push | $((sq1 / 1024)) | $((sq2 / 1024)) |"
rm -f $cache
kp1=$(rss skopeo copy -q --dest-tls-verify=false "oci:$src:docker.io/library/busybox:latest" "docker://$reg/rss/k1:v1")
kp2=$(rss skopeo copy -q --dest-tls-verify=false "oci:$src:docker.io/library/minbase:latest" "docker://$reg/rss/k2:v1")
echo "| skopeo copy (push) | $((kp1 / 1024)) | $((kp2 / 1024)) |"
