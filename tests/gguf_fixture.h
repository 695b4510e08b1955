// A llama-architecture GGUF that llama-quantize accepts and that every legacy block type
// fits: stories260K's metadata and tensor names with the FFN widened from 172 to 192
// (a multiple of 32), and weights from a fixed-seed generator (normal-like values,
// outlier columns, exact zeros, constant rows and values on the rounding boundaries).
// tests/data/llama_quantize_digests.json holds the digests of what llama-quantize wrote
// for it; regenerating it here and quantizing it must give the same bytes.
#pragma once

#include <cstdint>
#include <string>

namespace wq::test {

// Writes the fixture to out_path, taking metadata and names from stories260K-f32.gguf.
// `alignment` (a power of two; 0: the source's 32) sets general.alignment and the data's.
void write_gguf_fixture(const std::string& stories_gguf, const std::string& out_path, uint32_t alignment = 0);

// A llama model whose rows are multiples of 256 (every K type fits), with stories260K's
// tokenizer and the same weight generator: the mixes' own choices (GQA, layer position,
// untied output, MoE experts) show there, not their fallbacks.
struct WideFixture {
  std::string name;
  int64_t n_vocab = 512;  // stories260K's tokenizer
  int64_t n_embd = 256;
  int64_t n_ff = 768;     // per expert when n_expert > 0
  int64_t n_head = 8;
  int64_t n_head_kv = 2;  // GQA 4: the n_gqa() >= 4 rules apply
  int n_layer = 8;        // n_layer / 8 = 1: first, last and every third layer differ
  int64_t n_expert = 0;   // 0: dense FFN; else ffn_*_exps of this many experts
  bool untied_output = true;
};

// The two wide fixtures tests/data/llama_quantize_mix_digests.json was made from.
inline WideFixture dense_fixture() { return WideFixture{"wquant-fixture-256"}; }
inline WideFixture moe_fixture() {
  WideFixture f{"wquant-fixture-moe"};
  f.n_ff = 256;
  f.n_layer = 4;
  f.n_expert = 8;
  return f;
}

// The 192 fixture split into shards of `per_shard` tensors as gguf-split lays them out:
// PREFIX-00001-of-0000N.gguf ... (split.no, split.count, split.tensors.count).
// `empty_shard` (0-based; -1: none): a shard that holds no tensors, one more shard. The
// first so is gguf-split's --no-tensor-first-split (the keys alone); another is what
// --keep-split refuses.
void write_gguf_fixture_split(const std::string& stories_gguf, const std::string& prefix, int per_shard,
                              int empty_shard = -1);
// (The old `bool empty_first` would convert to shard 0 or 1: a compile error instead.)
void write_gguf_fixture_split(const std::string&, const std::string&, int, bool) = delete;

void write_gguf_wide_fixture(const std::string& stories_gguf, const std::string& out_path, const WideFixture& f);

// 64-bit FNV-1a, as bench/gguf_tensors.py computes it.
uint64_t fnv1a64(const uint8_t* data, size_t n);

}  // namespace wq::test
