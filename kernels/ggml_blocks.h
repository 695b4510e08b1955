// On-disk llama.cpp block layouts (ggml-common.h), byte for byte; d and m are IEEE half
// floats. Sizes and weights per block: kernels/ggml_types.inc.
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

#define WQ_GGML_TYPE(id, ...) \
  template <>                 \
  struct BlockOf<GgmlBlock::id> { using type = Block##id; };
#include "kernels/ggml_types.inc"
#undef WQ_GGML_TYPE
template <GgmlBlock T>
using Block = typename BlockOf<T>::type;

// Every layout has the size and geometry its traits line says.
#define WQ_GGML_TYPE(id, weights, bytes, ...) \
  static_assert(sizeof(Block##id) == (bytes), #id " block size differs from kernels/ggml_types.inc");
#include "kernels/ggml_types.inc"
#undef WQ_GGML_TYPE

WQ_END_ISA_NAMESPACE
}  // namespace wq
