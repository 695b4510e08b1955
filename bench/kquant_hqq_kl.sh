#!/usr/bin/env bash
# What --hqq on the K-quants (Q2_K / Q4_K / Q5_K minima, engine/ggml_kquant_hqq.h) does
# to a model's output in llama.cpp: llama-perplexity's KL divergence of each quantized
# file's next-token distributions against the float model's, on the same text, for
# llama-quantize's mixes with and without --hqq. llama.cpp is built outside this repository:
#   LLAMA_PERPLEXITY=/path/to/llama-perplexity bash bench/kquant_hqq_kl.sh [MODEL.gguf]
# MODEL defaults to stories260K (../shared) zero-padded by wq_pad_model to widths every
# K type fits (the same function: same perplexity; stories260K's own 64-wide rows take
# the mixes' fallback types, which have no minimum), and the text to
# tests/data/imatrix_corpus.txt (a TinyStories-style story: 6 chunks of 128 tokens).
# Env: WQ_KL_MIXES (default "Q4_K_M Q4_K_S Q5_K_M Q2_K"), WQ_KL_CTX (128),
# WQ_KL_THREADS (2), WQ_KL_TEXT (a text file).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
wq=${WQUANT:-$root/build/cli/wquant}
ppl=${LLAMA_PERPLEXITY:?set LLAMA_PERPLEXITY to the llama-perplexity binary of llama.cpp}
mixes=${WQ_KL_MIXES:-Q4_K_M Q4_K_S Q5_K_M Q2_K}
ctx=${WQ_KL_CTX:-128}
threads=${WQ_KL_THREADS:-2}
text=${WQ_KL_TEXT:-$root/tests/data/imatrix_corpus.txt}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
  model=$1
else
  stories=$root/../shared/data/models/stories260K/stories260K-f32.gguf
  [ -f "$stories" ] || { echo "kquant-hqq-kl: $stories is absent (../shared beside the checkout)"; exit 2; }
  model=$work/stories260K-padded.gguf
  "${WQ_PAD_MODEL:-$root/build/bench/wq_pad_model}" "$stories" "$model" > /dev/null
fi

run_ppl() { "$ppl" -m "$1" -f "$text" -c "$ctx" -t "$threads" "${@:2}" 2>&1; }
run_ppl "$model" --kl-divergence-base "$work/base.kld" > "$work/base.log" || { cat "$work/base.log"; exit 1; }
echo "model: $model; text: $text, $ctx-token chunks; float PPL $(awk '/^Final estimate/ {print $5, $6, $7}' "$work/base.log")"
printf '| mix | wquant flags | PPL | mean KLD | 99%% KLD | same top token |\n| --- | --- | ---: | ---: | ---: | ---: |\n'
for mix in $mixes; do
  for flags in "" "--hqq"; do
    # shellcheck disable=SC2086
    "$wq" quantize "$model" "$work/q.gguf" "$mix" $flags --threads "$threads" --force -q
    out=$(run_ppl "$work/q.gguf" --kl-divergence-base "$work/base.kld" --kl-divergence) || { echo "$out"; exit 1; }
    mean=$(echo "$out" | awk '/^Mean    KLD:/ {print $3 " ± " $5}')
    p99=$(echo "$out" | awk '/^99.0%   KLD:/ {print $3; exit}')
    top=$(echo "$out" | awk '/^Same top p:/ {print $4 " ± " $6 " %"; exit}')
    pp=$(echo "$out" | awk '/^Mean PPL\(Q\)/ {print $4 " ± " $6; exit}')
    printf '| %s | %s | %s | %s | %s | %s |\n' "$mix" "${flags:-(none)}" "$pp" "$mean" "$p99" "$top"
  done
done
