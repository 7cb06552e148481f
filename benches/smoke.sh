#!/usr/bin/env bash
# A tiny smoke benchmark: rpger-store backing up generated nights, next to the machine's limits
# (plain read, b3sum, zstd -3 -T2) measured on the same files in the same run. Medians of 3.
# SIZE (bytes per night, default 60 MB) and RUNS (default 3) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-60000000}
runs=${RUNS:-3}
bin=target/release/rpger-store
[ -x "$bin" ] || cargo build --release -q -p rpger-store
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" demo --dir "$work/demo" --nights 2 --size "$size" --json >/dev/null
n1=$work/demo/data/night-1
n2=$work/demo/data/night-2
bytes=$(find "$n1" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_cmd() { # prints the median seconds of $runs runs of "$@"
  for _ in $(seq "$runs"); do
    local t0; t0=$(now); "$@" >/dev/null 2>&1; awk -v a="$(now)" -v b="$t0" 'BEGIN {print a - b}'
  done | median
}
files() { find "$1" -type f -print0 | sort -z; }
cat_all() { files "$1" | xargs -0 cat; }

backup_new() { rm -rf "$work/s"; "$bin" --store "$work/s" init >/dev/null; "$bin" --store "$work/s" backup --source mongodb="$n1/mongodb" --source redis="$n1/redis" --source chroma="$n1/chroma"; }
backup_incr() { rm -rf "$work/s2"; cp -a "$work/base" "$work/s2"; "$bin" --store "$work/s2" backup --source mongodb="$n2/mongodb" --source redis="$n2/redis" --source chroma="$n2/chroma"; }
"$bin" --store "$work/base" init >/dev/null
"$bin" --store "$work/base" backup --source mongodb="$n1/mongodb" --source redis="$n1/redis" --source chroma="$n1/chroma" >/dev/null

row() { awk -v w="$1" -v s="$2" -v b="$bytes" 'BEGIN {printf "| %-28s | %8.3f | %8.0f |\n", w, s, b / 1048576 / s}'; }
echo "smoke benchmark: $(nproc) cores, night of $((bytes / 1048576)) MiB, medians of $runs"
echo "| what | seconds | MiB/s |"
echo "|---|---|---|"
row "cat (plain read)" "$(time_cmd bash -c "$(declare -f files cat_all); cat_all $n1 > /dev/null")"
if command -v b3sum >/dev/null; then row "b3sum --num-threads 1" "$(time_cmd bash -c "$(declare -f files); files $n1 | xargs -0 b3sum --num-threads 1")"; else echo "| b3sum | (not installed) | |"; fi
if command -v zstd >/dev/null; then row "zstd -3 -T2" "$(time_cmd bash -c "$(declare -f files cat_all); cat_all $n1 | zstd -3 -T2 -c")"; else echo "| zstd | (not installed) | |"; fi
row "rpger-store night 1 (new)" "$(time_cmd backup_new)"
row "rpger-store night 2 (incr.)" "$(time_cmd backup_incr)"
