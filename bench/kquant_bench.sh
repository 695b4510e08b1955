#!/usr/bin/env bash
# GGUF K-quant / IQ4 conversions of the synthetic 1.1 B TinyLlama-shaped f32 GGUF, wquant
# against llama-quantize run alternately (A B per configuration): Q4_K_M, Q6_K, Q2_K,
# IQ4_XS, without and with an importance matrix (bench/synthetic_imatrix.py), 2 and 1
# threads. Prints wall time, peak RSS, the ratio, and whether the two files are identical
# (sha256); wquant also without its fsync (llama-quantize has none), with that ratio.
#   LLAMA_QUANTIZE=/path/to/llama-quantize bash bench/kquant_bench.sh
# Environment: WQ_E2E_DIR (/tmp/wq-e2e, shared with e2e_bench.sh), WQ_E2E_LAYERS (22),
# WQ_KQ_TYPES ("Q4_K_M Q6_K Q2_K IQ4_XS"), WQ_KQ_THREADS ("2 1"), WQ_KQ_RUNS (1: runs of
# each configuration, the three commands alternated run by run; the figures are medians
# and the files of every run are compared), WQUANT, WQ_GEN_MODEL.
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

timed() {  # out_var_prefix, command...: appends "wall rss_mib" to $dir/kq-$1.runs
  local v=$1; shift
  local log=$dir/kq.time
  /usr/bin/time -f "%e %M" -o "$log" "$@" > "$dir/kq.out" 2>&1 || { echo "failed: $*"; tail -5 "$dir/kq.out"; exit 1; }
  read -r w r < "$log"
  echo "$w $((r / 1024))" >> "$dir/kq-$v.runs"
}
median() {  # prefix field (1 wall, 2 rss)
  sort -g -k"$2" "$dir/kq-$1.runs" | awk -v f="$2" '{v[NR] = $f} END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
runs=${WQ_KQ_RUNS:-1}

printf "%-8s %-8s %3s | %9s %8s | %9s | %9s %8s | %7s %9s | %s\n" type imatrix thr "wquant s" "RSS MiB" "no fsync" \
  "llama s" "RSS MiB" ratio "no fsync" "same file"
for t in ${WQ_KQ_TYPES:-Q4_K_M Q6_K Q2_K IQ4_XS}; do
  for use_im in no yes; do
    for th in ${WQ_KQ_THREADS:-2 1}; do
      opts=()
      [ "$use_im" = yes ] && opts=(--imatrix "$im")
      rm -f "$dir"/kq-{a,n,b}.runs
      same=yes
      for _ in $(seq "$runs"); do
        rm -f "$dir/kq-wq.gguf" "$dir/kq-lq.gguf"
        sync
        cat "$in" > /dev/null
        timed a "$wq" quantize "${opts[@]}" "$in" "$dir/kq-wq.gguf" "$t" "$th"
        rm -f "$dir/kq-nf.gguf"
        sync
        cat "$in" > /dev/null
        timed n env WQUANT_NO_FSYNC=1 "$wq" quantize "${opts[@]}" "$in" "$dir/kq-nf.gguf" "$t" "$th"
        sync  # its writeback before llama-quantize's run
        cat "$in" > /dev/null
        timed b "$lq" "${opts[@]}" "$in" "$dir/kq-lq.gguf" "$t" "$th"
        # Every run's file against llama-quantize's, the no-fsync one's too.
        lq_sum=$(sha256sum < "$dir/kq-lq.gguf")
        [ "$(sha256sum < "$dir/kq-wq.gguf")" = "$lq_sum" ] && [ "$(sha256sum < "$dir/kq-nf.gguf")" = "$lq_sum" ] || same=no
        rm -f "$dir/kq-nf.gguf"
      done
      suffix=""
      [ "$runs" -gt 1 ] && suffix=" (medians of $runs)"
      awk -v t="$t" -v i="$use_im" -v th="$th" -v aw="$(median a 1)" -v ar="$(median a 2)" -v nw="$(median n 1)" \
        -v bw="$(median b 1)" -v br="$(median b 2)" -v s="$same$suffix" \
        'BEGIN { printf "%-8s %-8s %3s | %9.2f %8d | %9.2f | %9.2f %8d | %6.1fx %8.1fx | %s\n",
          t, i, th, aw, ar, nw, bw, br, bw / aw, bw / nw, s }'
      if [ "$runs" -gt 1 ]; then
        printf "    runs: wquant %s | no fsync %s | llama-quantize %s\n" "$(awk '{printf "%s ", $1}' "$dir/kq-a.runs")" \
          "$(awk '{printf "%s ", $1}' "$dir/kq-n.runs")" "$(awk '{printf "%s ", $1}' "$dir/kq-b.runs")"
      fi
    done
  done
done
rm -f "$dir/kq-wq.gguf" "$dir/kq-lq.gguf" "$dir"/kq-{a,n,b}.runs
