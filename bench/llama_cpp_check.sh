#!/usr/bin/env bash
# Does llama.cpp run what wquant writes? Quantizes stories260K (../shared) to every GGUF
# type wquant writes (and Q4_1/Q5_1 with HQQ), runs llama.cpp's
# llama-simple on each with a fixed prompt, greedy, and compares the first 12 tokens with
# the float model's. llama.cpp is built outside this repository; point LLAMA_SIMPLE at its binary:
#   LLAMA_SIMPLE=/path/to/llama-simple bash bench/llama_cpp_check.sh
# Prints one line per file and exits non-zero if any differs or fails to run.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
wq=${WQUANT:-$root/build/cli/wquant}
simple=${LLAMA_SIMPLE:?set LLAMA_SIMPLE to the llama-simple binary of llama.cpp}
model=$root/../shared/data/models/stories260K/stories260K-f32.gguf
[ -f "$model" ] || { echo "llama-cpp-check: $model is absent"; exit 2; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
prompt="Once upon a time"
# 12 tokens: 4-bit files of a 260K-parameter model part from the float text after about 15.
generate() { "$simple" -m "$1" -n 12 "$prompt" 2>/dev/null | tail -1; }
want=$(generate "$model")
echo "float: $want"
status=0
check() {  # name, wquant flags...
  local name=$1; shift
  if ! "$wq" quantize "$model" "$work/$name.gguf" --force -q "$@"; then echo "$name: wquant failed"; status=1; return; fi
  local got; got=$(generate "$work/$name.gguf")
  if [ "$got" = "$want" ]; then echo "$name: same text"; else echo "$name: DIFFERS: $got"; status=1; fi
}
for t in Q4_0 Q4_1 Q5_0 Q5_1 Q8_0; do check "$t" --type "$t"; done
check Q4_1-hqq --type Q4_1 --hqq
check Q5_1-hqq --type Q5_1 --hqq
# llama-quantize's mixes: stories260K's 64-wide rows take the K types' fallbacks (Q5_0,
# Q8_0, ...) and its 172-wide FFN F16, as llama-quantize's own files do (byte-identical:
# tests/gguf_mix_test.cpp). Pass: llama.cpp loads the file and generates; the text is
# printed, and compared with the float model's for information only (F16 FFN tensors make
# llama.cpp's text for stories260K degenerate, see the --fp16 line below).
runs() {  # name, wquant args...
  local name=$1; shift
  if ! "$wq" quantize --force -q "$@"; then echo "$name: wquant failed"; status=1; return; fi
  local got
  if ! got=$("$simple" -m "$work/$name.gguf" -n 12 "$prompt" 2>/dev/null | tail -1) || [ -z "$got" ]; then
    echo "$name: llama.cpp FAILED to run it"; status=1; return
  fi
  if [ "$got" = "$want" ]; then echo "$name: runs, same text"; else echo "$name: runs, text: $got"; fi
}
for m in Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16; do
  runs "$m" "$model" "$work/$m.gguf" "$m"
done
# Not a pass/fail line: with --fp16 the 172-wide FFN tensors (no 32-block fits) are
# stored F16, and llama.cpp's output for stories260K degenerates (README, GGUF).
"$wq" quantize "$model" "$work/fp16.gguf" --type Q4_0 --fp16 --force -q && echo "Q4_0 --fp16 (F16 FFN, informative): $(generate "$work/fp16.gguf")"
exit $status
