#!/usr/bin/env bash
# ONNX benchmark (issue 10): the synthetic 1.1 B-parameter TinyLlama-shaped model as f32
# ONNX with external data (wq_gen_model's GGUF through wq_gen_onnx) and as f32
# safetensors, quantized 4-bit block 64 asymmetric RTN and HQQ with 2 threads: ONNX ->
# ONNX (MatMulNBits, external data) against safetensors -> safetensors in the same run.
# Prints wall time and peak RSS of each and the ONNX / safetensors time ratio.
#   bash bench/onnx_bench.sh
# Environment: WQ_ONNX_DIR (default /tmp/wq-onnx), WQ_ONNX_LAYERS (default 22),
# WQ_ONNX_THREADS (2). Needs about 3 x 4.4 GB of disk at 22 layers. Run it on an idle
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
[ -f "$gguf" ] || "$bin/wq_gen_model" --layers "$layers" --dtype f32 "$gguf"
[ -f "$st" ] || "$bin/wq_gen_model" --layers "$layers" --dtype f32 --format safetensors "$st"
[ -f "$onnx" ] || "$bin/wq_gen_onnx" --external-data "$gguf" "$onnx"
rm -f "$gguf"  # only the ONNX and safetensors inputs are measured
cat "$onnx" "$onnx.data" "$st" > /dev/null  # every run starts from a warm page cache

measure() {  # label, command...
  local label=$1; shift
  local log=$dir/$label.time
  /usr/bin/time -v "$@" > "$dir/$label.out" 2> "$log" || { echo "$label failed:"; tail -20 "$log"; return 1; }
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  printf "%-28s wall %8.2f s   peak RSS %7.0f MiB\n" "$label" "$wall" "$(awk -v r="$rss" 'BEGIN{print r/1024}')"
  echo "$wall" > "$dir/$label.wall"
}

common=(--bits 4 --block 64 --asym --threads "$threads" --force --quiet)
for scheme in rtn hqq; do
  extra=()
  [ "$scheme" = hqq ] && extra=(--hqq)
  measure "onnx-$scheme" "$wq" quantize "$onnx" "$dir/onnx/q-$scheme.onnx" "${common[@]}" "${extra[@]}" --external-data
  measure "safetensors-$scheme" "$wq" quantize "$st" "$dir/q-$scheme.safetensors" "${common[@]}" "${extra[@]}"
  awk -v a="$(cat "$dir/onnx-$scheme.wall")" -v b="$(cat "$dir/safetensors-$scheme.wall")" -v s="$scheme" \
    'BEGIN { printf "%s: ONNX / safetensors wall time %.2fx (goal <= 1.2x)\n", s, a / b }'
done
