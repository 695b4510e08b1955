// SIMD bodies of the Q2_K, Q4_K, Q5_K and Q6_K dequantizers: the reference's per-element formula
// (kernels/ggml_kquant_reference.h) lane by lane, with the per-sub-block factors computed
// by the same scalar expressions first.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_blocks.h"
#include "kernels/ggml_kquant_reference.h"
#include "kernels/simd_arch.h"

namespace wq::simd {
WQ_BEGIN_ISA_NAMESPACE

template <class A>
struct KquantDequant {
  using Ops = ArchOps<A>;
  using F = xsimd::batch<float, A>;
  using I = xsimd::batch<int32_t, A>;
  static constexpr size_t L = F::size;

  // y = d1 * (q & 0xF) - m1 and d2 * (q >> 4) - m2 over each 64 weights.
  static void q4_K(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const BlockQ4_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      const BlockQ4_K& blk = in[b];
      const float d = ref::x86_nan(ref::half(blk.d));
      const float min = ref::x86_nan(ref::half(blk.dmin));
      const uint8_t* q = blk.qs;
      float* out = x + 256 * b;
      for (int j = 0; j < 4; ++j) {
        uint8_t sc, m;
        ref::get_scale_min_k4(2 * j, blk.scales, &sc, &m);
        const F d1(d * sc), m1(min * m);
        ref::get_scale_min_k4(2 * j + 1, blk.scales, &sc, &m);
        const F d2(d * sc), m2(min * m);
        for (size_t l = 0; l < 32; l += L) {
          const I v = Ops::load_u8(q + l);
          (d1 * Ops::to_float(v & I(0xF)) - m1).store_unaligned(out + l);
          (d2 * Ops::to_float(v >> 4) - m2).store_unaligned(out + 32 + l);
        }
        q += 32;
        out += 64;
      }
    }
  }

  // Q5_K: as Q4_K with bit 2j (low half) or 2j + 1 (high half) of qh adding 16.
  static void q5_K(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const BlockQ5_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      const BlockQ5_K& blk = in[b];
      const float d = ref::x86_nan(ref::half(blk.d));
      const float min = ref::x86_nan(ref::half(blk.dmin));
      const uint8_t* ql = blk.qs;
      float* out = x + 256 * b;
      for (int j = 0; j < 4; ++j) {
        uint8_t sc, m;
        ref::get_scale_min_k4(2 * j, blk.scales, &sc, &m);
        const F d1(d * sc), m1(min * m);
        ref::get_scale_min_k4(2 * j + 1, blk.scales, &sc, &m);
        const F d2(d * sc), m2(min * m);
        for (size_t l = 0; l < 32; l += L) {
          const I v = Ops::load_u8(ql + l), h = Ops::load_u8(blk.qh + l);
          const I lo = (v & I(0xF)) + (((h >> (2 * j)) & I(1)) << 4);
          const I hi = (v >> 4) + (((h >> (2 * j + 1)) & I(1)) << 4);
          (d1 * Ops::to_float(lo) - m1).store_unaligned(out + l);
          (d2 * Ops::to_float(hi) - m2).store_unaligned(out + 32 + l);
        }
        ql += 32;
        out += 64;
      }
    }
  }

  // Q2_K: dl * ((q >> shift) & 3) - ml over each 16 weights.
  static void q2_K(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const BlockQ2_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      const BlockQ2_K& blk = in[b];
      const float d = ref::x86_nan(ref::half(blk.d));
      const float min = ref::x86_nan(ref::half(blk.dmin));
      const uint8_t* q = blk.qs;
      float* out = x + 256 * b;
      int is = 0;
      for (int half = 0; half < 2; ++half) {
        for (int shift = 0; shift < 8; shift += 2) {
          for (int part = 0; part < 2; ++part) {
            const uint8_t sc = blk.scales[is++];
            const F dl(d * (sc & 0xF)), ml(min * (sc >> 4));
            for (size_t l = 0; l < 16; l += L) {
              const I c = (Ops::load_u8(q + 16 * part + l) >> shift) & I(3);
              (dl * Ops::to_float(c) - ml).store_unaligned(out + l);
            }
            out += 16;
          }
        }
        q += 32;
      }
    }
  }

  // y = (d * scale) * q, q the 6-bit code - 32, over each 128 weights.
  static void q6_K(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const BlockQ6_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      const BlockQ6_K& blk = in[b];
      const float d = ref::half(blk.d);
      const uint8_t* ql = blk.ql;
      const uint8_t* qh = blk.qh;
      const int8_t* sc = blk.scales;
      float* out = x + 256 * b;
      for (int h = 0; h < 2; ++h) {
        for (size_t l = 0; l < 32; l += L) {
          const int is = int(l / 16);  // L divides 16: a vector never straddles two scales
          const I lo = Ops::load_u8(ql + l), hi = Ops::load_u8(ql + 32 + l), hb = Ops::load_u8(qh + l);
          const I q1 = ((lo & I(0xF)) | ((hb & I(3)) << 4)) - I(32);
          const I q2 = ((hi & I(0xF)) | (((hb >> 2) & I(3)) << 4)) - I(32);
          const I q3 = ((lo >> 4) | (((hb >> 4) & I(3)) << 4)) - I(32);
          const I q4 = ((hi >> 4) | (((hb >> 6) & I(3)) << 4)) - I(32);
          (F(d * sc[is + 0]) * Ops::to_float(q1)).store_unaligned(out + l);
          (F(d * sc[is + 2]) * Ops::to_float(q2)).store_unaligned(out + 32 + l);
          (F(d * sc[is + 4]) * Ops::to_float(q3)).store_unaligned(out + 64 + l);
          (F(d * sc[is + 6]) * Ops::to_float(q4)).store_unaligned(out + 96 + l);
        }
        out += 128;
        ql += 64;
        qh += 32;
        sc += 8;
      }
    }
  }
};

WQ_END_ISA_NAMESPACE
}  // namespace wq::simd
