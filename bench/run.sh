#!/usr/bin/env bash
# Container start-up, strata vs runc vs the bare kernel floor, side by side in one run, on the
# Debian minbase rootfs (bench/minbase.sh). Prints a markdown table of medians for
# bench/RESULTS.md.
#
#   bench/run.sh [RUNS]
#
# - strata:  `strata run --rm minbase /bin/true` (overlay of the image's layer mounted in the
#            container's namespace, /proc /dev /sys, caps, seccomp, PID 1 init), with the
#            host's network (strata's default) and with `--network none`;
# - runc:    `runc run` of the same rootfs as an OCI bundle made by `umoci unpack` (umoci's
#            default spec: its own network namespace, cgroups), process `/bin/true`;
# - floor:   `unshare -mpfuin chroot ROOTFS /bin/true`: the namespaces and nothing else.
# Each round runs every command once, in turn (the machine is shared: load that comes and goes
# weighs on all alike); the table gives medians. Then the peak RSS of
# `strata run --rm minbase true` (strata's own processes).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-40}
for t in runc umoci skopeo unshare python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t: scripts/install-deps" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench/run.sh needs root (namespaces, mounts)" >&2; exit 2; }
cargo build -q --release --bin strata
target=${CARGO_TARGET_DIR:-$PWD/target}
S=$target/release/strata
tarball=$(bench/minbase.sh)
work=$(mktemp -d /var/tmp/strata-bench-run.XXXXXX)
trap 'runc delete -f strata-bench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# The image in a strata store; the same image as an OCI layout, unpacked into a runc bundle.
$S --root "$work/store" import "$tarball" minbase >/dev/null
skopeo copy -q "oci:$work/store:docker.io/library/minbase:latest" "oci:$work/layout:minbase"
umoci unpack --image "$work/layout:minbase" "$work/bundle" >/dev/null
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["args"] = ["/bin/true"]
spec["process"]["terminal"] = False
json.dump(spec, open(path, "w"))
PY
rootfs="$work/bundle/rootfs"
$S --root "$work/store" run --rm minbase /bin/true  # extracts nothing more, warms the cache

# Interleaved rounds (every command once per round, in turn), so that the load of this
# shared machine weighs on each command alike; then the medians.
python3 - "$work/run.json" "$runs" \
  "strata run" "$S --root $work/store run --rm minbase /bin/true" \
  "strata run --network none" "$S --root $work/store run --rm --network none minbase /bin/true" \
  "runc run" "runc run --bundle $work/bundle strata-bench" \
  "floor" "unshare -mpfuin chroot $rootfs /bin/true" <<'PY'
import json, shlex, subprocess, sys, time
out, runs, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cmds = list(zip(args[0::2], args[1::2]))
times = {name: [] for name, _ in cmds}
for r in range(runs + 3):
    for name, cmd in cmds:
        t = time.perf_counter()
        subprocess.run(shlex.split(cmd), check=True, stdout=subprocess.DEVNULL)
        if r >= 3:  # the first rounds warm up
            times[name].append(time.perf_counter() - t)
json.dump({"results": [{"command": n, "times": v} for n, v in times.items()]}, open(out, "w"))
PY

rss=$(for i in 1 2 3 4 5; do /usr/bin/time -f %M "$S" --root "$work/store" run --rm minbase true 2>&1 >/dev/null | tail -1; done | sort -n | sed -n 3p)

python3 - "$work/run.json" "$rss" "$(nproc)" "$runs" <<'PY'
import json, sys, statistics
path, rss, cores, runs = sys.argv[1:]
res = {r["command"]: r["times"] for r in json.load(open(path))["results"]}
med = {k: statistics.median(v) * 1000 for k, v in res.items()}
print(f"Debian minbase image; {cores} cores; medians of {runs} interleaved rounds (3 warm-up rounds).\n")
print("| command | median | vs runc | vs floor |")
print("|---|---|---|---|")
for name in ["strata run", "strata run --network none", "runc run", "floor"]:
    print(f"| `{name}` | {med[name]:.1f} ms | {med[name] / med['runc run']:.2f}× | {med[name] / med['floor']:.2f}× |")
print(f"\nTargets: `strata run` ≤ 0.5× runc and ≤ 3× the floor. "
      f"Peak RSS of `strata run --rm minbase true`: {int(rss) / 1024:.1f} MB (median of 5; bound ≤ 16 MB).")
PY
