#!/usr/bin/env bash
# ONNX benchmark (issue 10): the synthetic 1.1 B-parameter TinyLlama-shaped model as f32
# ONNX with external data (wq_gen_model's GGUF through wq_gen_onnx) and as f32
# safetensors, quantized 4-bit block 64 asymmetric RTN and HQQ with 2 threads: ONNX ->
# ONNX (MatMulNBits, external data) against safetensors -> safetensors in the same run.
# Prints the median wall time, CPU time and peak RSS of each and the ONNX / safetensors
# ratio of the medians.
#   bash bench/onnx_bench.sh
# Environment: WQ_ONNX_DIR (default /tmp/wq-onnx), WQ_ONNX_LAYERS (default 22),
# WQ_ONNX_THREADS (2), WQ_ONNX_RUNS (3). Needs about 3 x 4.4 GB of disk at 22 layers. Run it on an idle
# machine: a second busy process halves every figure on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${WQ_ONNX_DIR:-/tmp/wq-onnx}
layers=${WQ_ONNX_LAYERS:-22}
threads=${WQ_ONNX_THREADS:-2}
wq=${WQUANT:-$root/build/cli/wquant}
bin=$root/build/bench
mkdir -p "$dir/onnx"
gguf=$dir/tinyllama-${layers}l-f32.gguf
st=$dir/tinyllama-${layers}l-f32.safetensors
onnx=$dir/onnx/tinyllama-${layers}l-f32.onnx
# (The GGUF is only the ONNX generator's input: made when the ONNX model is, then removed,
# so a second run writes nothing, whose writeback would run under the measurements.)
[ -f "$st" ] || "$bin/wq_gen_model" --layers "$layers" --dtype f32 --format safetensors "$st"
if [ ! -f "$onnx" ]; then
  "$bin/wq_gen_model" --layers "$layers" --dtype f32 "$gguf"
  "$bin/wq_gen_onnx" --external-data "$gguf" "$onnx"
  rm -f "$gguf"  # only the ONNX and safetensors inputs are measured
fi
sync  # the inputs' writeback (if just made) before the first measurement
runs=${WQ_ONNX_RUNS:-3}

# Every run starts from a warm page cache: the input is read just before it (these VMs
# reclaim page-cache pages idle for a minute, so a warm-up at the start is not enough).
warm() { cat "$@" > /dev/null; }

# measure LABEL command...: one run, appends "wall cpu rss_kib" to $dir/LABEL.runs.
measure() {
  local label=$1; shift
  local t=$dir/.time
  /usr/bin/time -f "%e %U %S %M" -o "$t" "$@" > "$dir/$label.out" 2> "$dir/$label.err" ||
    { echo "$label failed:"; tail -20 "$dir/$label.err"; return 1; }
  awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' "$t" >> "$dir/$label.runs"
}
median() {  # LABEL FIELD (1 wall, 2 cpu, 3 rss KiB)
  sort -g -k"$2" "$dir/$1.runs" | awk -v f="$2" '{v[NR] = $f} END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# (No --quiet: it skips the error figures, which the default run measures for its summary.)
common=(--bits 4 --block 64 --asym --threads "$threads" --force)
echo "ONNX (external data) vs safetensors, 4-bit block 64 asym, $threads threads, $runs runs each, alternating (A B A B), medians"
for scheme in rtn hqq; do
  extra=()
  [ "$scheme" = hqq ] && extra=(--hqq)
  rm -f "$dir/onnx-$scheme.runs" "$dir/safetensors-$scheme.runs"
  # Every run writes new files (as bench/e2e_bench.sh's do): replacing an existing output
  # frees the old file's blocks and pages inside the rename (0.24 s for the 0.7 GB output,
  # strace, 2026-12-04) and makes ext4 flush the new one there (auto_da_alloc).
  for _ in $(seq "$runs"); do
    rm -f "$dir/onnx/q-$scheme.onnx" "$dir/onnx/q-$scheme.onnx.data" "$dir/q-$scheme.safetensors"
    warm "$onnx" "$onnx.data"
    measure "onnx-$scheme" "$wq" quantize "$onnx" "$dir/onnx/q-$scheme.onnx" "${common[@]}" "${extra[@]}" --external-data
    warm "$st"
    measure "safetensors-$scheme" "$wq" quantize "$st" "$dir/q-$scheme.safetensors" "${common[@]}" "${extra[@]}"
  done
  rm -f "$dir/onnx/q-$scheme.onnx" "$dir/onnx/q-$scheme.onnx.data" "$dir/q-$scheme.safetensors"
  for label in "onnx-$scheme" "safetensors-$scheme"; do
    printf "%-20s wall %6.2f s  cpu %6.2f s  peak RSS %5.0f MiB   (runs: %s)\n" "$label" "$(median "$label" 1)" \
      "$(median "$label" 2)" "$(awk -v r="$(median "$label" 3)" 'BEGIN{print r/1024}')" "$(awk '{printf "%s ", $1}' "$dir/$label.runs")"
  done
  awk -v a="$(median "onnx-$scheme" 1)" -v b="$(median "safetensors-$scheme" 1)" -v s="$scheme" \
    'BEGIN { printf "%s: ONNX / safetensors wall time %.2fx (goal <= 1.2x)\n", s, a / b }'
done
