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

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type) {
  switch (type) {
    case 0: return GgmlTypeTraits{"F32", 1, 4};
    case 1: return GgmlTypeTraits{"F16", 1, 2};
    case 2: return GgmlTypeTraits{"Q4_0", 32, 18};
    case 3: return GgmlTypeTraits{"Q4_1", 32, 20};
    case 6: return GgmlTypeTraits{"Q5_0", 32, 22};
    case 7: return GgmlTypeTraits{"Q5_1", 32, 24};
    case 8: return GgmlTypeTraits{"Q8_0", 32, 34};
    case 9: return GgmlTypeTraits{"Q8_1", 32, 36};
    case 10: return GgmlTypeTraits{"Q2_K", 256, 84};
    case 11: return GgmlTypeTraits{"Q3_K", 256, 110};
    case 12: return GgmlTypeTraits{"Q4_K", 256, 144};
    case 13: return GgmlTypeTraits{"Q5_K", 256, 176};
    case 14: return GgmlTypeTraits{"Q6_K", 256, 210};
    case 15: return GgmlTypeTraits{"Q8_K", 256, 292};
    case 24: return GgmlTypeTraits{"I8", 1, 1};
    case 25: return GgmlTypeTraits{"I16", 1, 2};
    case 26: return GgmlTypeTraits{"I32", 1, 4};
    case 27: return GgmlTypeTraits{"I64", 1, 8};
    case 28: return GgmlTypeTraits{"F64", 1, 8};
    case 30: return GgmlTypeTraits{"BF16", 1, 2};
    default: return std::nullopt;
  }
}

uint32_t ggml_type_of(GgmlBlock b) {
  switch (b) {
    case GgmlBlock::Q8_0: return kGgmlQ8_0;
    case GgmlBlock::Q4_0: return kGgmlQ4_0;
    case GgmlBlock::Q4_1: return kGgmlQ4_1;
    case GgmlBlock::Q5_0: return kGgmlQ5_0;
    case GgmlBlock::Q5_1: return kGgmlQ5_1;
  }
  return kGgmlQ4_0;
}

std::optional<GgmlBlock> ggml_block_of(uint32_t type) {
  switch (type) {
    case kGgmlQ8_0: return GgmlBlock::Q8_0;
    case kGgmlQ4_0: return GgmlBlock::Q4_0;
    case kGgmlQ4_1: return GgmlBlock::Q4_1;
    case kGgmlQ5_0: return GgmlBlock::Q5_0;
    case kGgmlQ5_1: return GgmlBlock::Q5_1;
    default: return std::nullopt;
  }
}

uint32_t llama_ftype_of(GgmlBlock b) {
  switch (b) {
    case GgmlBlock::Q4_0: return 2;
    case GgmlBlock::Q4_1: return 3;
    case GgmlBlock::Q8_0: return 7;
    case GgmlBlock::Q5_0: return 8;
    case GgmlBlock::Q5_1: return 9;
  }
  return 2;
}

}  // namespace wq
