// SIMD bodies of the K-quant scale searches, one sub-block per lane. llama.cpp's searches
// (kernels/ggml_quant_search.h) are sequential in the elements of a sub-block (their sums
// are float sums in element order, and the best trial so far decides the next one), so
// they cannot be split along the elements without changing the bits. Sub-blocks are
// independent, though: here lane k runs sub-block k's search with exactly the scalar
// operations, in the same order, so every lane ends with the scalar bits. What follows
// the searches is the reference's own code run on the searched scales and codes: the
// super-block scales and the packing (q3_finish whole; k4_finish_scales, q6_finish_scales,
// q2_finish_scales and iq4_finish_scales, then pack_*), except the requantization of each
// weight with the stored scales, done here L weights at a time with the same operations.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>
#include <cstdint>
#include <type_traits>

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
  // code(v, lo, hi) when every lane's |v| < 2^22 (no NaN): there nearest_int's magic
  // addition rounds to nearest even, as the ISA's round instruction does, so the code is
  // that rounding clamped in float: three operations where the bit trick takes four.
  // (A lane may hold -0 where code holds +0, for v in (-0.5, 0] with lo < 0: the sums it
  // enters are the same bits, and codes are stored through code.) Outside that range the
  // bit trick's result (huge v, Inf) is not the clamp of the rounded value, so callers
  // check the range.
  static F code_small(F v, int lo, int hi) { return xsimd::min(xsimd::max(Ops::rint(v), F(float(lo))), F(float(hi))); }
  // Whether |s * (x - m)| < 2^22 for every x of a lane in [lo, hi] (rounding is monotone,
  // so the ends bound every x in between): code_small may stand for code.
  static bool small_codes(F s, F lo, F hi, F m) {
    const F a = xsimd::abs(s * (lo - m)), b = xsimd::abs(s * (hi - m));
    return xsimd::all((a < F(0x1p22f)) & (b < F(0x1p22f)));
  }

  // n elements of each of up to L sub-blocks (count of them, from x + s * n for sub-block s)
  // as n vectors: out[i] lane k = element i of sub-block k; missing lanes are 0.
  // n is a multiple of L: each L x L tile is loaded by rows and transposed in registers.
  static void gather(const float* x, size_t count, size_t n, F* out) {
    for (size_t i0 = 0; i0 < n; i0 += L) {
      F* t = out + i0;
      for (size_t k = 0; k < L; ++k) t[k] = k < count ? F::load_unaligned(x + k * n + i0) : F(0.0f);
      Ops::transpose(t);
    }
  }
  // ref::sum_x2(x + N * r, N) of each of `runs` runs of N weights into out[r], L runs at a
  // time: lane k adds run r0 + k's squares in element order, as the reference's one chain
  // does (whose 256 dependent adds per super-block were a third of Q4_K's finish).
  template <size_t N>
  static void sums_x2(const float* x, size_t runs, float* out) {
    for (size_t r0 = 0; r0 < runs; r0 += L) {
      const size_t count = runs - r0 < L ? runs - r0 : L;
      F acc(0.0f);
      for (size_t i0 = 0; i0 < N; i0 += L) {
        F t[L];
        for (size_t k = 0; k < L; ++k) t[k] = k < count ? F::load_unaligned(x + (r0 + k) * N + i0) : F(0.0f);
        Ops::transpose(t);
        for (size_t i = 0; i < L; ++i) acc += t[i] * t[i];
      }
      scatter(acc, count, out + r0);
    }
  }
  // A super-block sigma2 per run of N weights: of(ref::sum_x2(run, N)), where `of` is the
  // reference's own finish of that sum (ref::k_sigma2_of, q2_sigma2_of, iq4_sigma2_of).
  template <size_t N, class Of>
  static void sigma2s(const float* x, size_t runs, Of of, float* out) {
    sums_x2<N>(x, runs, out);
    for (size_t r = 0; r < runs; ++r) out[r] = of(out[r]);
  }
  // gather's inverse for codes (small non-negative integers as floats): sub-block k's n
  // codes as bytes at L8 + k * n, for k < count.
  static void scatter_codes(const F* c, size_t count, size_t n, uint8_t* L8) {
    for (size_t i0 = 0; i0 < n; i0 += L) {
      F t[L];
      for (size_t k = 0; k < L; ++k) t[k] = c[i0 + k];
      Ops::transpose(t);
      for (size_t k = 0; k < count; ++k) Ops::store_u8(L8 + k * n + i0, Ops::to_int(t[k]));
    }
  }
  static void scatter(F v, size_t count, float* out) {
    alignas(64) float t[16];
    v.store_aligned(t);
    for (size_t k = 0; k < count; ++k) out[k] = t[k];
  }

  // The searches below run G independent groups of L sub-blocks (G vectors of each
  // quantity, group g's element i at [g * n + i]) in the same loops: each group's sums are
  // one add chain, so two groups overlap their latencies. Groups never mix: group g's lanes
  // see exactly the operations a single group would.

  // ref::make_qx_quants(n, nmax, x, L, 1, w) per lane; codes (biased by nmax) in c,
  // scales in scale. `w * x[i] * l` is (w * x[i]) * l, so w * x[i] is computed once.
  template <size_t n, size_t G>
  static void qx(int nmax, const F* x, const F* w, F* c, F* scale_out) {
    // Elements outside, groups inside, as in qkx.
    F max[G], amax[G], wx[G * n];
    M zero[G], nan[G];
    for (size_t g = 0; g < G; ++g) {
      amax[g] = max[g] = F(0.0f);
      nan[g] = M(false);
    }
    for (size_t i = 0; i < n; ++i) {
      for (size_t g = 0; g < G; ++g) {
        const F xi = x[g * n + i], ax = xsimd::abs(xi);
        const M m = ax > amax[g];
        amax[g] = xsimd::select(m, ax, amax[g]);
        max[g] = xsimd::select(m, xi, max[g]);
        wx[g * n + i] = w[g * n + i] * xi;
        nan[g] = nan[g] | xsimd::isnan(xi);
      }
    }
    bool no_nan = true;
    for (size_t g = 0; g < G; ++g) {
      zero[g] = amax[g] < F(ref::kGroupMaxEps);
      no_nan = no_nan && !xsimd::any(nan[g] & !zero[g]);
    }
    F sumlx[G], suml2[G];
    auto sums = [&](const F* is) {
      // Without a NaN, every |is * x| is at most |is| * amax (rounding is monotone): where
      // that is below 2^22 (an Inf fails the compare), code_small gives code's values with
      // fewer operations. A zero lane (all |x| below the eps, a missing lane) ends as
      // zeros whatever its sums, so its lanes (infinite iscale, NaN products) do not count.
      bool small = no_nan;
      for (size_t g = 0; g < G; ++g) small = small && xsimd::all((xsimd::abs(is[g]) * amax[g] < F(0x1p22f)) | zero[g]);
      auto run = [&](auto is_small) {
        for (size_t g = 0; g < G; ++g) sumlx[g] = suml2[g] = F(0.0f);
        for (size_t i = 0; i < n; ++i) {
          for (size_t g = 0; g < G; ++g) {
            const F v = is[g] * x[g * n + i];
            const F l = decltype(is_small)::value ? code_small(v, -nmax, nmax - 1) : code(v, -nmax, nmax - 1);
            sumlx[g] += wx[g * n + i] * l;
            suml2[g] += w[g * n + i] * l * l;
          }
        }
      };
      if (small) run(std::true_type());
      else run(std::false_type());
    };
    F iscale[G], scale[G], best[G], best_iscale[G];
    for (size_t g = 0; g < G; ++g) iscale[g] = best_iscale[g] = div(F(float(-nmax)), max[g]);
    sums(iscale);
    for (size_t g = 0; g < G; ++g) {
      // C's `suml2 ? ... : 0`: a NaN suml2 counts as true (an ordered != would not).
      scale[g] = xsimd::select(suml2[g] == F(0.0f), F(0.0f), div(sumlx[g], suml2[g]));
      best[g] = scale[g] * sumlx[g];
    }
    for (int is = -9; is <= 9; ++is) {
      if (is == 0) continue;
      const F num(-(float(nmax) + 0.1f * float(is)));
      for (size_t g = 0; g < G; ++g) iscale[g] = div(num, max[g]);
      sums(iscale);
      for (size_t g = 0; g < G; ++g) {
        const M take = (suml2[g] > F(0.0f)) & (sumlx[g] * sumlx[g] > best[g] * suml2[g]);
        const F s = div(sumlx[g], suml2[g]);
        best_iscale[g] = xsimd::select(take, iscale[g], best_iscale[g]);
        scale[g] = xsimd::select(take, s, scale[g]);
        best[g] = xsimd::select(take, s * sumlx[g], best[g]);
      }
    }
    for (size_t g = 0; g < G; ++g) {
      for (size_t i = 0; i < n; ++i) {
        c[g * n + i] = xsimd::select(zero[g], F(0.0f), code(best_iscale[g] * x[g * n + i], -nmax, nmax - 1) + F(float(nmax)));
      }
      scale_out[g] = xsimd::select(zero[g], F(0.0f), scale[g]);
    }
  }

  // ref::make_qkx_quants<kx3>(n, nmax, x, w, L, the_min, Laux, rmin, rdelta, nstep, use_mad)
  // per lane (weights given); scales in scale, -min in the_min. The reference copies a
  // trial's codes when it takes the trial; here a lane remembers the iscale and the min
  // that trial's codes came from instead (rule_is, rule_min; rule_is -1 for a flat lane,
  // whose codes are 0: a lane's iscale is otherwise positive, or NaN), and codes_by_rule
  // makes the codes from them with the same expression, so they are the same codes. The
  // K-quant finishes requantize every sub-block whose stored scale is not zero, so they
  // need a search's codes rarely.
  template <bool kx3, size_t n, size_t G>
  static void qkx(int nmax, const F* x, const F* w, F* the_min, F* scale_out, F* rule_is, F* rule_min, float rmin,
                  float rdelta, int nstep, bool use_mad) {
    // Elements outside, groups inside: with the groups outside, GCC kept each group's
    // sums in memory, and every add waited on the store before it (8% of the search).
    F min[G], max[G], sum_w[G], sum_x[G], lo_x[G];
    M flat[G], nan[G];
    for (size_t g = 0; g < G; ++g) {
      min[g] = max[g] = x[g * n];
      sum_w[g] = w[g * n];
      sum_x[g] = sum_w[g] * x[g * n];
      nan[g] = xsimd::isnan(x[g * n]);
    }
    for (size_t i = 1; i < n; ++i) {
      for (size_t g = 0; g < G; ++g) {
        const F xi = x[g * n + i], wi = w[g * n + i];
        min[g] = xsimd::select(xi < min[g], xi, min[g]);
        max[g] = xsimd::select(xi > max[g], xi, max[g]);
        sum_w[g] += wi;
        sum_x[g] += wi * xi;
        nan[g] = nan[g] | xsimd::isnan(xi);
      }
    }
    bool no_nan = true;
    for (size_t g = 0; g < G; ++g) {
      lo_x[g] = min[g];
      min[g] = xsimd::select(min[g] > F(0.0f), F(0.0f), min[g]);
      flat[g] = kx3 ? (max[g] <= min[g]) : (max[g] == min[g]);
      no_nan = no_nan && !xsimd::any(nan[g]);
    }
    auto err = [&](F d) { return use_mad ? xsimd::abs(d) : d * d; };
    // code_is, code_min: the iscale and min the lane's current best codes came from.
    F iscale[G], scale[G], best_mad[G], code_is[G], code_min[G];
    for (size_t g = 0; g < G; ++g) {
      iscale[g] = code_is[g] = div(F(float(nmax)), max[g] - min[g]);
      scale[g] = div(F(1.0f), iscale[g]);
      code_min[g] = min[g];
      best_mad[g] = F(0.0f);
    }
    for (size_t i = 0; i < n; ++i) {
      for (size_t g = 0; g < G; ++g) {
        const F l = code(iscale[g] * (x[g * n + i] - min[g]), 0, nmax);
        best_mad[g] += w[g * n + i] * err(scale[g] * l + min[g] - x[g * n + i]);
      }
    }
    F aux[G * n];
    // The next trial's iscale, num / (max - min) with the min that trial will have: both
    // candidates are divided before the error pass (the min kept, or this trial's taken),
    // and the take picks one, so no division waits between a trial's take and the next
    // trial's first product.
    F next_iscale[G], is_kept[G], is_taken[G];
    auto num_of = [&](int is) { return F(rmin + rdelta * float(is) + float(nmax)); };
    for (size_t g = 0; g < G; ++g) next_iscale[g] = is_kept[g] = is_taken[g] = div(num_of(0), max[g] - min[g]);
    for (int is = 0; is <= nstep; ++is) {
      F sum_l[G], sum_l2[G], sum_xl[G];
      bool small = no_nan, unclamped = true;
      for (size_t g = 0; g < G; ++g) {
        iscale[g] = next_iscale[g];
        sum_l[g] = sum_l2[g] = sum_xl[g] = F(0.0f);
        small = small && small_codes(iscale[g], lo_x[g], max[g], min[g]);
        // Each lane's trial values lie between its two ends' (the subtraction and the
        // product with one iscale round monotonically); where both ends round into
        // [0, nmax] the clamp changes nothing but a -0 into +0, which leaves every sum and
        // every squared difference after it the same bits (x + -0 is x, +0 + -0 is +0).
        // Most trials need no clamp (2 of 3 in kernels_bench's data). Keeping x - min
        // in an array between trials, or computing the codes again for the error pass
        // instead of storing them, measured slower: the search is bound by its arrays.
        // (The same test in qx, Q6_K's and Q3_K's search, made those 1.5x slower.)
        const F lo = Ops::rint(iscale[g] * (lo_x[g] - min[g])), hi = Ops::rint(iscale[g] * (max[g] - min[g]));
        const F top = F(float(nmax));
        unclamped = unclamped && xsimd::all((lo >= F(0.0f)) & (lo <= top) & (hi >= F(0.0f)) & (hi <= top));
      }
      // kind: 0 code (any value), 1 code_small, 2 the rounding alone (no clamp needed).
      auto trial = [&](auto kind) {
        for (size_t i = 0; i < n; ++i) {
          for (size_t g = 0; g < G; ++g) {
            const F v = iscale[g] * (x[g * n + i] - min[g]);
            F l;
            if constexpr (decltype(kind)::value == 2) l = Ops::rint(v);
            else if constexpr (decltype(kind)::value == 1) l = code_small(v, 0, nmax);
            else l = code(v, 0, nmax);
            aux[g * n + i] = l;
            const F wl = w[g * n + i] * l;
            sum_l[g] += wl;
            sum_l2[g] += wl * l;
            sum_xl[g] += wl * x[g * n + i];
          }
        }
      };
      if (small && unclamped) trial(std::integral_constant<int, 2>());
      else if (small) trial(std::integral_constant<int, 1>());
      else trial(std::integral_constant<int, 0>());
      F this_scale[G], this_min[G], D[G], mad[G];
      for (size_t g = 0; g < G; ++g) {
        D[g] = sum_w[g] * sum_l2[g] - sum_l[g] * sum_l[g];
        this_scale[g] = div(sum_w[g] * sum_xl[g] - sum_x[g] * sum_l[g], D[g]);
        this_min[g] = div(sum_l2[g] * sum_x[g] - sum_l[g] * sum_xl[g], D[g]);
        const M pos = this_min[g] > F(0.0f);
        this_min[g] = xsimd::select(pos, F(0.0f), this_min[g]);
        // (A positive fitted min is rare: the division only where a lane has one.)
        if (xsimd::any(pos)) this_scale[g] = xsimd::select(pos, div(sum_xl[g], sum_l2[g]), this_scale[g]);
        mad[g] = F(0.0f);
        if (is < nstep) {
          is_kept[g] = div(num_of(is + 1), max[g] - min[g]);
          is_taken[g] = div(num_of(is + 1), max[g] - this_min[g]);
        }
      }
      for (size_t i = 0; i < n; ++i) {
        for (size_t g = 0; g < G; ++g) {
          mad[g] += w[g * n + i] * err(this_scale[g] * aux[g * n + i] + this_min[g] - x[g * n + i]);
        }
      }
      for (size_t g = 0; g < G; ++g) {
        const M take = (D[g] > F(0.0f)) & (mad[g] < best_mad[g]);
        code_is[g] = xsimd::select(take, iscale[g], code_is[g]);
        code_min[g] = xsimd::select(take, min[g], code_min[g]);
        best_mad[g] = xsimd::select(take, mad[g], best_mad[g]);
        scale[g] = xsimd::select(take, this_scale[g], scale[g]);
        min[g] = xsimd::select(take, this_min[g], min[g]);
        if (is < nstep) next_iscale[g] = xsimd::select(take, is_taken[g], is_kept[g]);
      }
    }
    for (size_t g = 0; g < G; ++g) {
      rule_is[g] = xsimd::select(flat[g], F(-1.0f), code_is[g]);
      rule_min[g] = code_min[g];
      the_min[g] = neg(min[g]);
      scale_out[g] = xsimd::select(flat[g], F(0.0f), scale[g]);
    }
  }

  // ref::make_q3_quants(16, nmax, x, L) per lane, for G groups of L sub-blocks: codes
  // (biased by nmax) in c, scales in scale. A lane whose pass changed nothing would change
  // nothing in the next one either (same state, same steps), so running the passes until
  // no lane of a group changes is the reference's early exit lane by lane; a group whose
  // lanes have all ended is skipped. Each code's update needs a division whose operands
  // depend on the one before in the same sub-block, so one group alone waits on that
  // chain (it measured slower than the reference loop, 2026-12-03); groups interleave it.
  template <size_t G>
  static void q3(int nmax, const F* x, F* c, F* scale) {
    constexpr size_t n = 16;
    F sumlx[G], suml2[G];
    M zero[G];
    bool active[G];
    for (size_t g = 0; g < G; ++g) {
      const F* xg = x + g * n;
      F amax(0.0f), max(0.0f);
      for (size_t i = 0; i < n; ++i) {
        const F ax = xsimd::abs(xg[i]);
        const M m = ax > amax;
        amax = xsimd::select(m, ax, amax);
        max = xsimd::select(m, xg[i], max);
      }
      zero[g] = amax < F(ref::kGroupMaxEps);
      const F iscale = div(F(float(-nmax)), max);
      // Sums in locals, as qkx's setup keeps them: indexed by g here, GCC kept them in
      // memory, each add waiting on the store before it.
      F slx(0.0f), sl2(0.0f);
      for (size_t i = 0; i < n; ++i) {
        const F l = code(iscale * xg[i], -nmax, nmax - 1);
        c[g * n + i] = l;
        const F w = xg[i] * xg[i];
        slx += w * xg[i] * l;
        sl2 += w * l * l;
      }
      sumlx[g] = slx;
      suml2[g] = sl2;
      active[g] = true;
    }
    for (int itry = 0; itry < 5; ++itry) {
      M changed[G];
      for (size_t g = 0; g < G; ++g) changed[g] = M(false);
      for (size_t i = 0; i < n; ++i) {
        for (size_t g = 0; g < G; ++g) {
          if (!active[g]) continue;
          const F xi = x[g * n + i], ci = c[g * n + i];
          const F w = xi * xi;
          const F slx0 = sumlx[g] - w * xi * ci;
          const F sl20 = suml2[g] - w * ci * ci;
          const F new_l = code(div(xi * sl20, slx0), -nmax, nmax - 1);
          const F slx = slx0 + w * xi * new_l;
          const F sl2 = sl20 + w * new_l * new_l;
          const M take = (slx0 > F(0.0f)) & (new_l != ci) & (sl2 > F(0.0f)) &
                         (slx * slx * suml2[g] > sumlx[g] * sumlx[g] * sl2);
          c[g * n + i] = xsimd::select(take, new_l, ci);
          sumlx[g] = xsimd::select(take, slx, sumlx[g]);
          suml2[g] = xsimd::select(take, sl2, suml2[g]);
          changed[g] = changed[g] | take;
        }
      }
      bool any = false;
      for (size_t g = 0; g < G; ++g) {
        active[g] = active[g] && xsimd::any(changed[g]);
        any = any || active[g];
      }
      if (!any) break;
    }
    for (size_t g = 0; g < G; ++g) {
      for (size_t i = 0; i < n; ++i) c[g * n + i] = xsimd::select(zero[g], F(0.0f), c[g * n + i] + F(float(nmax)));
      scale[g] = xsimd::select(zero[g], F(0.0f), div(sumlx[g], suml2[g]));
    }
  }

  // Q3_K: the 16 sub-block searches of every super-block, groups of L at a time (with
  // an importance matrix ref::make_qx_quants, without one make_q3_quants), each
  // super-block then finished by the reference's q3_finish.
  static void quantize_q3(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 16;
    ScratchBuffer<float> scales(nsub), sw(nsub), sigma2(n / 256);
    ScratchBuffer<uint8_t> codes(n);
    if (imatrix) {
      sigma2s<256>(x, n / 256, ref::k_sigma2_of, sigma2.data());
      qx_in_groups(4, x, nsub, scales.data(), codes.data(), [&](size_t sg, size_t count, const F* xs, F* ws) {
        imatrix_weights<16>(imatrix, sigma2.data(), 16, sg, count, xs, ws, sw.data());
      });
    } else {
      in_groups<4>(nsub, [&](auto groups, size_t s0) {
        constexpr size_t G = decltype(groups)::value;
        F xs[G * 16], c[G * 16], scale[G];
        for (size_t g = 0; g < G; ++g) {
          const size_t sg = s0 + g * L;
          gather(x + 16 * sg, sub_count(nsub, sg), 16, xs + 16 * g);
        }
        q3<G>(4, xs, c, scale);
        scatter_groups<16, G>(nsub, s0, scale, nullptr, c, scales.data(), nullptr, codes.data());
      });
    }
    auto* out = static_cast<BlockQ3_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      ref::q3_finish(x + 256 * b, &out[b], scales.data() + 16 * b, imatrix ? sw.data() + 16 * b : nullptr,
                     reinterpret_cast<int8_t*>(codes.data() + 256 * b));
    }
  }

  // ref::best_index_int8 over kValuesIq4nl, lane by lane. For v[0] < x < v[15] the binary
  // search ends at mu = the first level above x, which is 1 + the count c of inner levels
  // v[1..14] <= x, and picks v[c] (index c) when `x - v[c] < v[c + 1] - x`, else v[c + 1].
  // That same compare also gives the ends: for x <= v[0] (c = 0) it picks v[0], for
  // x >= v[15] (c = 14) v[15], Inf included. A NaN fails every compare in the reference
  // and ends at index 15; here it counts 0 and is set apart by the callers.
  struct Iq4Pick {
    I c;
    F lo, hi;
    M low;  // v[c] is the pick
  };
  static Iq4Pick iq4_pick(F x) {
    const int8_t* v = ref::kValuesIq4nl;
    I c(0);
    for (int k = 1; k < 15; ++k) c -= Ops::mask_ones(F(float(v[k])) <= x);
    const F lo = Ops::to_float(Ops::lookup16(v, c)), hi = Ops::to_float(Ops::lookup16(v, c + I(1)));
    return {c, lo, hi, x - lo < hi - x};
  }
  // The level itself, as a float.
  static F iq4_level(F x) {
    const Iq4Pick p = iq4_pick(x);
    return xsimd::select(xsimd::isnan(x), F(float(ref::kValuesIq4nl[15])), xsimd::select(p.low, p.lo, p.hi));
  }
  // The index (a NaN's is 15: the pick's c + 1 = 1, or 15).
  static I iq4_index(F x) {
    const Iq4Pick p = iq4_pick(x);
    return (p.c + I(1) + Ops::mask_ones(p.low)) | (Ops::mask_ones(xsimd::isnan(x)) & I(15));
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
        const F wq = w[j] * q;
        sumqx += wq * x[j];
        sumq2 += wq * q;
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
    if (imatrix) sigma2s<kSuper>(x, n / kSuper, ref::iq4_sigma2_of<kSuper>, sigma2.data());
    for (size_t s0 = 0; s0 < nsub; s0 += L) {
      const size_t count = nsub - s0 < L ? nsub - s0 : L;
      F xs[32], ws[32];
      gather(x + 32 * s0, count, 32, xs);
      if (imatrix) {
        const F s2 = lane_sigma2(sigma2.data(), s0, count, kSuper / 32);
        gather(imatrix + 32 * s0, count, 32, ws);
        for (size_t i = 0; i < 32; ++i) ws[i] = ws[i] * Ops::sqrt(s2 + xs[i] * xs[i]);
      } else {
        for (size_t i = 0; i < 32; ++i) ws[i] = xs[i] * xs[i];
      }
      scatter(iq4_search(xs, ws), count, scales.data() + s0);
    }
    auto* out = static_cast<Block*>(y);
    for (size_t b = 0; b < n / kSuper; ++b) {
      float idls[kSuper / 32];
      if constexpr (kSuper == 32) {
        ref::iq4_finish_scales<32>(scales.data() + b, &out[b].d, nullptr, nullptr, idls);
      } else {
        uint16_t scales_h;
        ref::iq4_finish_scales<256>(scales.data() + 8 * b, &out[b].d, &scales_h, out[b].scales_l, idls);
        out[b].scales_h = scales_h;
      }
      uint8_t codes[kSuper];  // ref::iq4_finish's best_index_int8(16, kValuesIq4nl, idl * x)
      for (size_t j = 0; j < kSuper; j += L) {
        Ops::store_u8(codes + j, iq4_index(F(idls[j / 32]) * F::load_unaligned(x + kSuper * b + j)));
      }
      ref::pack_iq4<kSuper>(codes, out[b].qs);
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
      F xs[32], ws[32], the_min(0.0f), scale;
      gather(x + 32 * s0, count, 32, xs);
      gather(imatrix + 32 * s0, count, 32, ws);
      for (size_t i = 0; i < 32; ++i) ws[i] = ws[i] * Ops::sqrt(s2 + xs[i] * xs[i]);
      alignas(64) float sc[16], mn[16];
      uint8_t codes[16 * 32];
      if constexpr (kMin) {
        F is, m;
        qkx<true, 32, 1>(kNmax, xs, ws, &the_min, &scale, &is, &m, -0.9f, 0.05f, 36, false);
        alignas(64) float ris[16], rmin[16];
        is.store_aligned(ris);
        m.store_aligned(rmin);
        for (size_t k = 0; k < count; ++k) codes_by_rule<32>(x + 32 * (s0 + k), ris[k], rmin[k], kNmax, codes + 32 * k);
      } else {
        F c[32];
        qx<32, 1>(kNmax, xs, ws, c, &scale);
        scatter_codes(c, count, 32, codes);
      }
      scale.store_aligned(sc);
      neg(the_min).store_aligned(mn);
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

  // Runs step(std::integral_constant<size_t, G>(), s0) over sub-blocks [0, nsub): G groups
  // of L from s0 on, the most (up to kMaxG: 1, 2 or 4) that still have a sub-block each
  // (group g holds sub_count(nsub, s0 + g * L) sub-blocks). More groups give the core more
  // independent add chains to overlap; 4 paid for the Q4_K / Q5_K searches on AVX2 and
  // AVX-512 (kernels_bench, binaries alternated, 2026-12-04: 5-9% against 2) but not for
  // Q2_K's and Q6_K's shorter sub-blocks.
  template <size_t kMaxG = 2, class Step>
  static void in_groups(size_t nsub, Step step) {
    static_assert(kMaxG == 1 || kMaxG == 2 || kMaxG == 4, "1, 2 or 4 groups");
    size_t s0 = 0;
    if constexpr (kMaxG >= 4) {
      for (; s0 + 3 * L < nsub; s0 += 4 * L) step(std::integral_constant<size_t, 4>(), s0);
    }
    if constexpr (kMaxG >= 2) {
      for (; s0 + L < nsub; s0 += 2 * L) step(std::integral_constant<size_t, 2>(), s0);
    }
    for (; s0 < nsub; s0 += L) step(std::integral_constant<size_t, 1>(), s0);
  }
  static size_t sub_count(size_t nsub, size_t s0) { return nsub - s0 < L ? nsub - s0 : L; }
  // Lane k: sigma2[(s0 + k) / per] (the super-block of sub-block s0 + k), 0 past count.
  static F lane_sigma2(const float* sigma2, size_t s0, size_t count, size_t per) {
    alignas(64) float sg[16];
    for (size_t k = 0; k < L; ++k) sg[k] = k < count ? sigma2[(s0 + k) / per] : 0.0f;
    return F::load_aligned(sg);
  }
  // Group g's results (scale, -min when mins is given, codes) into the row's arrays from
  // sub-block s0 + g * L on.
  template <size_t n, size_t G>
  static void scatter_groups(size_t nsub, size_t s0, const F* scale, const F* the_min, const F* c, float* scales,
                             float* mins, uint8_t* codes) {
    for (size_t g = 0; g < G; ++g) {
      const size_t sg = s0 + g * L, count = sub_count(nsub, sg);
      scatter(scale[g], count, scales + sg);
      if (mins) scatter(the_min[g], count, mins + sg);
      scatter_codes(c + n * g, count, n, codes + n * sg);
    }
  }
  // The same for qkx's results without codes: its code rules into rule_is and rule_min.
  template <size_t G>
  static void scatter_rules(size_t nsub, size_t s0, const F* scale, const F* the_min, const F* is, const F* mn,
                            float* scales, float* mins, float* rule_is, float* rule_min) {
    for (size_t g = 0; g < G; ++g) {
      const size_t sg = s0 + g * L, count = sub_count(nsub, sg);
      scatter(scale[g], count, scales + sg);
      scatter(the_min[g], count, mins + sg);
      scatter(is[g], count, rule_is + sg);
      scatter(mn[g], count, rule_min + sg);
    }
  }
  // qx over the row's sub-blocks of 16, two groups of L at a time: weights(sg, count, xs,
  // ws) fills the weights ws of the count sub-blocks from sg (xs gathered), and the scales
  // and codes go to the row's arrays.
  template <class Weights>
  static void qx_in_groups(int nmax, const float* x, size_t nsub, float* scales, uint8_t* codes, Weights weights) {
    in_groups<2>(nsub, [&](auto groups, size_t s0) {
      constexpr size_t G = decltype(groups)::value;
      F xs[G * 16], ws[G * 16], c[G * 16], scale[G];
      for (size_t g = 0; g < G; ++g) {
        const size_t sg = s0 + g * L, count = sub_count(nsub, sg);
        gather(x + 16 * sg, count, 16, xs + 16 * g);
        weights(sg, count, xs + 16 * g, ws + 16 * g);
      }
      qx<16, G>(nmax, xs, ws, c, scale);
      scatter_groups<16, G>(nsub, s0, scale, nullptr, c, scales, nullptr, codes);
    });
  }
  // The importance weights q * sqrt(sigma2 + x^2) of count sub-blocks of n from s0 (xs
  // gathered already) into ws, and their sums into sw + s0.
  template <size_t n>
  static void imatrix_weights(const float* imatrix, const float* sigma2, size_t per, size_t s0, size_t count,
                              const F* xs, F* ws, float* sw) {
    const F s2 = lane_sigma2(sigma2, s0, count, per);
    F q[n];
    gather(imatrix + n * s0, count, n, q);
    F sumw(0.0f);
    for (size_t i = 0; i < n; ++i) {
      ws[i] = q[i] * Ops::sqrt(s2 + xs[i] * xs[i]);
      sumw += ws[i];
    }
    scatter(sumw, count, sw + s0);
  }

  // The finishes' requantization of one sub-block of n weights with its stored scale d
  // (d != 0) and min m: nearest_int((x + m) / d) (kMin) or nearest_int(x / d), clamped to
  // [lo, hi], plus bias, as bytes: the reference's float operations, L weights at a time.
  template <size_t n, bool kMin>
  static void requantize(const float* x, float d, float m, int lo, int hi, int bias, uint8_t* out) {
    for (size_t i = 0; i < n; i += L) {
      F v = F::load_unaligned(x + i);
      if constexpr (kMin) v = v + F(m);
      Ops::store_u8(out + i, xsimd::max(I(lo), xsimd::min(I(hi), nearest(div(v, F(d))))) + I(bias));
    }
  }

  // qkx's codes of one sub-block of n weights from its lane's (rule_is, rule_min): the
  // reference's expression, nearest_int(iscale * (x - min)) clamped to [0, nmax], coded L
  // weights at a time; a flat lane's (rule_is -1) are 0.
  template <size_t n>
  static void codes_by_rule(const float* x, float rule_is, float rule_min, int nmax, uint8_t* out) {
    if (rule_is == -1.0f) {
      for (size_t i = 0; i < n; ++i) out[i] = 0;
      return;
    }
    for (size_t i = 0; i < n; i += L) {
      Ops::store_u8(out + i, Ops::to_int(code(F(rule_is) * (F::load_unaligned(x + i) - F(rule_min)), 0, nmax)));
    }
  }

  // Q4_K / Q5_K: the 8 sub-block searches of every super-block of the row, L at a time,
  // then each super-block finished by the reference.
  template <int kNmax, class Block>
  static void quantize_k4(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 32;
    ScratchBuffer<float> scales(nsub), mins(nsub), sw(nsub), sigma2(n / 256), rule_is(nsub), rule_min(nsub);
    ScratchBuffer<uint8_t> codes(n);
    if (imatrix) sigma2s<256>(x, n / 256, ref::k_sigma2_of, sigma2.data());  // (without one the searches take none)
    in_groups<4>(nsub, [&](auto groups, size_t s0) {
      constexpr size_t G = decltype(groups)::value;
      F xs[G * 32], ws[G * 32], the_min[G], scale[G], is[G], mn[G];
      for (size_t g = 0; g < G; ++g) {
        const size_t sg = s0 + g * L, count = sub_count(nsub, sg);
        F* xg = xs + 32 * g;
        F* wg = ws + 32 * g;
        gather(x + 32 * sg, count, 32, xg);
        if (imatrix) {
          imatrix_weights<32>(imatrix, sigma2.data(), 8, sg, count, xg, wg, sw.data());
        } else {
          F sum_x2(0.0f);
          for (size_t i = 0; i < 32; ++i) sum_x2 += xg[i] * xg[i];
          const F av_x = Ops::sqrt(div(sum_x2, F(32.0f)));
          for (size_t i = 0; i < 32; ++i) wg[i] = av_x + xsimd::abs(xg[i]);
        }
      }
      if (imatrix) qkx<true, 32, G>(kNmax, xs, ws, the_min, scale, is, mn, -0.9f, 0.05f, 36, false);
      else if (kNmax == 15) qkx<false, 32, G>(15, xs, ws, the_min, scale, is, mn, -1.f, 0.1f, 20, false);
      else qkx<false, 32, G>(31, xs, ws, the_min, scale, is, mn, -0.5f, 0.1f, 15, false);
      scatter_rules<G>(nsub, s0, scale, the_min, is, mn, scales.data(), mins.data(), rule_is.data(), rule_min.data());
    });
    auto* out = static_cast<Block*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      ref::k4_finish_scales<kNmax>(scales.data() + 8 * b, mins.data() + 8 * b, imatrix ? sw.data() + 8 * b : nullptr,
                                   out[b].scales, &out[b].d, &out[b].dmin);
      for (int j = 0; j < 8; ++j) {  // ref::requantize_k4
        uint8_t sc, m;
        ref::get_scale_min_k4(j, out[b].scales, &sc, &m);
        const float d = ref::half(out[b].d) * sc;
        const size_t sub = 8 * b + j;
        if (!d) codes_by_rule<32>(x + 32 * sub, rule_is[sub], rule_min[sub], kNmax, codes.data() + 32 * sub);
        else requantize<32, true>(x + 32 * sub, d, ref::half(out[b].dmin) * m, 0, kNmax, 0, codes.data() + 32 * sub);
      }
      if constexpr (kNmax == 15) ref::pack_q4_K(codes.data() + 256 * b, &out[b]);
      else ref::pack_q5_K(codes.data() + 256 * b, &out[b]);
    }
  }

  // Q2_K: the 16 sub-block searches of every super-block, L at a time.
  static void quantize_q2(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 16;
    ScratchBuffer<float> scales(nsub), mins(nsub), sw(nsub), sigma2(n / 256), rule_is(nsub), rule_min(nsub);
    ScratchBuffer<uint8_t> codes(n);
    if (imatrix) sigma2s<256>(x, n / 256, ref::q2_sigma2_of, sigma2.data());
    in_groups(nsub, [&](auto groups, size_t s0) {
      constexpr size_t G = decltype(groups)::value;
      F xs[G * 16], ws[G * 16], the_min[G], scale[G], is[G], mn[G];
      for (size_t g = 0; g < G; ++g) {
        const size_t sg = s0 + g * L, count = sub_count(nsub, sg);
        gather(x + 16 * sg, count, 16, xs + 16 * g);
        if (imatrix) imatrix_weights<16>(imatrix, sigma2.data(), 16, sg, count, xs + 16 * g, ws + 16 * g, sw.data());
        else for (size_t i = 0; i < 16; ++i) ws[16 * g + i] = xsimd::abs(xs[16 * g + i]);
      }
      if (imatrix) qkx<true, 16, G>(3, xs, ws, the_min, scale, is, mn, -0.9f, 0.05f, 36, false);
      else qkx<false, 16, G>(3, xs, ws, the_min, scale, is, mn, -0.5f, 0.1f, 15, true);
      scatter_rules<G>(nsub, s0, scale, the_min, is, mn, scales.data(), mins.data(), rule_is.data(), rule_min.data());
    });
    auto* out = static_cast<BlockQ2_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      ref::q2_finish_scales(&out[b], scales.data() + 16 * b, mins.data() + 16 * b, imatrix ? sw.data() + 16 * b : nullptr);
      const float dm_all = ref::half(out[b].d), mm_all = ref::half(out[b].dmin);
      for (int j = 0; j < 16; ++j) {  // ref::requantize_q2
        const float d = dm_all * (out[b].scales[j] & 0xF);
        const size_t sub = 16 * b + j;
        if (!d) codes_by_rule<16>(x + 16 * sub, rule_is[sub], rule_min[sub], 3, codes.data() + 16 * sub);
        else requantize<16, true>(x + 16 * sub, d, mm_all * (out[b].scales[j] >> 4), 0, 3, 0, codes.data() + 16 * sub);
      }
      ref::pack_2bit(codes.data() + 256 * b, out[b].qs);
    }
  }

  // Q6_K: the 16 sub-block searches of every super-block, L at a time.
  static void quantize_q6(const float* x, void* y, size_t n, const float* imatrix) {
    const size_t nsub = n / 16;
    ScratchBuffer<float> scales(nsub);
    ScratchBuffer<uint8_t> codes(n);
    qx_in_groups(32, x, nsub, scales.data(), codes.data(), [&](size_t sg, size_t count, const F* xs, F* ws) {
      if (imatrix) gather(imatrix + 16 * sg, count, 16, ws);
      else for (size_t i = 0; i < 16; ++i) ws[i] = xs[i] * xs[i];
    });
    auto* out = static_cast<BlockQ6_K*>(y);
    for (size_t b = 0; b < n / 256; ++b) {
      if (!ref::q6_finish_scales(&out[b], scales.data() + 16 * b)) continue;
      for (int j = 0; j < 16; ++j) {  // ref::q6_finish's requantization
        const float d = ref::half(out[b].d) * out[b].scales[j];
        if (!d) continue;
        requantize<16, false>(x + 256 * b + 16 * j, d, 0.0f, -32, 31, 32, codes.data() + 256 * b + 16 * j);
      }
      ref::pack_q6_K(reinterpret_cast<const int8_t*>(codes.data() + 256 * b), &out[b]);
    }
  }
};

WQ_END_ISA_NAMESPACE
}  // namespace wq::simd
