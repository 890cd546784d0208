#!/usr/bin/env bash
# The build front end's hot path, side by side in one run: .dockerignore matching by strata's
# builder (compiled once, no regexes) and by moby/patternmatcher (what the docker CLI and
# BuildKit use, from Debian's golang-github-moby-patternmatcher-dev), on the same patterns and
# the same 11,358-path context; then parse+plan of Dockerfiles/bench. Prints a markdown table of
# medians for bench/RESULTS.md.
#
#   bench/frontend.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-21}
cargo build -q --release -p builder --example frontend_bench
target=${CARGO_TARGET_DIR:-$PWD/target}
B=$target/release/examples/frontend_bench
work=$(mktemp -d /tmp/strata-bench-frontend.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The context: a repository with its .git, node_modules, build outputs, sources and docs, every
# directory and file as a walker lists them (relative, parents first).
python3 - "$work/paths" <<'PY'
import sys
out = []
def add(p): out.append(p)
for d in [".git", ".git/objects"] + [f".git/objects/{i:02x}" for i in range(64)]:
    add(d)
for i in range(64):
    for j in range(40):
        add(f".git/objects/{i:02x}/{j:038x}")
add("node_modules")
for m in range(150):
    add(f"node_modules/mod{m}"); add(f"node_modules/mod{m}/lib")
    for f in range(20):
        add(f"node_modules/mod{m}/lib/f{f}.js")
    add(f"node_modules/mod{m}/README.md"); add(f"node_modules/mod{m}/package.json")
for top in ["src", "tests", "docs"]:
    add(top)
    for d in range(40):
        add(f"{top}/pkg{d}"); add(f"{top}/pkg{d}/__pycache__")
        for f in range(25):
            ext = {"src": "py", "tests": "py", "docs": "md"}[top]
            add(f"{top}/pkg{d}/mod{f}.{ext}")
            if f % 5 == 0: add(f"{top}/pkg{d}/__pycache__/mod{f}.pyc")
            if f % 7 == 0: add(f"{top}/pkg{d}/run{f}.log")
add("target"); add("target/release")
for f in range(800): add(f"target/release/obj{f}.o")
add("target/release/app")
for f in ["README.md", "CHANGELOG.md", "Dockerfile", "setup.py", "debug.log"]: add(f)
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
cat > "$work/dockerignore" <<'PAT'
# a typical .dockerignore
.git
node_modules
**/__pycache__
**/*.log
target/
!target/release/app
*.md
!README.md
docs/**/*.tmp
**/.DS_Store
PAT

rust=$("$B" dockerignore "$work/dockerignore" "$work/paths" "$rounds")
go_line="(skipped: needs golang-go and golang-github-moby-patternmatcher-dev)"
if command -v go >/dev/null && [ -d /usr/share/gocode/src/github.com/moby/patternmatcher ]; then
  (cd bench/frontend-go && GOFLAGS=-mod=mod GOPROXY=off go build -o "$work/frontend-go" .)
  go_line=$("$work/frontend-go" "$work/dockerignore" "$work/paths" "$rounds")
fi
Dockerfiles/bench/make-context.sh "$work/ctx" >/dev/null
(cd "$work/ctx" && find . -mindepth 1 | sed 's|^\./||' | sort) > "$work/ctx-paths"
printf '.git\n**/*.tmp\n!src/pkg1/keep.tmp\n' > "$work/ctx-ignore"
ctx=$("$B" dockerignore "$work/ctx-ignore" "$work/ctx-paths" "$rounds")
parse=$("$B" parse Dockerfiles/bench/Dockerfile "$rounds")

python3 - "$rust" "$go_line" "$ctx" "$parse" "$(nproc)" <<'PY'
import re, sys
rust, go, ctx, parse, cores = sys.argv[1:]
def ms(line):
    m = re.search(r"([0-9.]+) ms a round, ([0-9]+) ns a path", line)
    return (float(m.group(1)), int(m.group(2))) if m else None
r, g = ms(rust), ms(go)
n = re.search(r"(\d+) paths, (\d+) excluded", rust)
print(f"{n.group(1)} paths (a repository with .git, node_modules, build outputs), 10 patterns with 2 exceptions; {cores} cores; medians.\n")
print("| work | strata | moby/patternmatcher (Go) | ratio |")
print("|---|---|---|---|")
if g:
    print(f"| read patterns + check every path | {r[0]:.2f} ms ({r[1]} ns/path) | {g[0]:.2f} ms ({g[1]} ns/path) | {r[0]/g[0]:.2f}× |")
else:
    print(f"| read patterns + check every path | {r[0]:.2f} ms ({r[1]} ns/path) | {go} | |")
print(f"\nSame verdicts: strata `{rust}`; Go `{go}`.")
print(f"\nDockerfiles/bench context: {ctx}. {parse}.")
PY
