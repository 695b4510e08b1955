// llama.cpp's K-quant and IQ4 quantizers and dequantizers for one super-block (256
// weights; 32 for IQ4_NL), transcribed from ggml-quants.c at c392e5094 with its searches
// (kernels/ggml_quant_search.h). quantize_block_<T>(x, y, qw) is what llama-quantize's
// ggml_quantize_chunk computes for that super-block: with qw == nullptr,
// quantize_row_<t>_ref (Q2_K..Q6_K) or quantize_row_iq4_nl_impl with ntry 7 and x^2
// weights (IQ4_NL, IQ4_XS: quantize_iq4_nl/xs never call their _ref); with qw (the
// super-block's slice of the importance matrix) quantize_row_<t>_impl. Every super-block
// is independent of the rest of the row in all of these.
// Dequantizers: kernels/ggml_kquant_dequant_reference.h.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstdint>
#include <cstring>

#include "kernels/ggml_blocks.h"
#include "kernels/ggml_quant_search.h"
#include "kernels/reference.h"

namespace wq::ref {
WQ_BEGIN_ISA_NAMESPACE

inline float half(uint16_t h) { return f16_to_f32(h); }

// Q4_K / Q5_K's 6-bit scale and min of sub-block j (get_scale_min_k4).
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = uint8_t((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// Q4_K / Q5_K: pack 6-bit ls, lm of sub-block j into the 12 scale bytes.
inline void put_scale_min_k4(int j, uint8_t ls, uint8_t lm, uint8_t* scales) {
  if (j < 4) {
    scales[j] = ls;
    scales[j + 4] = lm;
  } else {
    scales[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
    scales[j - 4] |= uint8_t((ls >> 4) << 6);
    scales[j - 0] |= uint8_t((lm >> 4) << 6);
  }
}

// Q3_K: pack the 6-bit (biased) scale l of sub-block j; scales starts zeroed.
inline void put_scale_q3(int j, int l, uint8_t* scales) {
  if (j < 8) scales[j] = uint8_t(l & 0xF);
  else scales[j - 8] |= uint8_t((l & 0xF) << 4);
  l >>= 4;
  scales[j % 4 + 8] |= uint8_t(l << (2 * (j / 4)));
}
inline int get_scale_q3(int j, const uint8_t* scales) {
  int8_t sc = int8_t(j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4);
  sc = int8_t((sc | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
  return sc;
}

// Codes L (0..3 each) of 256 weights into Q2_K / Q3_K's qs.
inline void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < 256; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
  }
}

// Q4_K / Q5_K's requantization with the stored scales: codes 0..nmax into L.
inline void requantize_k4(const float* x, const uint8_t* scales, uint16_t d16, uint16_t dmin16, int nmax, uint8_t* L) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    get_scale_min_k4(j, scales, &sc, &m);
    const float d = half(d16) * sc;
    if (!d) continue;
    const float dm = half(dmin16) * m;
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dm) / d);
      l = max_i(0, min_i(nmax, l));
      L[32 * j + ii] = uint8_t(l);
    }
  }
}

// Q2_K's requantization: codes 0..3 from 4-bit scales and mins.
inline void requantize_q2(const float* x, const BlockQ2_K* y, float dm_all, float mm_all, uint8_t* L) {
  for (int j = 0; j < 16; ++j) {
    const float d = dm_all * (y->scales[j] & 0xF);
    if (!d) continue;
    const float m = mm_all * (y->scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int((x[16 * j + ii] + m) / d);
      l = max_i(0, min_i(3, l));
      L[16 * j + ii] = uint8_t(l);
    }
  }
}

// Q2_K after its 16 sub-block searches: 4-bit scales and mins (from the largest ones, or
// with an imatrix by make_qp_quants weighted by the sub-blocks' weight sums sw), d and
// dmin (q2_finish_scales); then the codes requantized with them, packed (q2_finish).
inline void q2_finish_scales(BlockQ2_K* y, const float* scales, const float* mins, const float* sw) {
  if (!sw) {
    const float q4scale = 15.f;
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < 16; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) y->scales[j] = uint8_t(nearest_int(iscale * scales[j]));
      y->d = f32_to_f16(max_scale / q4scale);
    } else {
      for (int j = 0; j < 16; ++j) y->scales[j] = 0;
      y->d = f32_to_f16(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j) y->scales[j] |= uint8_t(nearest_int(iscale * mins[j]) << 4);
      y->dmin = f32_to_f16(max_min / q4scale);
    } else {
      y->dmin = f32_to_f16(0.f);
    }
  } else {
    uint8_t Ls[16], Lm[16];
    const float dm = make_qp_quants(16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(16, 15, mins, Lm, sw);
    y->d = f32_to_f16(dm);
    y->dmin = f32_to_f16(mm);
    for (int j = 0; j < 16; ++j) y->scales[j] = uint8_t(Ls[j] | (Lm[j] << 4));
  }
}
inline void q2_finish(const float* x, BlockQ2_K* y, const float* scales, const float* mins, const float* sw,
                      uint8_t* L) {
  q2_finish_scales(y, scales, mins, sw);
  requantize_q2(x, y, half(y->d), half(y->dmin), L);
  pack_2bit(L, y->qs);
}

// The sigma2 of quantize_row_q2_K_impl (no factor 2, unlike the other K-quants).
// The float sum x[0]^2 + x[1]^2 + ... in element order, as the sigma2 loops add it (a
// SIMD body may run several runs' sums side by side, one per lane, never split one).
inline float sum_x2(const float* x, int n) {
  float s = 0;
  for (int j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}
inline float q2_sigma2_of(float sumx2) { return sumx2 / 256; }
inline float q2_sigma2(const float* x) { return q2_sigma2_of(sum_x2(x, 256)); }

inline void quantize_block_Q2_K(const float* x, BlockQ2_K* y, const float* qw) {
  uint8_t L[256];
  uint8_t Laux[16];
  float weights[16];
  float mins[16];
  float scales[16];
  float sw[16] = {};
  const float sigma2 = qw ? q2_sigma2(x) : 0.0f;
  for (int j = 0; j < 16; ++j) {
    if (!qw) {
      for (int l = 0; l < 16; ++l) weights[l] = abs_f(x[16 * j + l]);
      scales[j] = make_qkx_quants<false>(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
    } else {
      const float* q = qw + 16 * j;
      for (int l = 0; l < 16; ++l) weights[l] = q[l] * sqrt_f(sigma2 + x[16 * j + l] * x[16 * j + l]);
      for (int l = 0; l < 16; ++l) sw[j] += weights[l];
      scales[j] = make_qkx_quants<true>(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
    }
  }
  q2_finish(x, y, scales, mins, qw ? sw : nullptr, L);
}

// The sigma2 of a super-block's importance weights (quantize_row_q3_K_impl, q4_K's, q5_K's).
inline float k_sigma2_of(float sum_x2) { return 2 * sum_x2 / 256; }
inline float k_sigma2(const float* x) { return k_sigma2_of(sum_x2(x, 256)); }

// Q3_K's sub-block search weights with an importance matrix (x^2 is make_q3_quants' own).
inline void q3_weights(const float* xb, const float* qw, float sigma2, float* weight, float* sw) {
  for (int l = 0; l < 16; ++l) weight[l] = qw[l] * sqrt_f(sigma2 + xb[l] * xb[l]);
  float sumw = 0;
  for (int l = 0; l < 16; ++l) sumw += weight[l];
  *sw = sumw;
}
// Q3_K after its 16 sub-block searches (make_q3_quants, or make_qx_quants with importance
// weights and their sums sw): 6-bit scales, d, requantized codes, high bits, packing.
inline void q3_finish(const float* x, BlockQ3_K* y, const float* scales, const float* sw, int8_t* L) {
  std::memset(y->scales, 0, 12);
  if (!sw) {
    float max_scale = 0;
    float amax = 0;
    for (int j = 0; j < 16; ++j) {
      const float scale = abs_f(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        int8_t l = int8_t(nearest_int(iscale * scales[j]));
        l = int8_t(max_i(-32, min_i(31, l)) + 32);
        put_scale_q3(j, l, y->scales);
      }
      y->d = f32_to_f16(1 / iscale);
    } else {
      y->d = f32_to_f16(0.f);
    }
  } else {
    int8_t Ls[16];
    const float d_block = make_qx_quants(16, 32, scales, Ls, 1, sw);
    for (int j = 0; j < 16; ++j) put_scale_q3(j, Ls[j], y->scales);
    y->d = f32_to_f16(d_block);
  }
  for (int j = 0; j < 16; ++j) {
    const float d = half(y->d) * get_scale_q3(j, y->scales);
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int(x[16 * j + ii] / d);
      l = max_i(-4, min_i(3, l));
      L[16 * j + ii] = int8_t(l + 4);
    }
  }
  // The high bit of the first 32 codes goes to bit 0 of hmask[0..31], the next 32 to bit 1, ...
  std::memset(y->hmask, 0, 32);
  uint8_t low[256];
  int m = 0;
  uint8_t hm = 1;
  for (int j = 0; j < 256; ++j) {
    if (L[j] > 3) {
      y->hmask[m] |= hm;
      L[j] = int8_t(L[j] - 4);
    }
    low[j] = uint8_t(L[j]);
    if (++m == 32) {
      m = 0;
      hm = uint8_t(hm << 1);
    }
  }
  pack_2bit(low, y->qs);
}

inline void quantize_block_Q3_K(const float* x, BlockQ3_K* y, const float* qw) {
  int8_t L[256];
  float scales[16];
  float weight[16], sw[16];
  const float sigma2 = qw ? k_sigma2(x) : 0.0f;
  for (int j = 0; j < 16; ++j) {
    if (!qw) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
    } else {
      q3_weights(x + 16 * j, qw + 16 * j, sigma2, weight, &sw[j]);
      scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
    }
  }
  q3_finish(x, y, scales, qw ? sw : nullptr, L);
}

// Q4_K (kNmax 15) and Q5_K (kNmax 31): 8 sub-blocks of 32 with 6-bit scales and mins.
// The sub-block searches (kx_search, kx_weights) are separate from what follows them
// (k4_finish), so SIMD bodies run their own searches across sub-blocks and finish here.
template <int kNmax>
inline void k4_search(const float* xb, const float* weights, uint8_t* L, float* the_min, float* scale, bool imatrix) {
  uint8_t Laux[32];
  if (imatrix) *scale = make_qkx_quants<true>(32, kNmax, xb, weights, L, the_min, Laux, -0.9f, 0.05f, 36, false);
  else if (kNmax == 15) *scale = make_qkx_quants<false>(32, 15, xb, weights, L, the_min, Laux, -1.f, 0.1f, 20, false);
  else *scale = make_qkx_quants<false>(32, 31, xb, weights, L, the_min, Laux, -0.5f, 0.1f, 15, false);
}
// A 32-weight sub-block's search weights and, for the imatrix path, their sum.
inline void k4_weights(const float* xb, const float* qw, float sigma2, float* weights, float* sw) {
  if (qw) {
    for (int l = 0; l < 32; ++l) weights[l] = qw[l] * sqrt_f(sigma2 + xb[l] * xb[l]);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    *sw = sumw;
  } else {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xb[l] * xb[l];
    const float av_x = sqrt_f(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + abs_f(xb[l]);
  }
}
// From the 8 sub-block scales and mins (and, with an imatrix, their weight sums sw):
// the 6-bit scales, d, dmin, and the codes requantized with them.
// k4_finish without the requantization (SIMD bodies requantize on their own).
template <int kNmax>
inline void k4_finish_scales(const float* scales, const float* mins, const float* sw, uint8_t* scales12, uint16_t* d16,
                             uint16_t* dmin16) {
  if (!sw) {
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < 8; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      uint8_t ls = uint8_t(nearest_int(inv_scale * scales[j]));
      uint8_t lm = uint8_t(nearest_int(inv_min * mins[j]));
      ls = ls < 63 ? ls : 63;
      lm = lm < 63 ? lm : 63;
      put_scale_min_k4(j, ls, lm, scales12);
    }
    *d16 = f32_to_f16(max_scale / 63.f);
    *dmin16 = f32_to_f16(max_min / 63.f);
  } else {
    uint8_t Ls[8], Lm[8];
    const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
    for (int j = 0; j < 8; ++j) {
      uint8_t ls = Ls[j], lm = Lm[j];
      if (kNmax == 31) {  // quantize_row_q5_K_impl clamps, q4_K's does not
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
      }
      put_scale_min_k4(j, ls, lm, scales12);
    }
    *d16 = f32_to_f16(d_block);
    *dmin16 = f32_to_f16(m_block);
  }
}
template <int kNmax>
inline void k4_finish(const float* x, const float* scales, const float* mins, const float* sw, uint8_t* L,
                      uint8_t* scales12, uint16_t* d16, uint16_t* dmin16) {
  k4_finish_scales<kNmax>(scales, mins, sw, scales12, d16, dmin16);
  requantize_k4(x, scales12, *d16, *dmin16, kNmax, L);
}

template <int kNmax>
inline void k4_scales(const float* x, const float* qw, uint8_t* L, uint8_t* scales12, uint16_t* d16, uint16_t* dmin16) {
  float weights[32];
  float mins[8], scales[8], sw[8];
  const float sigma2 = qw ? k_sigma2(x) : 0.0f;
  for (int j = 0; j < 8; ++j) {
    k4_weights(x + 32 * j, qw ? qw + 32 * j : nullptr, sigma2, weights, &sw[j]);
    k4_search<kNmax>(x + 32 * j, weights, L + 32 * j, &mins[j], &scales[j], qw != nullptr);
  }
  k4_finish<kNmax>(x, scales, mins, qw ? sw : nullptr, L, scales12, d16, dmin16);
}

// The 256 codes of a Q4_K / Q5_K super-block into its qs (and qh).
inline void pack_q4_K(const uint8_t* L, BlockQ4_K* y) {
  uint8_t* q = y->qs;
  for (int j = 0; j < 256; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

inline void pack_q5_K(const uint8_t* L, BlockQ5_K* y) {
  uint8_t* qh = y->qh;
  uint8_t* ql = y->qs;
  std::memset(qh, 0, 32);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < 256; n += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      int l2 = L[n + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = uint8_t(l1 | (l2 << 4));
    }
    m1 = uint8_t(m1 << 2);
    m2 = uint8_t(m2 << 2);
    ql += 32;
  }
}

inline void quantize_block_Q4_K(const float* x, BlockQ4_K* y, const float* qw) {
  uint8_t L[256];
  k4_scales<15>(x, qw, L, y->scales, &y->d, &y->dmin);
  pack_q4_K(L, y);
}
inline void quantize_block_Q5_K(const float* x, BlockQ5_K* y, const float* qw) {
  uint8_t L[256];
  k4_scales<31>(x, qw, L, y->scales, &y->d, &y->dmin);
  pack_q5_K(L, y);
}

// Q6_K's super-block scale and 8-bit sub-block scales; false when the block is all zero
// (then y is written whole and there is nothing to requantize).
inline bool q6_finish_scales(BlockQ6_K* y, const float* scales) {
  float max_scale = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float abs_scale = abs_f(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(y, 0, sizeof *y);
    y->d = f32_to_f16(0.f);
    return false;
  }
  const float iscale = -128.f / max_scale;
  y->d = f32_to_f16(1 / iscale);
  for (int ib = 0; ib < 16; ++ib) y->scales[ib] = int8_t(min_i(127, nearest_int(iscale * scales[ib])));
  return true;
}
// The 256 codes (0..63) of a Q6_K super-block into its ql and qh.
inline void pack_q6_K(const int8_t* L, BlockQ6_K* y) {
  uint8_t* ql = y->ql;
  uint8_t* qh = y->qh;
  for (int j = 0; j < 256; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l + 0] & 0xF;
      const uint8_t q2 = L[j + l + 32] & 0xF;
      const uint8_t q3 = L[j + l + 64] & 0xF;
      const uint8_t q4 = L[j + l + 96] & 0xF;
      ql[l + 0] = uint8_t(q1 | (q3 << 4));
      ql[l + 32] = uint8_t(q2 | (q4 << 4));
      qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                      ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}
// Q6_K after its 16 sub-block searches (scales and codes L from make_qx_quants).
inline void q6_finish(const float* x, BlockQ6_K* y, const float* scales, int8_t* L) {
  if (!q6_finish_scales(y, scales)) return;
  for (int j = 0; j < 16; ++j) {
    const float d = half(y->d) * y->scales[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int(x[16 * j + ii] / d);
      l = max_i(-32, min_i(31, l));
      L[16 * j + ii] = int8_t(l + 32);
    }
  }
  pack_q6_K(L, y);
}

inline void quantize_block_Q6_K(const float* x, BlockQ6_K* y, const float* qw) {
  int8_t L[256];
  float scales[16];
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : nullptr);
  }
  q6_finish(x, y, scales, L);
}

// quantize_row_iq4_nl_impl with ntry 7, split in three: the super-block's sigma2 (for
// importance weights), each 32-weight block's scale search, and the finish.
template <int kSuper>
inline float iq4_sigma2_of(float sigma2) {
  sigma2 *= 2.f / kSuper;
  return sigma2;
}
template <int kSuper>
inline float iq4_sigma2(const float* x) {
  return iq4_sigma2_of<kSuper>(sum_x2(x, kSuper));
}
inline void iq4_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  if (qw) {
    for (int j = 0; j < 32; ++j) weight[j] = qw[j] * sqrt_f(sigma2 + xb[j] * xb[j]);
  } else {
    for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
  }
}
// The scale of one 32-weight block (0 for a block of zeros); the codes of the search are
// not kept: the finish requantizes every block.
inline float iq4_search(const float* xb, const float* weight) {
  constexpr int ntry = 7;
  const int8_t* values = kValuesIq4nl;
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j) {
    const float ax = abs_f(xb[j]);
    if (ax > amax) {
      amax = ax;
      max = xb[j];
    }
  }
  if (amax < kGroupMaxEps) return 0;
  float d = -max / values[0];
  float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 32; ++j) {
    const float al = id * xb[j];
    const int l = best_index_int8(16, values, al);
    const float q = values[l];
    const float w = weight[j];
    sumqx += w * q * xb[j];
    sumq2 += w * q * q;
  }
  d = x86_nan(sumqx / sumq2);
  float best = d * sumqx;
  for (int itry = -ntry; itry <= ntry; ++itry) {
    id = (itry + values[0]) / max;
    sumqx = sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float al = id * xb[j];
      const int l = best_index_int8(16, values, al);
      const float q = values[l];
      const float w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}
// From the block scales: the f16 scale (and IQ4_XS's 6-bit block scales), and for each
// 32-weight block the factor idl that its weights are multiplied by before they are
// matched to a level.
template <int kSuper>
inline void iq4_finish_scales(const float* scales, uint16_t* dh, uint16_t* scales_h, uint8_t* scales_l, float* idls) {
  constexpr int kBlocks = kSuper / 32;
  if constexpr (kBlocks > 1) {
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < kBlocks; ++ib) {
      const float abs_d = abs_f(scales[ib]);
      if (abs_d > amax_scale) {
        amax_scale = abs_d;
        max_scale = scales[ib];
      }
    }
    scales_h[0] = 0;
    const float d = -max_scale / 32;
    dh[0] = f32_to_f16(d);
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < kBlocks; ++ib) {
      int l = nearest_int(id * scales[ib]);
      l = max_i(-32, min_i(31, l));
      const float dl = d * l;
      idls[ib] = dl ? 1 / dl : 0.f;
      l += 32;
      const uint8_t l_l = uint8_t(l & 0xf);
      const uint8_t l_h = uint8_t(l >> 4);
      if (ib % 2 == 0) scales_l[ib / 2] = l_l;
      else scales_l[ib / 2] |= uint8_t(l_l << 4);
      scales_h[ib / 8] |= uint16_t(l_h << 2 * (ib % 8));
    }
  } else {
    dh[0] = f32_to_f16(scales[0]);
    idls[0] = scales[0] ? 1 / scales[0] : 0;
  }
}
// The codes (level indices 0..15) of kSuper weights into q4, two a byte.
template <int kSuper>
inline void pack_iq4(const uint8_t* L, uint8_t* q4) {
  for (int i = 0; i < kSuper / 32; ++i) {
    for (int j = 0; j < 16; ++j) q4[16 * i + j] = uint8_t(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
  }
}
template <int kSuper>
inline void iq4_finish(const float* x, const float* scales, uint16_t* dh, uint8_t* q4, uint16_t* scales_h,
                       uint8_t* scales_l) {
  float idls[kSuper / 32];
  uint8_t L[kSuper];
  iq4_finish_scales<kSuper>(scales, dh, scales_h, scales_l, idls);
  for (int j = 0; j < kSuper; ++j) L[j] = uint8_t(best_index_int8(16, kValuesIq4nl, idls[j / 32] * x[j]));
  pack_iq4<kSuper>(L, q4);
}

template <int kSuper>
inline void quantize_iq4(const float* x, const float* qw, uint16_t* dh, uint8_t* q4, uint16_t* scales_h,
                         uint8_t* scales_l) {
  constexpr int kBlocks = kSuper / 32;
  float weight[32];
  float scales[kBlocks];
  const float sigma2 = iq4_sigma2<kSuper>(x);
  for (int ib = 0; ib < kBlocks; ++ib) {
    iq4_weights(x + ib * 32, qw ? qw + ib * 32 : nullptr, sigma2, weight);
    scales[ib] = iq4_search(x + ib * 32, weight);
  }
  iq4_finish<kSuper>(x, scales, dh, q4, scales_h, scales_l);
}

inline void quantize_block_IQ4_NL(const float* x, BlockIQ4_NL* y, const float* qw) {
  quantize_iq4<32>(x, qw, &y->d, y->qs, nullptr, nullptr);
}
inline void quantize_block_IQ4_XS(const float* x, BlockIQ4_XS* y, const float* qw) {
  uint16_t scales_h;
  quantize_iq4<256>(x, qw, &y->d, y->qs, &scales_h, y->scales_l);
  y->scales_h = scales_h;
}

WQ_END_ISA_NAMESPACE
}  // namespace wq::ref
