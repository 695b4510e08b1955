#!/usr/bin/env bash
# GGUF K-quant / IQ4 conversions of the synthetic 1.1 B TinyLlama-shaped f32 GGUF, wquant
# against llama-quantize run alternately (A B per configuration): Q4_K_M, Q6_K, Q2_K,
# IQ4_XS, without and with an importance matrix (bench/synthetic_imatrix.py), 2 and 1
# threads. Prints wall time, peak RSS, the ratio, and whether the two files are identical
# (sha256); wquant also without its fsync (llama-quantize has none), with that ratio.
#   LLAMA_QUANTIZE=/path/to/llama-quantize bash bench/kquant_bench.sh
# Environment: WQ_E2E_DIR (/tmp/wq-e2e, shared with e2e_bench.sh), WQ_E2E_LAYERS (22),
# WQ_KQ_TYPES ("Q4_K_M Q6_K Q2_K IQ4_XS"), WQ_KQ_THREADS ("2 1"), WQUANT, WQ_GEN_MODEL.
# Run it on an idle machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${WQ_E2E_DIR:-/tmp/wq-e2e}
layers=${WQ_E2E_LAYERS:-22}
wq=${WQUANT:-$root/build/cli/wquant}
gen=${WQ_GEN_MODEL:-$root/build/bench/wq_gen_model}
lq=${LLAMA_QUANTIZE:?set LLAMA_QUANTIZE to a llama-quantize binary}
mkdir -p "$dir"
in=$dir/tinyllama-${layers}l-f32.gguf
[ -f "$in" ] || "$gen" --layers "$layers" --dtype f32 "$in" > /dev/null
im=$dir/tinyllama-${layers}l.imatrix.dat
[ -f "$im" ] || python3 "$root/bench/synthetic_imatrix.py" "$in" "$im"
cat "$in" > /dev/null

timed() {  # out_var_prefix, command...: sets ${1}_wall, ${1}_rss (MiB)
  local v=$1; shift
  local log=$dir/kq.time
  /usr/bin/time -f "%e %M" -o "$log" "$@" > "$dir/kq.out" 2>&1 || { echo "failed: $*"; tail -5 "$dir/kq.out"; exit 1; }
  read -r w r < "$log"
  printf -v "${v}_wall" '%s' "$w"
  printf -v "${v}_rss" '%s' "$((r / 1024))"
}

# wquant fsyncs its output before the rename (durable when it exits); llama-quantize does
# not. So wquant is also run without the fsync (WQUANT_NO_FSYNC=1, a measuring aid): that
# run is the like-for-like comparison, and the one with fsync the cost a user sees.
printf "%-8s %-8s %3s | %9s %8s | %9s | %9s %8s | %7s %9s | %s\n" type imatrix thr "wquant s" "RSS MiB" "no fsync" \
  "llama s" "RSS MiB" ratio "no fsync" "same file"
for t in ${WQ_KQ_TYPES:-Q4_K_M Q6_K Q2_K IQ4_XS}; do
  for use_im in no yes; do
    for th in ${WQ_KQ_THREADS:-2 1}; do
      opts=()
      [ "$use_im" = yes ] && opts=(--imatrix "$im")
      rm -f "$dir/kq-wq.gguf" "$dir/kq-lq.gguf"
      # Each run after the one before has been written back (its dirty pages otherwise
      # compete with this run's writes and fsync) and from a warm page cache (these VMs
      # reclaim pages idle for a minute).
      sync
      cat "$in" > /dev/null
      timed a "$wq" quantize --quiet "${opts[@]}" "$in" "$dir/kq-wq.gguf" "$t" "$th"
      rm -f "$dir/kq-nf.gguf"
      sync
      cat "$in" > /dev/null
      timed n env WQUANT_NO_FSYNC=1 "$wq" quantize --quiet "${opts[@]}" "$in" "$dir/kq-nf.gguf" "$t" "$th"
      rm -f "$dir/kq-nf.gguf"
      sync  # its writeback before llama-quantize's run
      cat "$in" > /dev/null
      timed b "$lq" "${opts[@]}" "$in" "$dir/kq-lq.gguf" "$t" "$th"
      same=no
      [ "$(sha256sum < "$dir/kq-wq.gguf")" = "$(sha256sum < "$dir/kq-lq.gguf")" ] && same=yes
      awk -v t="$t" -v i="$use_im" -v th="$th" -v aw="$a_wall" -v ar="$a_rss" -v nw="$n_wall" -v bw="$b_wall" \
        -v br="$b_rss" -v s="$same" 'BEGIN { printf "%-8s %-8s %3s | %9.2f %8d | %9.2f | %9.2f %8d | %6.1fx %8.1fx | %s\n",
          t, i, th, aw, ar, nw, bw, br, bw / aw, bw / nw, s }'
    done
  done
done
rm -f "$dir/kq-wq.gguf" "$dir/kq-lq.gguf"
