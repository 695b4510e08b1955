// llama.cpp's dequantize_row_<t> for one K-quant or IQ4 super-block (ggml-quants.c at
// c392e5094), except that a NaN d or dmin of a type with mins is read as x86's default
// NaN (x86_nan): with two NaN operands, which one an operation propagates depends on
// operand order and ISA; llama.cpp's own NaN blocks (kernels/ggml_quant_search.h x86_nan)
// dequantize to that NaN on x86 too.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstdint>

#include "kernels/ggml_blocks.h"
#include "kernels/ggml_kquant_reference.h"
#include "kernels/ggml_quant_search.h"

namespace wq::ref {
WQ_BEGIN_ISA_NAMESPACE

inline void dequantize_block_Q2_K(const BlockQ2_K* b, float* y) {
  const float d = x86_nan(half(b->d));
  const float min = x86_nan(half(b->dmin));
  const uint8_t* q = b->qs;
  int is = 0;
  for (int n = 0; n < 256; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      uint8_t sc = b->scales[is++];
      float dl = d * (sc & 0xF), ml = min * (sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * int8_t((q[l] >> shift) & 3) - ml;
      sc = b->scales[is++];
      dl = d * (sc & 0xF);
      ml = min * (sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * int8_t((q[l + 16] >> shift) & 3) - ml;
      shift += 2;
    }
    q += 32;
  }
}

inline void dequantize_block_Q3_K(const BlockQ3_K* b, float* y) {
  const float d_all = half(b->d);
  const uint8_t* q = b->qs;
  const uint8_t* hm = b->hmask;
  uint8_t m = 1;
  int is = 0;
  for (int n = 0; n < 256; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      float dl = d_all * get_scale_q3(is++, b->scales);
      for (int l = 0; l < 16; ++l) *y++ = dl * (int8_t((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
      dl = d_all * get_scale_q3(is++, b->scales);
      for (int l = 0; l < 16; ++l) *y++ = dl * (int8_t((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
      shift += 2;
      m = uint8_t(m << 1);
    }
    q += 32;
  }
}

inline void dequantize_block_Q4_K(const BlockQ4_K* b, float* y) {
  const uint8_t* q = b->qs;
  const float d = x86_nan(half(b->d));
  const float min = x86_nan(half(b->dmin));
  int is = 0;
  uint8_t sc, m;
  for (int j = 0; j < 256; j += 64) {
    get_scale_min_k4(is + 0, b->scales, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    get_scale_min_k4(is + 1, b->scales, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

inline void dequantize_block_Q5_K(const BlockQ5_K* b, float* y) {
  const uint8_t* ql = b->qs;
  const uint8_t* qh = b->qh;
  const float d = x86_nan(half(b->d));
  const float min = x86_nan(half(b->dmin));
  int is = 0;
  uint8_t sc, m;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < 256; j += 64) {
    get_scale_min_k4(is + 0, b->scales, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    get_scale_min_k4(is + 1, b->scales, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 = uint8_t(u1 << 2);
    u2 = uint8_t(u2 << 2);
  }
}

inline void dequantize_block_Q6_K(const BlockQ6_K* b, float* y) {
  const float d = half(b->d);
  const uint8_t* ql = b->ql;
  const uint8_t* qh = b->qh;
  const int8_t* sc = b->scales;
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int8_t q1 = int8_t(((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
      const int8_t q2 = int8_t(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      const int8_t q3 = int8_t(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      const int8_t q4 = int8_t(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      y[l + 0] = d * sc[is + 0] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

inline void dequantize_block_IQ4_NL(const BlockIQ4_NL* b, float* y) {
  const float d = half(b->d);
  for (int j = 0; j < 16; ++j) {
    y[j + 0] = d * kValuesIq4nl[b->qs[j] & 0xf];
    y[j + 16] = d * kValuesIq4nl[b->qs[j] >> 4];
  }
}

inline void dequantize_block_IQ4_XS(const BlockIQ4_XS* b, float* y) {
  const float d = half(b->d);
  const uint8_t* qs = b->qs;
  for (int ib = 0; ib < 8; ++ib) {
    const int ls = ((b->scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((b->scales_h >> 2 * ib) & 3) << 4);
    const float dl = d * (ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j + 0] = dl * kValuesIq4nl[qs[j] & 0xf];
      y[j + 16] = dl * kValuesIq4nl[qs[j] >> 4];
    }
    y += 32;
    qs += 16;
  }
}

WQ_END_ISA_NAMESPACE
}  // namespace wq::ref
