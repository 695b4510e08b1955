#include "io/gguf_format.h"

namespace wq {

size_t gguf_scalar_size(uint32_t type) {
  switch (GgufValueType(type)) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::Bool: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    default: return 0;
  }
}

std::optional<GgufTensorType> gguf_tensor_type(uint32_t type) {
  switch (type) {
    case 0: return GgufTensorType{"F32", 1, 4};
    case 1: return GgufTensorType{"F16", 1, 2};
    case 2: return GgufTensorType{"Q4_0", 32, 18};
    case 3: return GgufTensorType{"Q4_1", 32, 20};
    case 6: return GgufTensorType{"Q5_0", 32, 22};
    case 7: return GgufTensorType{"Q5_1", 32, 24};
    case 8: return GgufTensorType{"Q8_0", 32, 34};
    case 9: return GgufTensorType{"Q8_1", 32, 36};
    case 10: return GgufTensorType{"Q2_K", 256, 84};
    case 11: return GgufTensorType{"Q3_K", 256, 110};
    case 12: return GgufTensorType{"Q4_K", 256, 144};
    case 13: return GgufTensorType{"Q5_K", 256, 176};
    case 14: return GgufTensorType{"Q6_K", 256, 210};
    case 15: return GgufTensorType{"Q8_K", 256, 292};
    // The IQ and TQ types wquant has no kernels for: their sizes (ggml-common.h's block
    // structs) let such tensors be read, copied and named where they are not requantized.
    case 16: return GgufTensorType{"IQ2_XXS", 256, 66};
    case 17: return GgufTensorType{"IQ2_XS", 256, 74};
    case 18: return GgufTensorType{"IQ3_XXS", 256, 98};
    case 19: return GgufTensorType{"IQ1_S", 256, 50};
    case 20: return GgufTensorType{"IQ4_NL", 32, 18};
    case 21: return GgufTensorType{"IQ3_S", 256, 110};
    case 22: return GgufTensorType{"IQ2_S", 256, 82};
    case 23: return GgufTensorType{"IQ4_XS", 256, 136};
    case 24: return GgufTensorType{"I8", 1, 1};
    case 25: return GgufTensorType{"I16", 1, 2};
    case 26: return GgufTensorType{"I32", 1, 4};
    case 27: return GgufTensorType{"I64", 1, 8};
    case 28: return GgufTensorType{"F64", 1, 8};
    case 29: return GgufTensorType{"IQ1_M", 256, 56};
    case 30: return GgufTensorType{"BF16", 1, 2};
    case 34: return GgufTensorType{"TQ1_0", 256, 54};
    case 35: return GgufTensorType{"TQ2_0", 256, 66};
    default: return std::nullopt;
  }
}

std::optional<GgufTensorType> gguf_tensor_type_named(const std::string& name) {
  for (uint32_t t = 0; t < 64; ++t) {
    if (const auto g = gguf_tensor_type(t); g && name == g->name) return g;
  }
  return std::nullopt;
}

}  // namespace wq
