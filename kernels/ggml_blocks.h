// On-disk llama.cpp block layouts (ggml-common.h), byte for byte; d, m and dmin are IEEE
// half floats. Sizes and weights per block: kernels/ggml_types.inc.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE

// Block<T>: the layout of type T, so templated kernels name it by its GgmlBlock.
template <GgmlBlock T>
struct BlockOf;

struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d; uint16_t m; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d; uint16_t m; uint8_t qh[4]; uint8_t qs[16]; };
// K-quants: 256-weight super-blocks of 16 or 32-weight sub-blocks with quantized scales.
struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d; uint16_t dmin; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d; uint16_t dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d; uint16_t dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
// Non-linear 4-bit levels (kValuesIq4nl): one 32-weight block, or a 256-weight
// super-block with 6-bit sub-block scales.
struct BlockIQ4_NL { uint16_t d; uint8_t qs[16]; };
struct BlockIQ4_XS { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };

#define WQ_GGML_TYPE(id, ...) \
  template <>                 \
  struct BlockOf<GgmlBlock::id> { using type = Block##id; };
#include "kernels/ggml_types.inc"
#undef WQ_GGML_TYPE
template <GgmlBlock T>
using Block = typename BlockOf<T>::type;

// Every layout has the size and geometry its traits line says.
#define WQ_GGML_TYPE(id, weights, bytes, gguf, ftype, bits, has_min, d_at, m_at)                          \
  static_assert(sizeof(Block##id) == (bytes), #id " block size differs from kernels/ggml_types.inc");      \
  static_assert(offsetof(Block##id, d) == (d_at), #id " d offset differs from kernels/ggml_types.inc");
#include "kernels/ggml_types.inc"
#undef WQ_GGML_TYPE
static_assert(offsetof(BlockQ4_1, m) == 2 && offsetof(BlockQ5_1, m) == 2 && offsetof(BlockQ2_K, dmin) == 82 &&
                  offsetof(BlockQ4_K, dmin) == 2 && offsetof(BlockQ5_K, dmin) == 2,
              "min offsets differ from kernels/ggml_types.inc");

WQ_END_ISA_NAMESPACE
}  // namespace wq
