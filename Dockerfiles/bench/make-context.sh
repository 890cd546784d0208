#!/usr/bin/env bash
# Writes the bench build context into DIR: this Dockerfile and src/ with 500 small files in
# 25 directories (the same bytes every time).
#   make-context.sh DIR
set -euo pipefail
dir=${1:?usage: make-context.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/src"
cp "$here/Dockerfile" "$dir/Dockerfile"
for i in $(seq 0 499); do
  d="$dir/src/pkg$((i % 25))"
  mkdir -p "$d"
  printf 'package pkg%d\n\n// file %d of the bench context\nconst Value%d = %d\n' $((i % 25)) "$i" "$i" $((i * 7)) > "$d/file$i.go"
done
printf 'bench context\n' > "$dir/src/README"
