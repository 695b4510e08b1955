#!/usr/bin/env bash
# Buffered against direct (O_DIRECT with a background writer, the default) output, run
# alternately (A B A B ...) on the same conversion, medians: the measurement behind the
# default of WQUANT_OUTPUT_IO (io/output_file.h).
#   bash bench/output_io_bench.sh INPUT OUTPUT [wquant quantize flags...]
# e.g. bash bench/output_io_bench.sh /tmp/wq-e2e/tinyllama-22l-f32.gguf /tmp/o.gguf --type Q4_0 --threads 2
# Env: WQ_IO_RUNS (5), WQUANT. The input is read before every run (warm page cache).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
wq=${WQUANT:-$root/build/cli/wquant}
runs=${WQ_IO_RUNS:-5}
in=$1 out=$2; shift 2
files=$in
case $in in *.index.json) files=$(ls "$(dirname "$in")"/model-*-of-*.safetensors) ;; esac
t=$(mktemp); trap 'rm -f "$t" "$out"' EXIT
declare -A walls cpus
for _ in $(seq "$runs"); do
  for mode in buffered direct; do
    rm -f "$out"
    # shellcheck disable=SC2086
    cat $files > /dev/null
    # (No --quiet: it skips the error figures, which the default run measures.)
    /usr/bin/time -f "%e %U %S" -o "$t" env WQUANT_OUTPUT_IO=$mode "$wq" quantize "$in" "$out" "$@" > /dev/null
    walls[$mode]+="$(awk '{print $1}' "$t") "
    cpus[$mode]+="$(awk '{printf "%.2f", $2 + $3}' "$t") "
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "$in -> $out $*: $runs runs each, alternating"
for mode in buffered direct; do
  printf "  %-8s wall %5.2f s (runs %s)  cpu %5.2f s (runs %s)\n" "$mode" "$(echo "${walls[$mode]}" | median)" \
    "${walls[$mode]% }" "$(echo "${cpus[$mode]}" | median)" "${cpus[$mode]% }"
done
