#!/usr/bin/env bash
# Sets up the machine, builds wquant, and runs its main job: quantizes the stories260K
# model from ../shared (4-bit, block 32, HQQ) to the native .wq format and to GGUF Q4_0,
# then inspects and verifies the results. Without ../shared it quantizes a small
# TinyLlama-shaped model that wquant generates itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
# Only what this script runs (scripts/test.sh builds the rest of the same tree).
WQUANT_TARGETS="${WQUANT_TARGETS:-wquant wq_gen_model}" bash scripts/build.sh release
wq=$root/build/cli/wquant
out=$root/out
mkdir -p "$out"
model_dir=$root/../shared/data/models/stories260K
if [ -f "$model_dir/stories260K.safetensors" ]; then
  st=$model_dir/stories260K.safetensors
  gguf=$model_dir/stories260K-f32.gguf
  echo "== model: stories260K (from ../shared)"
else
  echo "== ../shared is absent: generating a 2-layer TinyLlama-shaped model"
  "$root/build/bench/wq_gen_model" --layers 2 --format safetensors --dtype f32 "$out/generated.safetensors"
  "$root/build/bench/wq_gen_model" --layers 2 --format gguf --dtype f32 "$out/generated-f32.gguf"
  st=$out/generated.safetensors
  gguf=$out/generated-f32.gguf
fi
"$wq" quantize "$st" "$out/model-q4-hqq.wq" --bits 4 --block 32 --hqq --force
"$wq" inspect "$out/model-q4-hqq.wq"
"$wq" verify "$st" "$out/model-q4-hqq.wq"
"$wq" quantize "$gguf" "$out/model-Q4_0.gguf" --type Q4_0 --force
"$wq" verify "$gguf" "$out/model-Q4_0.gguf"
echo "== outputs in $out"
