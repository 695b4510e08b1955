// On-disk llama.cpp block layouts (ggml-common.h), byte for byte. Each block covers 32
// weights; d and m are IEEE half floats.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace wq {

inline constexpr int kGgmlBlockWeights = 32;

struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d; uint16_t m; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d; uint16_t m; uint8_t qh[4]; uint8_t qs[16]; };

static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block is 18 bytes");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block is 20 bytes");
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block is 22 bytes");
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block is 24 bytes");

inline constexpr size_t ggml_block_bytes(GgmlBlock t) {
  switch (t) {
    case GgmlBlock::Q8_0: return sizeof(BlockQ8_0);
    case GgmlBlock::Q4_0: return sizeof(BlockQ4_0);
    case GgmlBlock::Q4_1: return sizeof(BlockQ4_1);
    case GgmlBlock::Q5_0: return sizeof(BlockQ5_0);
    case GgmlBlock::Q5_1: return sizeof(BlockQ5_1);
  }
  return 0;
}
const char* ggml_block_name(GgmlBlock t);

}  // namespace wq
