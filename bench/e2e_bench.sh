#!/usr/bin/env bash
# End-to-end benchmark: the synthetic 1.1 B-parameter TinyLlama-shaped model as f32 GGUF,
# quantized to Q4_0 with 2 threads by wquant and, when LLAMA_QUANTIZE names a
# llama-quantize binary, by llama-quantize in the same run. Prints wall time, input GB/s,
# peak RSS and page faults for each, then compares the output tensors byte for byte.
#   LLAMA_QUANTIZE=/path/to/llama-quantize bash bench/e2e_bench.sh
# Environment: WQ_E2E_DIR (default /tmp/wq-e2e), WQ_E2E_LAYERS (default 22), WQ_E2E_THREADS (2).
# Run it on an idle machine: a second busy process halves every figure on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${WQ_E2E_DIR:-/tmp/wq-e2e}
layers=${WQ_E2E_LAYERS:-22}
threads=${WQ_E2E_THREADS:-2}
wq=${WQUANT:-$root/build/cli/wquant}
gen=${WQ_GEN_MODEL:-$root/build/bench/wq_gen_model}
mkdir -p "$dir"
in=$dir/tinyllama-${layers}l-f32.gguf
[ -f "$in" ] || "$gen" --layers "$layers" --dtype f32 "$in"
in_bytes=$(stat -c %s "$in")
cat "$in" > /dev/null  # both tools start from a warm page cache

measure() {  # label, command...
  local label=$1; shift
  local log=$dir/$label.time
  /usr/bin/time -v "$@" > "$dir/$label.out" 2> "$log" || { echo "$label failed:"; tail -20 "$log"; return 1; }
  local wall rss major minor
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  major=$(grep "Major (requiring I/O) page faults" "$log" | awk '{print $NF}')
  minor=$(grep "Minor (reclaiming a frame) page faults" "$log" | awk '{print $NF}')
  awk -v l="$label" -v w="$wall" -v r="$rss" -v b="$in_bytes" -v ma="$major" -v mi="$minor" 'BEGIN {
    printf "%-34s wall %7.2f s   input %6.2f GB/s   peak RSS %7.0f MiB   page faults: %d major, %d minor\n",
           l, w, b / w / 1e9, r / 1024, ma, mi }'
  echo "$wall" > "$dir/$label.wall"
}

echo "input: $in ($(awk -v b="$in_bytes" 'BEGIN{printf "%.2f GB", b/1e9}')), Q4_0, $threads threads"
measure "wquant" "$wq" quantize "$in" "$dir/wquant-Q4_0.gguf" --type Q4_0 --threads "$threads" --force --quiet
if [ -n "${LLAMA_QUANTIZE:-}" ]; then
  measure "llama-quantize" "$LLAMA_QUANTIZE" "$in" "$dir/llama-Q4_0.gguf" Q4_0 "$threads"
  # llama-quantize stores output.weight as Q6_K, which wquant does not write (it keeps
  # Q8_0): the identity check uses llama-quantize's own Q8_0 output-tensor option.
  measure "llama-quantize --output-tensor-type q8_0" "$LLAMA_QUANTIZE" --output-tensor-type q8_0 "$in" \
    "$dir/llama-Q4_0-q8out.gguf" Q4_0 "$threads"
  awk -v a="$(cat "$dir/wquant.wall")" -v b="$(cat "$dir/llama-quantize.wall")" 'BEGIN { printf "speed-up over llama-quantize: %.2fx\n", b / a }'
  python3 "$root/bench/gguf_tensors.py" compare "$dir/wquant-Q4_0.gguf" "$dir/llama-Q4_0-q8out.gguf" | tail -1
fi
