// A llama-architecture GGUF that llama-quantize accepts and that every legacy block type
// fits: stories260K's metadata and tensor names with the FFN widened from 172 to 192
// (a multiple of 32), and weights from a fixed-seed generator (normal-like values,
// outlier columns, exact zeros, constant rows and values on the rounding boundaries).
// tests/data/llama_quantize_digests.json holds the digests of what llama-quantize wrote
// for it; regenerating it here and quantizing it must give the same bytes.
#pragma once

#include <string>

namespace wq::test {

// Writes the fixture to out_path, taking metadata and names from stories260K-f32.gguf.
void write_gguf_fixture(const std::string& stories_gguf, const std::string& out_path);

// 64-bit FNV-1a, as bench/gguf_tensors.py computes it.
uint64_t fnv1a64(const uint8_t* data, size_t n);

}  // namespace wq::test
