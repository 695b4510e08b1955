// llama.cpp's quantize_row_*_ref / dequantize_row_* for one 32-weight block of the legacy
// types, written from ggml-quants.c's formulas, and their importance-matrix path
// (quantize_row_q4_0_impl etc., transcribed with kernels/ggml_quant_search.h). Differences, all for input llama.cpp cannot quantize
// meaningfully either: NaN is ignored by the max searches and its code is 0; casts that
// would overflow saturate instead of being undefined; a NaN d or m of Q4_1/Q5_1, and any
// NaN a Q4_1/Q5_1 block dequantizes to, is the canonical NaN.
#pragma once

#include "kernels/isa_namespace.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/ggml_blocks.h"
#include "kernels/ggml_quant_search.h"
#include "kernels/reference.h"

namespace wq::ref {
WQ_BEGIN_ISA_NAMESPACE

inline float abs_max_32(const float* x, float* signed_max) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    const float a = abs_f(x[j]);
    if (amax < a) { amax = a; max = x[j]; }  // first element of largest magnitude
  }
  *signed_max = max;
  return amax;
}

inline void min_max_32(const float* x, float* mn, float* mx) {
  float lo = 3.40282347e+38f, hi = -3.40282347e+38f;  // FLT_MAX, as ggml starts
  for (int j = 0; j < 32; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

inline void quantize_block_Q8_0(const float* x, BlockQ8_0* y) {
  float unused;
  const float amax = abs_max_32(x, &unused);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  for (int j = 0; j < 32; ++j) {
    const float r = round_f(x[j] * id);
    y->qs[j] = int8_t((r == r) ? (r < -128.0f ? -128 : (r > 127.0f ? 127 : int(r))) : 0);
  }
}

inline void quantize_block_Q4_0(const float* x, BlockQ4_0* y) {
  float max;
  abs_max_32(x, &max);
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  for (int j = 0; j < 16; ++j) {
    const int a = trunc_sat((x[j] * id) + 8.5f, 0, 15);
    const int b = trunc_sat((x[16 + j] * id) + 8.5f, 0, 15);
    y->qs[j] = uint8_t(a | (b << 4));
  }
}

inline void quantize_block_Q4_1(const float* x, BlockQ4_1* y) {
  float mn, mx;
  min_max_32(x, &mn, &mx);
  const float d = (mx - mn) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  y->m = f32_to_f16(mn);
  for (int j = 0; j < 16; ++j) {
    const int a = trunc_sat(((x[j] - mn) * id) + 0.5f, 0, 15);
    const int b = trunc_sat(((x[16 + j] - mn) * id) + 0.5f, 0, 15);
    y->qs[j] = uint8_t(a | (b << 4));
  }
}

inline void quantize_block_Q5_0(const float* x, BlockQ5_0* y) {
  float max;
  abs_max_32(x, &max);
  const float d = max / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int a = trunc_sat((x[j] * id) + 16.5f, 0, 31);
    const int b = trunc_sat((x[16 + j] * id) + 16.5f, 0, 31);
    y->qs[j] = uint8_t((a & 0x0f) | ((b & 0x0f) << 4));
    qh |= uint32_t((a & 0x10) >> 4) << j;
    qh |= uint32_t((b & 0x10) >> 4) << (j + 16);
  }
  std::memcpy(y->qh, &qh, 4);
}

inline void quantize_block_Q5_1(const float* x, BlockQ5_1* y) {
  float mn, mx;
  min_max_32(x, &mn, &mx);
  const float d = (mx - mn) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y->d = f32_to_f16(d);
  y->m = f32_to_f16(mn);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int a = trunc_sat(((x[j] - mn) * id) + 0.5f, 0, 255);
    const int b = trunc_sat(((x[16 + j] - mn) * id) + 0.5f, 0, 255);
    y->qs[j] = uint8_t((a & 0x0f) | ((b & 0x0f) << 4));
    qh |= uint32_t((a & 0x10) >> 4) << j;
    qh |= uint32_t((b & 0x10) >> 4) << (j + 16);
  }
  std::memcpy(y->qh, &qh, 4);
}

inline void dequantize_block_Q8_0(const BlockQ8_0* y, float* x) {
  const float d = f16_to_f32(y->d);
  for (int j = 0; j < 32; ++j) x[j] = float(y->qs[j]) * d;
}
inline void dequantize_block_Q4_0(const BlockQ4_0* y, float* x) {
  const float d = f16_to_f32(y->d);
  for (int j = 0; j < 16; ++j) {
    x[j] = float(int(y->qs[j] & 0x0f) - 8) * d;
    x[j + 16] = float(int(y->qs[j] >> 4) - 8) * d;
  }
}
// Q4_1 and Q5_1 add two block scalars: NaN ones are made canonical (canon_nan_params),
// and so is a NaN result: a code of 0 times an infinite d makes the ISA's default NaN
// (x86: -NaN), and where it meets a NaN m, which of the two the addition keeps depends on
// the operand order the compiler picks (an ASan build and a Release build differed).
inline void dequantize_block_Q4_1(const BlockQ4_1* y, float* x) {
  const float d = canon_nan(f16_to_f32(y->d)), m = canon_nan(f16_to_f32(y->m));
  for (int j = 0; j < 16; ++j) {
    x[j] = canon_nan((float(y->qs[j] & 0x0f) * d) + m);
    x[j + 16] = canon_nan((float(y->qs[j] >> 4) * d) + m);
  }
}
inline void dequantize_block_Q5_0(const BlockQ5_0* y, float* x) {
  const float d = f16_to_f32(y->d);
  uint32_t qh;
  std::memcpy(&qh, y->qh, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = int(((qh >> j) << 4) & 0x10);
    const int h1 = int((qh >> (j + 12)) & 0x10);
    x[j] = float(((y->qs[j] & 0x0f) | h0) - 16) * d;
    x[j + 16] = float(((y->qs[j] >> 4) | h1) - 16) * d;
  }
}
inline void dequantize_block_Q5_1(const BlockQ5_1* y, float* x) {
  const float d = canon_nan(f16_to_f32(y->d)), m = canon_nan(f16_to_f32(y->m));
  uint32_t qh;
  std::memcpy(&qh, y->qh, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = int(((qh >> j) << 4) & 0x10);
    const int h1 = int((qh >> (j + 12)) & 0x10);
    x[j] = canon_nan((float((y->qs[j] & 0x0f) | h0) * d) + m);
    x[j + 16] = canon_nan((float((y->qs[j] >> 4) | h1) * d) + m);
  }
}

// The importance-matrix path of Q4_0, Q4_1, Q5_0, Q5_1 (quantize_row_q4_0_impl etc.):
// per block, weights qw * sqrt(sigma2 + x^2) with sigma2 the mean x^2 of the whole ROW,
// then make_qx_quants (symmetric types) or make_qkx3_quants (types with a min).
inline float legacy_sigma2(const float* x, size_t n) {
  float sum_x2 = 0;
  for (size_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / float(int64_t(n));
}
inline void legacy_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  for (int j = 0; j < 32; ++j) weight[j] = qw[j] * sqrt_f(sigma2 + xb[j] * xb[j]);
}
inline void pack_q5_high(const uint8_t* L, uint8_t* qs, uint8_t* qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const uint8_t xi0 = L[j];
    const uint8_t xi1 = L[j + 16];
    qs[j] = uint8_t((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
    qh |= ((xi1 & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(qh_bytes, &qh, 4);
}
inline void quantize_block_imatrix(const float* xb, BlockQ4_0* y, const float* qw, float sigma2) {
  float weight[32];
  int8_t L[32];
  legacy_weights(xb, qw, sigma2, weight);
  y->d = f32_to_f16(make_qx_quants(32, 8, xb, L, 1, weight));
  for (int j = 0; j < 16; ++j) y->qs[j] = uint8_t(L[j] | (L[j + 16] << 4));
}
inline void quantize_block_imatrix(const float* xb, BlockQ4_1* y, const float* qw, float sigma2) {
  float weight[32];
  uint8_t L[32], Laux[32];
  legacy_weights(xb, qw, sigma2, weight);
  float min;
  const float d = make_qkx_quants<true>(32, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
  y->d = f32_to_f16(d);
  y->m = f32_to_f16(-min);
  for (int j = 0; j < 16; ++j) y->qs[j] = uint8_t(L[j] | (L[j + 16] << 4));
}
inline void quantize_block_imatrix(const float* xb, BlockQ5_0* y, const float* qw, float sigma2) {
  float weight[32];
  int8_t L[32];
  legacy_weights(xb, qw, sigma2, weight);
  y->d = f32_to_f16(make_qx_quants(32, 16, xb, L, 1, weight));
  uint8_t u[32];
  for (int j = 0; j < 32; ++j) u[j] = uint8_t(L[j]);
  pack_q5_high(u, y->qs, y->qh);
}
inline void quantize_block_imatrix(const float* xb, BlockQ5_1* y, const float* qw, float sigma2) {
  float weight[32];
  uint8_t L[32], Laux[32];
  legacy_weights(xb, qw, sigma2, weight);
  float min;
  const float d = make_qkx_quants<true>(32, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
  y->d = f32_to_f16(d);
  y->m = f32_to_f16(-min);
  pack_q5_high(L, y->qs, y->qh);
}

WQ_END_ISA_NAMESPACE
}  // namespace wq::ref
