// The HQQ step for every SIMD ISA, lane for lane what kernels/hqq_reference.h does one
// element at a time: the same operations in the same order (IEEE division, rint, no FMA),
// element i of a block summed into partial i % 16 (16 / L accumulators of L lanes), the
// partials reduced by ref::sum16. Padding lanes of a block's last vector add +0.
#pragma once

#include "kernels/isa_namespace.h"

#include <cmath>
#include <cstring>

#include "kernels/hqq_reference.h"
#include "kernels/hqq_solver.h"
#include "kernels/kernel_tables.h"
#include "kernels/simd_arch.h"

namespace wq::simd {
WQ_BEGIN_ISA_NAMESPACE

template <class A>
struct HqqSimd {
  using Ops = ArchOps<A>;
  using F = xsimd::batch<float, A>;
  using I = xsimd::batch<int32_t, A>;
  using M = xsimd::batch_bool<float, A>;
  static constexpr size_t L = F::size;
  static constexpr size_t kAcc = 16 / L;

  static F bits(uint32_t u) { return F(ref::bits_f32(u)); }
  static F neg(F x) { return x ^ F(-0.0f); }  // exact, -0 included
  static F fabs(F x) { return x & bits(0x7fffffffu); }  // clears the sign bit only

  // Lanes [0, n) of p and whether each lane is one of them.
  static F load_tail(const float* p, size_t n, M* valid) {
    alignas(64) float buf[L] = {};
    alignas(64) float flag[L] = {};
    std::memcpy(buf, p, n * sizeof(float));
    for (size_t j = 0; j < n; ++j) flag[j] = 1.0f;
    *valid = F::load_aligned(flag) != F(0.0f);
    return F::load_aligned(buf);
  }

  static F q_of(F w, F inv, F z, F qmax) { return Ops::clamp0(Ops::rint((w * inv) + z), qmax); }

  static F log_(F a) {
    const M zero = a == F(0.0f);
    const M den = a < F(1.17549435e-38f);
    const F a2 = xsimd::select(den, a * F(16777216.0f), a);
    const I u = xsimd::bitwise_cast<I>(a2);
    I k = ((u >> 23) & I(0xff)) - I(127) + select_i32<A>(xsimd::bool_cast(den), I(-24), I(0));
    F m = xsimd::bitwise_cast<F>((u & I(0x007fffff)) | I(0x3f800000));
    const M big = m > F(1.41421356f);
    m = xsimd::select(big, m * F(0.5f), m);
    k = select_i32<A>(xsimd::bool_cast(big), k + I(1), k);
    const F f = m - F(1.0f);
    const F s = Ops::div(f, F(2.0f) + f);
    const F s2 = s * s;
    const F poly = F(1.0f) + s2 * (F(0.333333333f) + s2 * (F(0.2f) + s2 * (F(0.142857143f) + s2 * F(0.111111111f))));
    const F lm = (F(2.0f) * s) * poly;
    const F kf = Ops::to_float(k);
    const F r = (kf * F(0.693145752f)) + ((kf * F(1.42860677e-06f)) + lm);
    return xsimd::select(zero, F(-INFINITY), r);
  }

  static F exp_(F x) {
    const M over = !(x < F(88.0f));
    const M under = x < F(-87.0f);
    const F xc = xsimd::select(over || under, F(0.0f), x);
    const F n = Ops::rint(xc * F(1.44269504f));
    const F r = (xc - (n * F(0.693145752f))) - (n * F(1.42860677e-06f));
    const F poly = F(1.0f) + r * (F(1.0f) + r * (F(0.5f) + r * (F(0.166666672f) + r * (F(0.0416666679f) +
                                                  r * (F(0.00833333377f) + r * F(0.00138888892f))))));
    const F scale = xsimd::bitwise_cast<F>((Ops::to_int(n) + I(127)) << 23);
    const F res = poly * scale;
    return xsimd::select(under, F(0.0f), xsimd::select(over, F(INFINITY), res));
  }

  static F shrink(F e, F pm1, F beta) {
    const F a = fabs(e);
    const F pw = exp_(pm1 * log_(a));
    F t = a - Ops::div(pw, beta);
    t = xsimd::select(t > F(0.0f), t, F(0.0f));
    return xsimd::select(e < F(0.0f), neg(t), t);
  }

  template <class Body>
  static void for_lanes(const float* w, size_t n, Body&& body) {
    size_t i = 0, v = 0;
    const M all = F(0.0f) == F(0.0f);
    for (; i + L <= n; i += L, ++v) body(F::load_unaligned(w + i), all, v % kAcc);
    if (i < n) {
      M valid;
      const F x = load_tail(w + i, n - i, &valid);
      body(x, valid, v % kAcc);
    }
  }

  static float reduce(const F* acc) {
    alignas(64) float part[16];
    for (size_t k = 0; k < kAcc; ++k) acc[k].store_aligned(part + k * L);
    return ref::sum16(part);
  }

  static float step(const float* w, size_t n, float inv_s, float z_s, float qmax_s, float pm1_s, float beta_s,
                    float skip_below, float* z_new, float* sq, float* emax_out) {
    const F inv(inv_s), z(z_s), qmax(qmax_s), s(1.0f / inv_s);
    F err[kAcc], sqa[kAcc], zs[kAcc];
    for (size_t k = 0; k < kAcc; ++k) err[k] = sqa[k] = zs[k] = F(0.0f);
    F emax(0.0f);
    for_lanes(w, n, [&](F x, M valid, size_t k) {
      const F wi = x * inv;
      const F q = Ops::clamp0(Ops::rint(wi + z), qmax);
      const F e = xsimd::select(valid, x - ((q - z) * s), F(0.0f));
      const F a = fabs(e);
      err[k] = err[k] + a;
      sqa[k] = sqa[k] + e * e;
      zs[k] = zs[k] + xsimd::select(valid, q - wi, F(0.0f));
      emax = xsimd::select(a > emax, a, emax);
    });
    *sq = reduce(sqa);
    alignas(64) float lanes[L];
    emax.store_aligned(lanes);
    float m = 0.0f;
    for (size_t j = 0; j < L; ++j) m = lanes[j] > m ? lanes[j] : m;
    *emax_out = m;
    *z_new = (m < skip_below ? reduce(zs) : shrunk_zero_sum(w, n, inv_s, z_s, 1.0f / inv_s, qmax, pm1_s, beta_s)) / float(n);
    return reduce(err);
  }

  // The zero update's sum where the shrinkage is active (the step's second pass).
  static float shrunk_zero_sum(const float* w, size_t n, float inv_s, float z_s, float s_s, F qmax, float pm1_s,
                               float beta_s) {
    const F inv(inv_s), z(z_s), s(s_s), pm1(pm1_s), beta(beta_s);
    F zs[kAcc];
    for (size_t k = 0; k < kAcc; ++k) zs[k] = F(0.0f);
    for_lanes(w, n, [&](F x, M valid, size_t k) {
      const F q = q_of(x, inv, z, qmax);
      const F e = x - ((q - z) * s);
      zs[k] = zs[k] + xsimd::select(valid, q - ((x - shrink(e, pm1, beta)) * inv), F(0.0f));
    });
    return reduce(zs);
  }

  // ---- 16 blocks side by side -------------------------------------------------------
  // The per-block solver (hqq_solve_blocks_body) spends most of a step on reductions: a
  // block's three sums and its max each end in a store and a scalar tree. Solving 16
  // blocks together, block g's state lives in lane g % L of vector g / L, and a step's 16
  // partial-sum vectors are folded by transposing shuffles (ArchOps::sum_lanes, in
  // ref::sum16's order, so every sum has the bits of the per-block path), the decisions
  // (best so far, early stop) are lane masks, and only the rare shrinkage pass and the
  // final candidate check go block by block. A block's trajectory is untouched: lanes
  // that stopped are masked out and cost no work.
  static constexpr size_t kGroup = 16;
  static constexpr size_t kVec = kGroup / L;

  // ref::sum16's stages that add whole accumulators (partial i and i + 8, then i + 4 ...
  // while they are in different vectors): one vector of L partials left for sum_lanes.
  static F fold_acc(const F* acc) {
    if constexpr (kAcc == 1) {
      return acc[0];
    } else if constexpr (kAcc == 2) {
      return acc[0] + acc[1];
    } else {
      static_assert(kAcc == 4, "16 partials in vectors of 4, 8 or 16 lanes");
      return (acc[0] + acc[2]) + (acc[1] + acc[3]);
    }
  }

  // One step's shrinkage-free sums for one block, as step() accumulates them. Whole
  // vectors skip step()'s lane masks (all lanes valid, the select is the identity), and
  // the max is max_keep ((a > emax) ? a : emax exactly, one instruction): the hot loop
  // of the solver, 16 operations a vector.
  static void block_sums(const float* w, size_t n, float inv_s, float z_s, float s_s, F qmax, F* sq_out, F* zs_out,
                         F* emax_out) {
    const F inv(inv_s), z(z_s), s(s_s);
    F sqa[kAcc], zs[kAcc];
    for (size_t k = 0; k < kAcc; ++k) sqa[k] = zs[k] = F(0.0f);
    F emax(0.0f);
    size_t i = 0, v = 0;
    for (; i + L <= n; i += L, ++v) {
      const size_t k = v % kAcc;
      const F x = F::load_unaligned(w + i);
      const F wi = x * inv;
      const F q = Ops::clamp0(Ops::rint(wi + z), qmax);
      const F e = x - ((q - z) * s);
      sqa[k] = sqa[k] + e * e;
      zs[k] = zs[k] + (q - wi);
      emax = Ops::max_keep(fabs(e), emax);
    }
    if (i < n) {
      const size_t k = v % kAcc;
      M valid;
      const F x = load_tail(w + i, n - i, &valid);
      const F wi = x * inv;
      const F q = Ops::clamp0(Ops::rint(wi + z), qmax);
      const F e = xsimd::select(valid, x - ((q - z) * s), F(0.0f));
      sqa[k] = sqa[k] + e * e;
      zs[k] = zs[k] + xsimd::select(valid, q - wi, F(0.0f));
      emax = Ops::max_keep(fabs(e), emax);
    }
    *sq_out = fold_acc(sqa);
    *zs_out = fold_acc(zs);
    *emax_out = emax;
  }

  static uint32_t lane_bits(const M* m) {
    uint32_t bits = 0;
    for (size_t v = 0; v < kVec; ++v) bits |= Ops::mask_bits(m[v]) << (v * L);
    return bits;
  }

  // hqq_solve_blocks_body's loop for nb <= 16 blocks at w (same zeros, codes and steps).
  static void solve_group(const float* w, size_t nb, size_t block, const HqqParams& hp, HqqSkip& th,
                          const float* inv_scale, float* zero, uint8_t* codes_out, int* steps) {
    const float qmax_s = float((1 << hp.bits) - 1);
    const F qmax(qmax_s);
    alignas(64) float inv[kGroup], sc[kGroup], zl[kGroup], flag[kGroup];
    for (size_t g = 0; g < kGroup; ++g) {
      inv[g] = g < nb ? inv_scale[g] : 1.0f;
      sc[g] = 1.0f / inv[g];  // the scale step() uses
      zl[g] = g < nb ? zero[g] : 0.0f;
      flag[g] = g < nb ? 1.0f : 0.0f;
    }
    F z[kVec], best_z[kVec], best[kVec], st[kVec], done[kVec];
    M active[kVec];
    for (size_t v = 0; v < kVec; ++v) {
      z[v] = best_z[v] = F::load_aligned(zl + v * L);
      best[v] = F(INFINITY);
      st[v] = done[v] = F(0.0f);
      active[v] = F::load_aligned(flag + v * L) != F(0.0f);
    }
    const F n_f = F(float(block));
    float beta = hp.beta;
    for (int i = 0; i < hp.max_steps; ++i) {
      const uint32_t live = lane_bits(active);
      if (!live) break;
      for (size_t v = 0; v < kVec; ++v) z[v].store_aligned(zl + v * L);
      F sq_p[kGroup], zs_p[kGroup], em_p[kGroup];
      for (size_t g = 0; g < kGroup; ++g) {
        if (live >> g & 1u) {
          block_sums(w + g * block, block, inv[g], zl[g], sc[g], qmax, &sq_p[g], &zs_p[g], &em_p[g]);
        } else {
          sq_p[g] = zs_p[g] = em_p[g] = F(0.0f);
        }
      }
      F sq[kVec], zs[kVec], emax[kVec];
      M shrink[kVec];
      const F skip_i(th.skip[size_t(i)]);
      for (size_t v = 0; v < kVec; ++v) {
        sq[v] = Ops::sum_lanes(sq_p + v * L);
        zs[v] = Ops::sum_lanes(zs_p + v * L);
        emax[v] = Ops::template reduce_lanes<false>(em_p + v * L);  // |e| >= +0, no NaN: order-free
        shrink[v] = active[v] && !(emax[v] < skip_i);
      }
      if (const uint32_t sh = lane_bits(shrink)) {  // the shrinkage is active: block by block
        alignas(64) float zsum[kGroup];
        for (size_t v = 0; v < kVec; ++v) zs[v].store_aligned(zsum + v * L);
        for (size_t g = 0; g < kGroup; ++g) {
          if (sh >> g & 1u) {
            zsum[g] = shrunk_zero_sum(w + g * block, block, inv[g], zl[g], sc[g], qmax, hp.p - 1.0f, beta);
          }
        }
        for (size_t v = 0; v < kVec; ++v) zs[v] = F::load_aligned(zsum + v * L);
      }
      const F rest = F(th.rest[size_t(i)]), step_i = F(float(i)), done_i = F(float(i + 1));
      for (size_t v = 0; v < kVec; ++v) {
        const F z_new = Ops::div(zs[v], n_f);
        const M better = active[v] && (sq[v] < best[v]);
        best[v] = xsimd::select(better, sq[v], best[v]);
        best_z[v] = xsimd::select(better, z[v], best_z[v]);
        st[v] = xsimd::select(better, step_i, st[v]);
        done[v] = xsimd::select(active[v], done_i, done[v]);
        const M go_on = active[v] && !((z_new == z[v]) && (emax[v] < rest));
        z[v] = xsimd::select(go_on, z_new, z[v]);
        active[v] = go_on;
      }
      beta = beta * hp.kappa;
    }
    alignas(64) float bz[kGroup], bs[kGroup], stf[kGroup], df[kGroup];
    for (size_t v = 0; v < kVec; ++v) {
      z[v].store_aligned(zl + v * L);
      best_z[v].store_aligned(bz + v * L);
      best[v].store_aligned(bs + v * L);
      st[v].store_aligned(stf + v * L);
      done[v].store_aligned(df + v * L);
    }
    for (size_t g = 0; g < nb; ++g) {
      const float* x = w + g * block;
      float bzg = bz[g];
      int stg = int(stf[g]);
      if (df[g] > 0.0f && !(bzg == zl[g])) {  // the last update's zero, not yet evaluated
        if (sq(x, block, inv[g], zl[g], qmax_s) < bs[g]) {
          bzg = zl[g];
          stg = int(df[g]);
        }
      }
      zero[g] = bzg;
      steps[g] = stg;
      codes(x, block, inv[g], bzg, qmax_s, codes_out + g * block);
    }
  }

  static float sq(const float* w, size_t n, float inv_s, float z_s, float qmax_s) {
    const F inv(inv_s), z(z_s), qmax(qmax_s), s(1.0f / inv_s);
    F sqa[kAcc];
    for (size_t k = 0; k < kAcc; ++k) sqa[k] = F(0.0f);
    for_lanes(w, n, [&](F x, M valid, size_t k) {
      const F e = xsimd::select(valid, x - ((q_of(x, inv, z, qmax) - z) * s), F(0.0f));
      sqa[k] = sqa[k] + e * e;
    });
    return reduce(sqa);
  }

  static void codes(const float* w, size_t n, float inv_s, float z_s, float qmax_s, uint8_t* out) {
    const F inv(inv_s), z(z_s), qmax(qmax_s);
    size_t i = 0;
    for (; i + L <= n; i += L) Ops::store_u8(out + i, Ops::to_int(q_of(F::load_unaligned(w + i), inv, z, qmax)));
    if (i < n) {
      M valid;
      alignas(64) uint8_t buf[L];
      Ops::store_u8(buf, Ops::to_int(q_of(load_tail(w + i, n - i, &valid), inv, z, qmax)));
      std::memcpy(out + i, buf, n - i);
    }
  }
};

// hqq_solve_blocks_body's results, 16 blocks at a time.
template <class A>
void hqq_solve_blocks_grouped(const float* w, size_t nblocks, size_t block, const HqqParams& hp, const float* inv_scale,
                              float* zero, uint8_t* codes, int* steps) {
  using H = HqqSimd<A>;
  HqqSkip th(hp);
  for (size_t b = 0; b < nblocks; b += H::kGroup) {
    const size_t nb = nblocks - b < H::kGroup ? nblocks - b : H::kGroup;
    H::solve_group(w + b * block, nb, block, hp, th, inv_scale + b, zero + b, codes + b * block, steps + b);
  }
}

WQ_END_ISA_NAMESPACE
}  // namespace wq::simd

// The whole of an ISA's hqq_<isa>.cpp: its two HQQ kernels on xsimd's `arch`, inside the
// ISA's namespace (declared in kernels/kernel_tables.h).
#define WQ_DEFINE_SIMD_HQQ(arch)                                                                        \
  namespace wq {                                                                                        \
  WQ_BEGIN_ISA_NAMESPACE                                                                                \
  void hqq_solve_blocks(const float* w, size_t nblocks, size_t block, const HqqParams& hp,              \
                        const float* inv_scale, float* zero, uint8_t* codes, int* steps) {              \
    simd::hqq_solve_blocks_grouped<arch>(w, nblocks, block, hp, inv_scale, zero, codes, steps);        \
  }                                                                                                     \
  void hqq_step_blocks(const float* w, size_t nblocks, size_t block, const HqqParams& hp, float beta,   \
                       const float* inv_scale, const float* zero_in, float* zero_out, float* err_sum) { \
    hqq_step_blocks_body<simd::HqqSimd<arch>>(w, nblocks, block, hp, beta, inv_scale, zero_in, zero_out, \
                                              err_sum);                                                  \
  }                                                                                                     \
  WQ_END_ISA_NAMESPACE                                                                                  \
  }
