#!/usr/bin/env bash
# Before/after on one job: two wquant binaries (say, main's build and a change's) run the
# same command alternately, A B B A A B B A ..., each run after a `sync` (the previous
# run's dirty pages written back, not left to slow this one) and a `cat` of the inputs
# (these VMs drop idle page-cache pages within a minute), and the medians of wall time,
# CPU time (user + sys) and peak RSS of each are printed with the ratio B / A. Wall and
# CPU times on these 2-vCPU machines swing by 20-30% between runs minutes apart, so a
# change is judged only against a binary run alternately with it, never against a
# figure from another hour. The order flips every pair because it is not neutral: with
# A B A B, the binary run second was 5-12% slower in wall time whichever it was (the
# same two binaries swapped, 2026-12-04), and without fsync (WQUANT_NO_FSYNC=1) up to
# 1.5x, the disk still busy with the run before.
#   bash bench/ab_bench.sh BIN_A BIN_B RUNS INPUT... -- ARGS...
# ARGS is the wquant command line, the same for both (it should pass --force; the output
# named by it is removed before each run). Also checks that both binaries wrote the same output bytes
# (and OUT.data beside it) when ARGS names an output as its third word (`quantize IN OUT ...`).
#   bash bench/ab_bench.sh /tmp/wq-main build/cli/wquant 5 m.onnx m.onnx.data -- \
#     quantize m.onnx q.onnx --bits 4 --block 64 --asym --threads 2 --force --external-data
# (stdout is discarded; --quiet would also skip the error figures the default run measures)
# Run it on an idle machine: a second busy process halves every figure on 2 cores.
set -euo pipefail
[ $# -ge 5 ] || { sed -n 2,14p "$0"; exit 2; }
a=$1 b=$2 runs=$3
shift 3
inputs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do inputs+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "ab_bench.sh: expected -- before the wquant arguments" >&2; exit 2; }
shift
args=("$@")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
out=${args[2]:-}

run() {  # LABEL BIN: one run, appends "wall cpu rss_kib" to $dir/LABEL
  # A new output each run: replacing the last run's frees it inside the rename (0.25 s
  # for a 0.7 GB file, strace -T) and makes ext4 flush the new one there (auto_da_alloc).
  [ "${args[0]:-}" != quantize ] || [ -z "$out" ] || rm -f -- "$out" "$out.data"
  sync
  cat "${inputs[@]}" > /dev/null
  /usr/bin/time -f "%e %U %S %M" -o "$dir/t" "$2" "${args[@]}" > /dev/null 2> "$dir/err" ||
    { echo "$2 failed:"; tail -5 "$dir/err"; exit 1; }
  awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' "$dir/t" >> "$dir/$1"
}
median() {  # LABEL FIELD
  sort -g -k"$2" "$dir/$1" | awk -v f="$2" '{v[NR] = $f} END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# The output and, for ONNX with external data, its .data file.
digest() { [ -n "$out" ] && [ -f "$out" ] && { sha256sum "$out"; [ ! -f "$out.data" ] || sha256sum "$out.data"; }; }
same=yes
for i in $(seq "$runs"); do
  for l in $( ((i % 2)) && echo "A B" || echo "B A"); do
    if [ "$l" = A ]; then run A "$a"; else run B "$b"; fi
    digest > "$dir/$l.sum" || true
  done
  cmp -s "$dir/A.sum" "$dir/B.sum" || same=no
done
echo "A = $a"
echo "B = $b"
echo "job: wquant ${args[*]}"
for l in A B; do
  printf "%s: wall %6.2f s  cpu %6.2f s  peak RSS %5.0f MiB   (wall of each run: %s)\n" "$l" "$(median $l 1)" \
    "$(median $l 2)" "$(awk -v r="$(median $l 3)" 'BEGIN{print r/1024}')" "$(awk '{printf "%s ", $1}' "$dir/$l")"
done
awk -v aw="$(median A 1)" -v bw="$(median B 1)" -v ac="$(median A 2)" -v bc="$(median B 2)" -v n="$runs" \
  'BEGIN { printf "B / A (medians of %d runs each, alternating): wall %.3f, cpu %.3f\n", n, bw / aw, bc / ac }'
[ -z "$out" ] || echo "same output bytes: $same"
