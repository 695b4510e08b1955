// A synthetic llama-shaped model (TinyLlama's shape by default) for benchmarks, scale
// tests and the newcomer path of scripts/run.sh, written as GGUF (llama.cpp names and
// metadata, runnable by llama.cpp) or safetensors (Hugging Face names).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/plan.h"
#include "io/gguf_reader.h"
#include "kernels/kernels.h"

namespace wq {

struct SyntheticConfig {
  int layers = 22;
  int64_t dim = 2048, ffn = 5632, heads = 32, kv_heads = 4, vocab = 32000, context = 2048;
  DType dtype = DType::F32;  // of the matrices; GGUF norms are always f32 (below)
  uint64_t seed = 1;
  // Sharded safetensors (OUT ending in .index.json): the most bytes of tensors per shard
  // (a larger tensor gets a shard of its own), as Hugging Face's max_shard_size.
  uint64_t shard_bytes = uint64_t(1) << 30;
};

// The llama.* and tokenizer.* keys: a llama-style SentencePiece vocabulary laid out as
// llama.cpp's converters write one (stories260K-f32.gguf has the same layout): <unk>
// (type 2, UNKNOWN), <s> and </s> (type 3, CONTROL), the 256 byte tokens <0x00>..<0xFF>
// (type 6, BYTE; llama.cpp's byte fallback needs them, or any text aborts it), then
// normal pieces (type 1) using U+2581 for a space, scored -0, -1, -2, ...; model "llama",
// bos 1, eos 2, unk 0. Throws Error when vocab cannot hold those 259 tokens plus one.
GgufMetadata synthetic_llama_metadata(const SyntheticConfig& c);

// Writes the model to `out` in `format` (Gguf or Safetensors), one tensor at a time.
// Weights are normal(0, 0.02) with ~1% of input channels 10-50x larger; norm scales are
// near 1. In GGUF the 1-D norm tensors are f32 whatever c.dtype is (llama.cpp's CPU
// backend asserts an f32 operand for them, and its converters keep 1-D tensors f32); in
// safetensors every tensor has c.dtype, as Hugging Face checkpoints do. Returns the number
// of parameters. The bytes depend only on c (not on threads).
// Safetensors to a path ending in .index.json is written as Hugging Face shards a
// checkpoint: model-0000N-of-0000M.safetensors beside it (tensors in order, at most
// c.shard_bytes of them each), then the index {"metadata": {"total_size"}, "weight_map"}
// last, so an interrupted run leaves no index to load.
uint64_t write_synthetic_model(const std::string& out, OutputFormat format, const SyntheticConfig& c);

}  // namespace wq
