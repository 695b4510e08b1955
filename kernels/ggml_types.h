// Facts per llama.cpp block type (kernels/ggml_types.inc), for every layer: io reads
// GGUF ids and sizes here, engine the block geometry, cli the names and bits.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "kernels/kernels.h"

namespace wq {
// In the per-ISA namespace (kernels/isa_namespace.h): ggml_traits has a body, and
// kernels use it.
WQ_BEGIN_ISA_NAMESPACE

struct GgmlTypeTraits {
  GgmlBlock type;
  const char* name;      // "Q4_K": as llama.cpp prints it and --type takes it
  size_t weights;        // weights per block
  size_t bytes;          // bytes per block
  uint32_t gguf_type;    // ggml_type id in a GGUF tensor record
  uint32_t llama_ftype;  // general.file_type of a model mostly of this type
  int bits;              // bits per code
  bool has_min;          // the block stores a minimum (an affine zero)
  int d_offset;          // byte offset of the block's f16 scale d
  int m_offset;          // byte offset of its f16 min (dmin), or -1
};

inline constexpr GgmlTypeTraits kGgmlTraits[kGgmlBlockCount] = {
#define WQ_GGML_TYPE(id, weights, bytes, gguf, ftype, bits, has_min, d_at, m_at) \
  {GgmlBlock::id, #id, weights, bytes, gguf, ftype, bits, has_min, d_at, m_at},
#include "kernels/ggml_types.inc"
#undef WQ_GGML_TYPE
};

constexpr const GgmlTypeTraits& ggml_traits(GgmlBlock t) { return kGgmlTraits[int(t)]; }
constexpr const char* ggml_block_name(GgmlBlock t) { return ggml_traits(t).name; }
// Bytes of a row of `cols` weights; cols must be a multiple of the type's block.
constexpr size_t ggml_row_bytes(GgmlBlock t, size_t cols) { return cols / ggml_traits(t).weights * ggml_traits(t).bytes; }
// By name, case-insensitive ("q4_0" too); nullopt if wquant has no such type.
std::optional<GgmlBlock> ggml_block_named(std::string_view name);
// By GGUF tensor type id; nullopt if wquant has no such type.
std::optional<GgmlBlock> ggml_block_of_gguf(uint32_t gguf_type);
// The legacy type that stores `bits`-bit codes in blocks of 32, with a per-block minimum
// or without, as --bits / --asym (and a params rule's bits / asym on GGUF output) choose
// it: 4 -> Q4_0 / Q4_1, 5 -> Q5_0 / Q5_1, 8 -> Q8_0 (none with a minimum); none for others.
inline std::optional<GgmlBlock> legacy_block_for_bits(int bits, bool with_min) {
  if (bits == 4) return with_min ? GgmlBlock::Q4_1 : GgmlBlock::Q4_0;
  if (bits == 5) return with_min ? GgmlBlock::Q5_1 : GgmlBlock::Q5_0;
  if (bits == 8 && !with_min) return GgmlBlock::Q8_0;
  return std::nullopt;
}

WQ_END_ISA_NAMESPACE
}  // namespace wq
