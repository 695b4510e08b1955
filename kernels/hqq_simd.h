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

  static F q_of(F w, F inv, F z, F qmax) { return Ops::clamp(Ops::rint((w * inv) + z), F(0.0f), qmax) + F(0.0f); }

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
      const F q = Ops::clamp(Ops::rint(wi + z), F(0.0f), qmax) + F(0.0f);
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
    if (!(m < skip_below)) {
      const F pm1(pm1_s), beta(beta_s);
      for (size_t k = 0; k < kAcc; ++k) zs[k] = F(0.0f);
      for_lanes(w, n, [&](F x, M valid, size_t k) {
        const F q = q_of(x, inv, z, qmax);
        const F e = x - ((q - z) * s);
        zs[k] = zs[k] + xsimd::select(valid, q - ((x - shrink(e, pm1, beta)) * inv), F(0.0f));
      });
    }
    *z_new = reduce(zs) / float(n);
    return reduce(err);
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

WQ_END_ISA_NAMESPACE
}  // namespace wq::simd

// The whole of an ISA's hqq_<isa>.cpp: its two HQQ kernels on xsimd's `arch`, inside the
// ISA's namespace (declared in kernels/kernel_tables.h).
#define WQ_DEFINE_SIMD_HQQ(arch)                                                                        \
  namespace wq {                                                                                        \
  WQ_BEGIN_ISA_NAMESPACE                                                                                \
  void hqq_solve_blocks(const float* w, size_t nblocks, size_t block, const HqqParams& hp,              \
                        const float* inv_scale, float* zero, uint8_t* codes, int* steps) {              \
    hqq_solve_blocks_body<simd::HqqSimd<arch>>(w, nblocks, block, hp, inv_scale, zero, codes, steps);  \
  }                                                                                                     \
  void hqq_step_blocks(const float* w, size_t nblocks, size_t block, const HqqParams& hp, float beta,   \
                       const float* inv_scale, const float* zero_in, float* zero_out, float* err_sum) { \
    hqq_step_blocks_body<simd::HqqSimd<arch>>(w, nblocks, block, hp, beta, inv_scale, zero_in, zero_out, \
                                              err_sum);                                                  \
  }                                                                                                     \
  WQ_END_ISA_NAMESPACE                                                                                  \
  }
