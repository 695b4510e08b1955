// One row of weights to llama.cpp blocks and back, for every type of
// kernels/ggml_types.inc: what ggml_quantize_chunk does for one row (the slot contract of
// quantize_ggml, kernels/kernel_slots.inc). The scalar table is this; SIMD tables call it
// for what they do not vectorise, so those bytes are equal by construction.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>

#include "kernels/ggml_blocks.h"
#include "kernels/ggml_kquant_dequant_reference.h"
#include "kernels/ggml_kquant_reference.h"
#include "kernels/ggml_reference.h"
#include "kernels/ggml_types.h"

namespace wq::ref {
WQ_BEGIN_ISA_NAMESPACE

// The legacy types take no importance matrix but Q4_0..Q5_1 (Q8_0 ignores it); their
// imatrix path needs the whole row (sigma2).
template <GgmlBlock T>
constexpr bool kLegacyImatrix = T == GgmlBlock::Q4_0 || T == GgmlBlock::Q4_1 || T == GgmlBlock::Q5_0 || T == GgmlBlock::Q5_1;
template <GgmlBlock T>
constexpr bool kLegacy = T == GgmlBlock::Q8_0 || kLegacyImatrix<T>;

// The block quantizer of type T (the legacy ones take no importance matrix).
template <GgmlBlock T>
void quantize_block_of(const float* x, Block<T>* y, const float* qw) {
  using B = GgmlBlock;
  if constexpr (T == B::Q8_0) quantize_block_Q8_0(x, y);
  else if constexpr (T == B::Q4_0) quantize_block_Q4_0(x, y);
  else if constexpr (T == B::Q4_1) quantize_block_Q4_1(x, y);
  else if constexpr (T == B::Q5_0) quantize_block_Q5_0(x, y);
  else if constexpr (T == B::Q5_1) quantize_block_Q5_1(x, y);
  else if constexpr (T == B::Q2_K) quantize_block_Q2_K(x, y, qw);
  else if constexpr (T == B::Q3_K) quantize_block_Q3_K(x, y, qw);
  else if constexpr (T == B::Q4_K) quantize_block_Q4_K(x, y, qw);
  else if constexpr (T == B::Q5_K) quantize_block_Q5_K(x, y, qw);
  else if constexpr (T == B::Q6_K) quantize_block_Q6_K(x, y, qw);
  else if constexpr (T == B::IQ4_NL) quantize_block_IQ4_NL(x, y, qw);
  else if constexpr (T == B::IQ4_XS) quantize_block_IQ4_XS(x, y, qw);
  else static_assert(T != T, "no reference quantizer for this block type");
}

// Dequantizers are named after their type: dequantize_block_<id>.
#define WQ_GGML_TYPE(id, ...) \
  inline void dequantize_block_of(const Block##id* y, float* x) { dequantize_block_##id(y, x); }
#include "kernels/ggml_types.inc"
#undef WQ_GGML_TYPE

// n weights (a multiple of the type's block) at x, imatrix null or n column weights.
template <GgmlBlock T>
void quantize_row(const float* x, Block<T>* y, size_t n, const float* imatrix) {
  constexpr size_t w = ggml_traits(T).weights;
  if constexpr (kLegacyImatrix<T>) {
    if (imatrix) {
      const float sigma2 = legacy_sigma2(x, n);
      for (size_t i = 0; i < n / w; ++i) quantize_block_imatrix(x + w * i, y + i, imatrix + w * i, sigma2);
      return;
    }
  }
  for (size_t i = 0; i < n / w; ++i) {
    quantize_block_of<T>(x + w * i, y + i, (imatrix && !kLegacy<T>) ? imatrix + w * i : nullptr);
  }
}

template <GgmlBlock T>
void dequantize_row(const Block<T>* y, float* x, size_t n) {
  constexpr size_t w = ggml_traits(T).weights;
  for (size_t i = 0; i < n / w; ++i) dequantize_block_of(y + i, x + w * i);
}

WQ_END_ISA_NAMESPACE
}  // namespace wq::ref
