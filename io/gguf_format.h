// GGUF constants shared by the reader and the writer: value types, ggml tensor types
// and their block geometry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "kernels/kernels.h"

namespace wq {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
inline constexpr uint32_t kGgufDefaultAlignment = 32;

enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9,
  U64 = 10, I64 = 11, F64 = 12,
};

// Size of a scalar value type, 0 for String/Array/unknown.
size_t gguf_scalar_size(uint32_t type);

// ggml tensor type ids (ggml.h) that wquant reads or writes.
// (The block types wquant writes have theirs in kernels/ggml_types.inc.)
enum GgmlTypeId : uint32_t { kGgmlF32 = 0, kGgmlF16 = 1, kGgmlBF16 = 30 };

// Any ggml tensor type a GGUF file may hold, for sizing and naming what wquant reads.
struct GgufTensorType {
  const char* name;
  uint32_t block_weights;  // weights per block (1 for plain types)
  uint32_t block_bytes;
};

// Known ggml types (plain, legacy and K-quants); nullopt for an id wquant does not know.
std::optional<GgufTensorType> gguf_tensor_type(uint32_t type);
// The same by its name ("IQ2_XXS"), for the types gguf_tensor_type knows.
std::optional<GgufTensorType> gguf_tensor_type_named(const std::string& name);

}  // namespace wq
