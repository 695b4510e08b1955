// SIMD bodies of the K-quant scale searches, one sub-block per lane. llama.cpp's searches
// (kernels/ggml_quant_search.h) are sequential in the elements of a sub-block (their sums
// are float sums in element order, and the best trial so far decides the next one), so
// they cannot be split along the elements without changing the bits. Sub-blocks are
// independent, though: here lane k runs sub-block k's search with exactly the scalar
// operations, in the same order, so every lane ends with the scalar bits. What follows
// the searches (super-block scales, requantization, packing) is the reference's own code
// (q2_finish, q3_finish, k4_finish, q6_finish, iq4_finish), run on the searched scales
// and codes.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>
#include <cstdint>

#include "kernels/ggml_blocks.h"
#include "kernels/ggml_kquant_reference.h"
#include "kernels/ggml_reference.h"
#include "kernels/scratch_buffer.h"
#include "kernels/simd_arch.h"

namespace wq::simd {
WQ_BEGIN_ISA_NAMESPACE

template <class A>
struct KquantSearch {
  using Ops = ArchOps<A>;
  using F = xsimd::batch<float, A>;
  using I = xsimd::batch<int32_t, A>;
  using M = xsimd::batch_bool<float, A>;
  static constexpr size_t L = F::size;

  // ref::nearest_int lane by lane, as a float (the codes are small integers).
  static I nearest(F v) {
    const I i = xsimd::bitwise_cast<I>(v + F(12582912.f));
    return (i & I(0x007fffff)) - I(0x00400000);
  }
  // IEEE division (xsimd 8.1's float division on NEON is an estimate plus Newton steps).
  static F div(F a, F b) { return Ops::div(a, b); }
  // -v as C's unary minus: the sign bit flipped (xsimd's AVX-512 negation is 0 - v, +0 for +0).
  static F neg(F v) { return xsimd::bitwise_cast<F>(xsimd::bitwise_cast<I>(v) ^ I(int32_t(0x80000000u))); }
  static F code(F v, int lo, int hi) { return Ops::to_float(xsimd::max(I(lo), xsimd::min(I(hi), nearest(v)))); }

  // n elements of each of up to L sub-blocks (count of them, from x + s * n for sub-block s)
  // as n vectors: out[i] lane k = element i of sub-block k; missing lanes are 0.
  static void gather(const float* x, size_t count, size_t n, F* out) {
    alignas(64) float t[32 * 16];
    for (size_t i = 0; i < n; ++i) {
      for (size_t k = 0; k < L; ++k) t[i * L + k] = k < count ? x[k * n + i] : 0.0f;
    }
    for (size_t i = 0; i < n; ++i) out[i] = F::load_aligned(t + i * L);
  }
  static void scatter_codes(const F* c, size_t count, size_t n, uint8_t* L8) {
    alignas(64) float t[16];
    for (size_t i = 0; i < n; ++i) {
      c[i].store_aligned(t);
      for (size_t k = 0; k < count; ++k) L8[k * n + i] = uint8_t(int(t[k]));
    }
  }
  static void scatter(F v, size_t count, float* out) {
    alignas(64) float t[16];
    v.store_aligned(t);
    for (size_t k = 0; k < count; ++k) out[k] = t[k];
  }

  // ref::make_qx_quants(n, nmax, x, L, 1, w) per lane; codes (biased by nmax) in c.
  template <size_t n>
  static F qx(int nmax, const F* x, const F* w, F* c) {
    F amax(0.0f), max(0.0f);
    for (size_t i = 0; i < n; ++i) {
      const F ax = xsimd::abs(x[i]);
      const M m = ax > amax;
      amax = xsimd::select(m, ax, amax);
      max = xsimd::select(m, x[i], max);
    }
    const M zero = amax < F(ref::kGroupMaxEps);
    F iscale = div(F(float(-nmax)), max);
    auto sums = [&](F is, F& sumlx, F& suml2) {
      sumlx = F(0.0f);
      suml2 = F(0.0f);
      for (size_t i = 0; i < n; ++i) {
        const F l = code(is * x[i], -nmax, nmax - 1);
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
      }
    };
    F sumlx, suml2;
    sums(iscale, sumlx, suml2);
    // C's `suml2 ? ... : 0`: a NaN suml2 counts as true (an ordered != would not).
    F scale = xsimd::select(suml2 == F(0.0f), F(0.0f), div(sumlx, suml2));
    F best = scale * sumlx;
    F best_iscale = iscale;
    for (int is = -9; is <= 9; ++is) {
      if (is == 0) continue;
      iscale = div(F(-(float(nmax) + 0.1f * float(is))), max);
      sums(iscale, sumlx, suml2);
      const M take = (suml2 > F(0.0f)) & (sumlx * sumlx > best * suml2);
      const F s = div(sumlx, suml2);
      best_iscale = xsimd::select(take, iscale, best_iscale);
      scale = xsimd::select(take, s, scale);
      best = xsimd::select(take, s * sumlx, best);
    }
    for (size_t i = 0; i < n; ++i) {
      c[i] = xsimd::select(zero, F(0.0f), code(best_iscale * x[i], -nmax, nmax - 1) + F(float(nmax)));
    }
    return xsimd::select(zero, F(0.0f), scale);
  }

  // ref::make_qkx_quants<kx3>(n, nmax, x, w, L, the_min, Laux, rmin, rdelta, nstep, use_mad)
  // per lane (weights given); codes in c, -min in *the_min.
  template <bool kx3, size_t n>
  static F qkx(int nmax, const F* x, const F* w, F* c, F* the_min, float rmin, float rdelta, int nstep, bool use_mad) {
    F min = x[0], max = x[0];
    F sum_w = w[0];
    F sum_x = sum_w * x[0];
    for (size_t i = 1; i < n; ++i) {
      min = xsimd::select(x[i] < min, x[i], min);
      max = xsimd::select(x[i] > max, x[i], max);
      sum_w += w[i];
      sum_x += w[i] * x[i];
    }
    min = xsimd::select(min > F(0.0f), F(0.0f), min);
    const M flat = kx3 ? (max <= min) : (max == min);
    F iscale = div(F(float(nmax)), max - min);
    F scale = div(F(1.0f), iscale);
    auto err = [&](F d) { return use_mad ? xsimd::abs(d) : d * d; };
    F best_mad(0.0f);
    for (size_t i = 0; i < n; ++i) {
      c[i] = code(iscale * (x[i] - min), 0, nmax);
      best_mad += w[i] * err(scale * c[i] + min - x[i]);
    }
    F aux[32];
    for (int is = 0; is <= nstep; ++is) {
      iscale = div(F(rmin + rdelta * float(is) + float(nmax)), max - min);
      F sum_l(0.0f), sum_l2(0.0f), sum_xl(0.0f);
      for (size_t i = 0; i < n; ++i) {
        aux[i] = code(iscale * (x[i] - min), 0, nmax);
        sum_l += w[i] * aux[i];
        sum_l2 += w[i] * aux[i] * aux[i];
        sum_xl += w[i] * aux[i] * x[i];
      }
      const F D = sum_w * sum_l2 - sum_l * sum_l;
      F this_scale = div(sum_w * sum_xl - sum_x * sum_l, D);
      F this_min = div(sum_l2 * sum_x - sum_l * sum_xl, D);
      const M pos = this_min > F(0.0f);
      this_min = xsimd::select(pos, F(0.0f), this_min);
      this_scale = xsimd::select(pos, div(sum_xl, sum_l2), this_scale);
      F mad(0.0f);
      for (size_t i = 0; i < n; ++i) mad += w[i] * err(this_scale * aux[i] + this_min - x[i]);
      const M take = (D > F(0.0f)) & (mad < best_mad);
      for (size_t i = 0; i < n; ++i) c[i] = xsimd::select(take, aux[i], c[i]);
      best_mad = xsimd::select(take, mad, best_mad);
      scale = xsimd::select(take, this_scale, scale);
      min = xsimd::select(take, this_min, min);
    }
    for (size_t i = 0; i < n; ++i) c[i] = xsimd::select(flat, F(0.0f), c[i]);
    *the_min = neg(min);
    return xsimd::select(flat, F(0.0f), scale);
  }

  // ref::make_q3_quants(16, nmax, x, L) per lane. A lane whose pass changed nothing would
  // change nothing in the next one either (same state, same steps), so running the five
  // passes until no lane changes is the scalar early exit lane by lane.
  static F q3(int nmax, const F* x, F* c) {
    F amax(0.0f), max(0.0f);
    for (size_t i = 0; i < 16; ++i) {
      const F ax = xsimd::abs(x[i]);
      const M m = ax > amax;
      amax = xsimd::select(m, ax, amax);
      max = xsimd::select(m, x[i], max);
    }
    const M zero = amax < F(ref::kGroupMaxEps);
    const F iscale = div(F(float(-nmax)), max);
    F sumlx(0.0f), suml2(0.0f);
    for (size_t i = 0; i < 16; ++i) {
      c[i] = code(iscale * x[i], -nmax, nmax - 1);
      const F w = x[i] * x[i];
      sumlx += w * x[i] * c[i];
      suml2 += w * c[i] * c[i];
    }
    for (int itry = 0; itry < 5; ++itry) {
      M changed(false);
      for (size_t i = 0; i < 16; ++i) {
        const F w = x[i] * x[i];
        F slx = sumlx - w * x[i] * c[i];
        F sl2 = suml2 - w * c[i] * c[i];
        const F new_l = code(div(x[i] * sl2, slx), -nmax, nmax - 1);
        slx += w * x[i] * new_l;
        sl2 += w * new_l * new_l;
        const M take = (sumlx - w * x[i] * c[i] > F(0.0f)) & (new_l != c[i]) & (sl2 > F(0.0f)) &
                       (slx * slx * suml2 > sumlx * sumlx * sl2);
        c[i] = xsimd::select(take, new_l, c[i]);
        sumlx = xsimd::select(take, slx, sumlx);
        suml2 = xsimd::select(take, sl2, suml2);
        changed = changed | take;
      }
      if (!xsimd::any(changed)) break;
    }
    for (size_t i = 0; i < 16; ++i) c[i] = xsimd::select(zero, F(0.0f), c[i] + F(float(nmax)));
    return xsimd::select(zero, F(0.0f), div(sumlx, suml2));
  }

  // Q3_K: the 16 sub-block searches of every super-block, L at a time.
  static void quantize_q3(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 16;
    ScratchBuffer<float> scales(nsub), sw(nsub), sigma2(n / 256);
    ScratchBuffer<uint8_t> codes(n);
    for (size_t b = 0; imatrix && b < n / 256; ++b) sigma2[b] = ref::k_sigma2(x + 256 * b);
    for (size_t s0 = 0; s0 < nsub; s0 += L) {
      const size_t count = nsub - s0 < L ? nsub - s0 : L;
      F xs[16], c[16], scale;
      gather(x + 16 * s0, count, 16, xs);
      if (imatrix) {
        alignas(64) float sg[16];
        for (size_t k = 0; k < L; ++k) sg[k] = k < count ? sigma2[(s0 + k) / 16] : 0.0f;
        const F s2 = F::load_aligned(sg);
        F ws[16];
        gather(imatrix + 16 * s0, count, 16, ws);
        F sumw(0.0f);
        for (size_t i = 0; i < 16; ++i) {
          ws[i] = ws[i] * Ops::sqrt(s2 + xs[i] * xs[i]);
          sumw += ws[i];
        }
        scatter(sumw, count, sw.data() + s0);
        scale = qx<16>(4, xs, ws, c);
      } else {
        scale = q3(4, xs, c);
      }
      scatter(scale, count, scales.data() + s0);
      scatter_codes(c, count, 16, codes.data() + 16 * s0);
    }
    auto* out = static_cast<BlockQ3_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      ref::q3_finish(x + 256 * b, &out[b], scales.data() + 16 * b, imatrix ? sw.data() + 16 * b : nullptr,
                     reinterpret_cast<int8_t*>(codes.data() + 256 * b));
    }
  }

  // ref::best_index_int8 over kValuesIq4nl, lane by lane: the level itself (as a float).
  // Between the end levels the binary search ends at the first level above x; a NaN
  // fails every compare there and ends at the top.
  static F iq4_level(F x) {
    const int8_t* v = ref::kValuesIq4nl;
    F lo = F(float(v[0])), hi = F(float(v[15]));
    for (int k = 1; k < 15; ++k) lo = xsimd::select(F(float(v[k])) <= x, F(float(v[k])), lo);
    for (int k = 14; k >= 1; --k) hi = xsimd::select(F(float(v[k])) > x, F(float(v[k])), hi);
    F q = xsimd::select(x - lo < hi - x, lo, hi);
    q = xsimd::select(x <= F(float(v[0])), F(float(v[0])), q);
    q = xsimd::select((x >= F(float(v[15]))) | xsimd::isnan(x), F(float(v[15])), q);
    return q;
  }
  // ref::iq4_search per lane.
  static F iq4_search(const F* x, const F* w) {
    const float v0 = float(ref::kValuesIq4nl[0]);
    F amax(0.0f), max(0.0f);
    for (size_t j = 0; j < 32; ++j) {
      const F ax = xsimd::abs(x[j]);
      const M m = ax > amax;
      amax = xsimd::select(m, ax, amax);
      max = xsimd::select(m, x[j], max);
    }
    const M zero = amax < F(ref::kGroupMaxEps);
    auto sums = [&](F id, F& sumqx, F& sumq2) {
      sumqx = F(0.0f);
      sumq2 = F(0.0f);
      for (size_t j = 0; j < 32; ++j) {
        const F q = iq4_level(id * x[j]);
        sumqx += w[j] * q * x[j];
        sumq2 += w[j] * q * q;
      }
    };
    F d = div(neg(max), F(v0));
    F sumqx, sumq2;
    sums(div(F(1.0f), d), sumqx, sumq2);
    d = div(sumqx, sumq2);
    d = xsimd::select(d == d, d, xsimd::bitwise_cast<F>(I(int32_t(0xffc00000u))));  // ref::x86_nan
    F best = d * sumqx;
    for (int itry = -7; itry <= 7; ++itry) {
      sums(div(F(float(itry + ref::kValuesIq4nl[0])), max), sumqx, sumq2);
      const M take = (sumq2 > F(0.0f)) & (sumqx * sumqx > best * sumq2);
      const F nd = div(sumqx, sumq2);
      d = xsimd::select(take, nd, d);
      best = xsimd::select(take, nd * sumqx, best);
    }
    return xsimd::select(zero, F(0.0f), d);
  }
  // IQ4_NL (kSuper 32) and IQ4_XS (256): the 32-weight block searches L at a time.
  template <int kSuper, class Block>
  static void quantize_iq4(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 32;
    ScratchBuffer<float> scales(nsub), sigma2(n / kSuper);
    for (size_t b = 0; imatrix && b < n / kSuper; ++b) sigma2[b] = ref::iq4_sigma2<kSuper>(x + kSuper * b);
    for (size_t s0 = 0; s0 < nsub; s0 += L) {
      const size_t count = nsub - s0 < L ? nsub - s0 : L;
      F xs[32], ws[32];
      gather(x + 32 * s0, count, 32, xs);
      if (imatrix) {
        alignas(64) float sg[16];
        for (size_t k = 0; k < L; ++k) sg[k] = k < count ? sigma2[(s0 + k) / (kSuper / 32)] : 0.0f;
        const F s2 = F::load_aligned(sg);
        gather(imatrix + 32 * s0, count, 32, ws);
        for (size_t i = 0; i < 32; ++i) ws[i] = ws[i] * Ops::sqrt(s2 + xs[i] * xs[i]);
      } else {
        for (size_t i = 0; i < 32; ++i) ws[i] = xs[i] * xs[i];
      }
      scatter(iq4_search(xs, ws), count, scales.data() + s0);
    }
    auto* out = static_cast<Block*>(y);
    for (size_t b = 0; b < n / kSuper; ++b) {
      if constexpr (kSuper == 32) {
        ref::iq4_finish<32>(x + 32 * b, scales.data() + b, &out[b].d, out[b].qs, nullptr, nullptr);
      } else {
        uint16_t scales_h;
        ref::iq4_finish<256>(x + 256 * b, scales.data() + 8 * b, &out[b].d, out[b].qs, &scales_h, out[b].scales_l);
        out[b].scales_h = scales_h;
      }
    }
  }

  // The importance-matrix path of Q4_0, Q5_0 (make_qx_quants) and Q4_1, Q5_1
  // (make_qkx3_quants): the 32-weight block searches L at a time, with the row's sigma2.
  template <class Block, int kNmax, bool kMin>
  static void quantize_legacy_imatrix(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nb = n / 32;
    const F s2(ref::legacy_sigma2(x, n));
    auto* out = static_cast<Block*>(y);
    for (size_t s0 = 0; s0 < nb; s0 += L) {
      const size_t count = nb - s0 < L ? nb - s0 : L;
      F xs[32], ws[32], c[32], the_min(0.0f), scale;
      gather(x + 32 * s0, count, 32, xs);
      gather(imatrix + 32 * s0, count, 32, ws);
      for (size_t i = 0; i < 32; ++i) ws[i] = ws[i] * Ops::sqrt(s2 + xs[i] * xs[i]);
      if constexpr (kMin) scale = qkx<true, 32>(kNmax, xs, ws, c, &the_min, -0.9f, 0.05f, 36, false);
      else scale = qx<32>(kNmax, xs, ws, c);
      alignas(64) float sc[16], mn[16];
      scale.store_aligned(sc);
      neg(the_min).store_aligned(mn);
      uint8_t codes[16 * 32];
      scatter_codes(c, count, 32, codes);
      for (size_t k = 0; k < count; ++k) {
        Block& b = out[s0 + k];
        const uint8_t* q = codes + 32 * k;
        b.d = ref::f32_to_f16(sc[k]);
        if constexpr (kMin) b.m = ref::f32_to_f16(mn[k]);
        if constexpr (kNmax == 8 || kNmax == 15) {
          for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(q[j] | (q[j + 16] << 4));
        } else {
          ref::pack_q5_high(q, b.qs, b.qh);
        }
      }
    }
  }

  // Q4_K / Q5_K: the 8 sub-block searches of every super-block of the row, L at a time,
  // then each super-block finished by the reference.
  template <int kNmax, class Block>
  static void quantize_k4(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 32;
    ScratchBuffer<float> scales(nsub), mins(nsub), sw(nsub), sigma2(n / 256);
    ScratchBuffer<uint8_t> codes(n);
    for (size_t b = 0; imatrix && b < n / 256; ++b) sigma2[b] = ref::k_sigma2(x + 256 * b);
    for (size_t s0 = 0; s0 < nsub; s0 += L) {
      const size_t count = nsub - s0 < L ? nsub - s0 : L;
      F xs[32], ws[32], c[32], the_min;
      gather(x + 32 * s0, count, 32, xs);
      if (imatrix) {
        alignas(64) float sg[16];
        for (size_t k = 0; k < L; ++k) sg[k] = k < count ? sigma2[(s0 + k) / 8] : 0.0f;
        const F s2 = F::load_aligned(sg);
        F q[32];
        gather(imatrix + 32 * s0, count, 32, q);
        F sumw(0.0f);
        for (size_t i = 0; i < 32; ++i) {
          ws[i] = q[i] * Ops::sqrt(s2 + xs[i] * xs[i]);
          sumw += ws[i];
        }
        scatter(sumw, count, sw.data() + s0);
      } else {
        F sum_x2(0.0f);
        for (size_t i = 0; i < 32; ++i) sum_x2 += xs[i] * xs[i];
        const F av_x = Ops::sqrt(div(sum_x2, F(32.0f)));
        for (size_t i = 0; i < 32; ++i) ws[i] = av_x + xsimd::abs(xs[i]);
      }
      F scale;
      if (imatrix) scale = qkx<true, 32>(kNmax, xs, ws, c, &the_min, -0.9f, 0.05f, 36, false);
      else if (kNmax == 15) scale = qkx<false, 32>(15, xs, ws, c, &the_min, -1.f, 0.1f, 20, false);
      else scale = qkx<false, 32>(31, xs, ws, c, &the_min, -0.5f, 0.1f, 15, false);
      scatter(scale, count, scales.data() + s0);
      scatter(the_min, count, mins.data() + s0);
      scatter_codes(c, count, 32, codes.data() + 32 * s0);
    }
    auto* out = static_cast<Block*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      ref::k4_finish<kNmax>(x + 256 * b, scales.data() + 8 * b, mins.data() + 8 * b, imatrix ? sw.data() + 8 * b : nullptr,
                            codes.data() + 256 * b, out[b].scales, &out[b].d, &out[b].dmin);
      if constexpr (kNmax == 15) ref::pack_q4_K(codes.data() + 256 * b, &out[b]);
      else ref::pack_q5_K(codes.data() + 256 * b, &out[b]);
    }
  }

  // Q2_K: the 16 sub-block searches of every super-block, L at a time.
  static void quantize_q2(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 16;
    ScratchBuffer<float> scales(nsub), mins(nsub), sw(nsub), sigma2(n / 256);
    ScratchBuffer<uint8_t> codes(n);
    for (size_t b = 0; imatrix && b < n / 256; ++b) sigma2[b] = ref::q2_sigma2(x + 256 * b);
    for (size_t s0 = 0; s0 < nsub; s0 += L) {
      const size_t count = nsub - s0 < L ? nsub - s0 : L;
      F xs[16], ws[16], c[16], the_min, scale;
      gather(x + 16 * s0, count, 16, xs);
      if (imatrix) {
        alignas(64) float sg[16];
        for (size_t k = 0; k < L; ++k) sg[k] = k < count ? sigma2[(s0 + k) / 16] : 0.0f;
        const F s2 = F::load_aligned(sg);
        F q[16];
        gather(imatrix + 16 * s0, count, 16, q);
        F sumw(0.0f);
        for (size_t i = 0; i < 16; ++i) {
          ws[i] = q[i] * Ops::sqrt(s2 + xs[i] * xs[i]);
          sumw += ws[i];
        }
        scatter(sumw, count, sw.data() + s0);
        scale = qkx<true, 16>(3, xs, ws, c, &the_min, -0.9f, 0.05f, 36, false);
      } else {
        for (size_t i = 0; i < 16; ++i) ws[i] = xsimd::abs(xs[i]);
        scale = qkx<false, 16>(3, xs, ws, c, &the_min, -0.5f, 0.1f, 15, true);
      }
      scatter(scale, count, scales.data() + s0);
      scatter(the_min, count, mins.data() + s0);
      scatter_codes(c, count, 16, codes.data() + 16 * s0);
    }
    auto* out = static_cast<BlockQ2_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      ref::q2_finish(x + 256 * b, &out[b], scales.data() + 16 * b, mins.data() + 16 * b,
                     imatrix ? sw.data() + 16 * b : nullptr, codes.data() + 256 * b);
    }
  }

  // Q6_K: the 16 sub-block searches of every super-block, L at a time.
  static void quantize_q6(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 16;
    ScratchBuffer<float> scales(nsub);
    ScratchBuffer<uint8_t> codes(n);
    for (size_t s0 = 0; s0 < nsub; s0 += L) {
      const size_t count = nsub - s0 < L ? nsub - s0 : L;
      F xs[16], ws[16], c[16];
      gather(x + 16 * s0, count, 16, xs);
      if (imatrix) gather(imatrix + 16 * s0, count, 16, ws);
      else for (size_t i = 0; i < 16; ++i) ws[i] = xs[i] * xs[i];
      scatter(qx<16>(32, xs, ws, c), count, scales.data() + s0);
      scatter_codes(c, count, 16, codes.data() + 16 * s0);
    }
    auto* out = static_cast<BlockQ6_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      ref::q6_finish(x + 256 * b, &out[b], scales.data() + 16 * b, reinterpret_cast<int8_t*>(codes.data() + 256 * b));
    }
  }
};

WQ_END_ISA_NAMESPACE
}  // namespace wq::simd
