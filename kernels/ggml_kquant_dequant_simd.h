// SIMD bodies of the K-quant and IQ4 dequantizers: the reference's per-element formula
// (kernels/ggml_kquant_dequant_reference.h) lane by lane, the same float operations in the
// same order, with the per-sub-block factors computed by the same scalar expressions first.
// Every sub-block is 16 or 32 weights, which every ISA's lane count (4, 8, 16) divides.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_blocks.h"
#include "kernels/ggml_kquant_reference.h"
#include "kernels/ggml_quant_search.h"
#include "kernels/simd_arch.h"

namespace wq::simd {
WQ_BEGIN_ISA_NAMESPACE

template <class A>
struct KquantDequant {
  using Ops = ArchOps<A>;
  using F = xsimd::batch<float, A>;
  using I = xsimd::batch<int32_t, A>;
  static constexpr size_t L = F::size;

  // Q4_K (kHigh false) and Q5_K: y = d1 * code - m1 over the low nibbles of each 32 bytes
  // and d2 * code - m2 over the high ones; Q5_K's bit 2j (low) or 2j + 1 (high) of qh adds 16.
  template <class Block, bool kHigh>
  static void k45(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const Block*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      const Block& blk = in[b];
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
          I lo = v & I(0xF), hi = v >> 4;
          if constexpr (kHigh) {
            const I h = Ops::load_u8(blk.qh + l);
            lo = lo + (((h >> (2 * j)) & I(1)) << 4);
            hi = hi + (((h >> (2 * j + 1)) & I(1)) << 4);
          }
          (d1 * Ops::to_float(lo) - m1).store_unaligned(out + l);
          (d2 * Ops::to_float(hi) - m2).store_unaligned(out + 32 + l);
        }
        q += 32;
        out += 64;
      }
    }
  }
  static void q4_K(const void* y, float* x, size_t n) { k45<BlockQ4_K, false>(y, x, n); }
  static void q5_K(const void* y, float* x, size_t n) { k45<BlockQ5_K, true>(y, x, n); }

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

  // Q3_K: dl * (((q >> shift) & 3) - 4 where the hmask bit is clear) over each 16 weights;
  // the code is an integer, as in the reference, so only the product rounds. The hmask bit
  // of a weight is 4 * half + shift / 2 (the reference's m runs on across both halves).
  static void q3_K(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const BlockQ3_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      const BlockQ3_K& blk = in[b];
      const float d_all = ref::half(blk.d);
      const uint8_t* q = blk.qs;
      float* out = x + 256 * b;
      int is = 0;
      for (int half = 0; half < 2; ++half) {
        for (int shift = 0; shift < 8; shift += 2) {
          const int bit = 4 * half + shift / 2;
          for (int part = 0; part < 2; ++part) {
            const F dl(d_all * ref::get_scale_q3(is++, blk.scales));
            for (size_t l = 0; l < 16; l += L) {
              const I c = (Ops::load_u8(q + 16 * part + l) >> shift) & I(3);
              const I clear = ((Ops::load_u8(blk.hmask + 16 * part + l) >> bit) & I(1)) ^ I(1);
              (dl * Ops::to_float(c - (clear << 2))).store_unaligned(out + l);
            }
            out += 16;
          }
        }
        q += 32;
      }
    }
  }

  // 32 IQ4 weights: dl * kValuesIq4nl[nibble], the 16 low nibbles of qs, then the high ones.
  static void iq4_32(const uint8_t* qs, float dl, float* out) {
    const F vd(dl);
    for (size_t l = 0; l < 16; l += L) {
      const I v = Ops::load_u8(qs + l);
      (vd * Ops::to_float(Ops::lookup16(ref::kValuesIq4nl, v & I(0xF)))).store_unaligned(out + l);
      (vd * Ops::to_float(Ops::lookup16(ref::kValuesIq4nl, v >> 4))).store_unaligned(out + 16 + l);
    }
  }
  static void iq4_nl(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const BlockIQ4_NL*>(y);
    for (size_t b = 0; b < n / 32; ++b) iq4_32(in[b].qs, ref::half(in[b].d), x + 32 * b);
  }
  // IQ4_XS: each 32 weights with d * (its 6-bit scale - 32), the scale's low 4 bits in
  // scales_l, its high 2 in scales_h.
  static void iq4_xs(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const BlockIQ4_XS*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      const BlockIQ4_XS& blk = in[b];
      const float d = ref::half(blk.d);
      for (int ib = 0; ib < 8; ++ib) {
        const int ls = ((blk.scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((blk.scales_h >> 2 * ib) & 3) << 4);
        iq4_32(blk.qs + 16 * ib, d * (ls - 32), x + 256 * b + 32 * ib);
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
