// The HQQ solver step, one element at a time: the oracle every SIMD version follows
// operation for operation. HQQ (mobiusml/hqq optimize_weights_proximal), per block with
// inverse scale `inv` and zero `z`:
//   q    = clip(rint(fl(w * inv) + z), 0, qmax)
//   w_r  = (q - z) * s           s = fl(1 / inv), the scale stored in the file
//   e    = w - w_r;            err = mean |e|
//   w_e  = sign(e) * max(|e| - |e|^(p-1) / beta, 0)      (lp shrinkage)
//   z'   = mean(q - (w - w_e) * inv)
// The reference divides by inv for w_r; wquant multiplies by the stored scale, so the
// error the solver minimises is the error of the w_hat a loader reconstructs (and the
// step has no division). Where the shrinkage is zero, q - (w - 0) * inv is q - fl(w * inv),
// the product the quantization already made.
// Means are sums in 16 partials (element i to partial i % 16) reduced in a fixed tree,
// then divided by n. |e|^(p-1) is exp((p-1) * log|e|) from the polynomials below, built
// from IEEE +, -, *, / and bit operations only, so every ISA gets the same bits.
#pragma once

#include "kernels/isa_namespace.h"

#include <cmath>
#include <cstdint>

#include "kernels/kernels.h"
#include "kernels/reference.h"

namespace wq::ref {
WQ_BEGIN_ISA_NAMESPACE

// ln(a) for a > 0 finite (denormals included); ln(0) = -Inf. About 1 ulp.
inline float hqq_log(float a) {
  if (a == 0.0f) return -INFINITY;
  int bias = 0;
  if (a < 1.17549435e-38f) {  // denormal: scale into the normal range first
    a = a * 16777216.0f;
    bias = -24;
  }
  const uint32_t u = f32_bits(a);
  int k = int((u >> 23) & 0xffu) - 127 + bias;
  float m = bits_f32((u & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  if (m > 1.41421356f) {
    m = m * 0.5f;
    k = k + 1;
  }
  const float f = m - 1.0f;
  const float s = f / (2.0f + f);
  const float s2 = s * s;
  // 2 atanh(s) = 2s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9)
  const float poly = 1.0f + s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * 0.111111111f)));
  const float lm = (2.0f * s) * poly;
  const float kf = float(k);
  return (kf * 0.693145752f) + ((kf * 1.42860677e-06f) + lm);
}

// e^x, x finite or +-Inf; underflow gives 0, overflow +Inf. About 2 ulp.
inline float hqq_exp(float x) {
  if (!(x < 88.0f)) return x != x ? x : INFINITY;
  if (x < -87.0f) return 0.0f;
  const float n = rint_f(x * 1.44269504f);
  const float r = (x - (n * 0.693145752f)) - (n * 1.42860677e-06f);
  const float poly =
      1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f + r * (0.00833333377f + r * 0.00138888892f)))));
  const int ni = int(n);
  // 2^n as bits; n in [-126, 127] here.
  return poly * bits_f32(uint32_t(ni + 127) << 23);
}

// The shrunk residual for one element: sign(e) * max(|e| - |e|^(p-1) / beta, 0).
inline float hqq_shrink(float e, float pm1, float beta) {
  const float a = abs_f(e);
  const float pw = hqq_exp(pm1 * hqq_log(a));
  float t = a - (pw / beta);
  t = t > 0.0f ? t : 0.0f;
  return e < 0.0f ? -t : t;
}

// |e| below this, for every element of a block, makes the shrinkage exactly zero:
// |e| - |e|^(p-1)/beta < 0  <=>  |e| < beta^(-1/(2-p)). Half of it leaves room for the
// polynomials' error; skipping then gives the bytes computing would.
inline float hqq_skip_threshold(float p, float beta) {
  return float(0.5 * __builtin_pow(double(beta), -1.0 / (2.0 - double(p))));
}

inline float sum16(float* part) {
  for (int w = 8; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) part[j] += part[j + w];
  }
  return part[0];
}

// + 0.0f makes a -0 code +0, so no sum below ever depends on a zero's sign.
inline float hqq_q(float w, float inv, float z, float qmax) {
  return clamp_nan_lo(rint_f((w * inv) + z), 0.0f, qmax) + 0.0f;
}

// One step for one block: returns sum |w - w_r|, sets *sq to sum (w - w_r)^2, *emax_out
// to max |w - w_r| and *z_new to the updated zero. One pass where the shrinkage is
// provably zero (emax below skip_below), which is every block of an LLM's weights; a
// second pass otherwise.
inline float hqq_block_step(const float* w, size_t n, float inv, float z, float qmax, float pm1, float beta,
                            float skip_below, float* z_new, float* sq, float* emax_out) {
  const float s = 1.0f / inv;
  float perr[16] = {}, psq[16] = {}, pz[16] = {};
  float emax = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    const float wi = w[i] * inv;
    const float q = clamp_nan_lo(rint_f(wi + z), 0.0f, qmax) + 0.0f;
    const float e = w[i] - ((q - z) * s);
    const float a = abs_f(e);
    perr[i % 16] += a;
    psq[i % 16] += e * e;
    pz[i % 16] += q - wi;
    emax = a > emax ? a : emax;
  }
  *sq = sum16(psq);
  *emax_out = emax;
  if (!(emax < skip_below)) {
    for (float& p : pz) p = 0.0f;
    for (size_t i = 0; i < n; ++i) {
      const float q = hqq_q(w[i], inv, z, qmax);
      const float e = w[i] - ((q - z) * s);
      pz[i % 16] += q - ((w[i] - hqq_shrink(e, pm1, beta)) * inv);
    }
  }
  *z_new = sum16(pz) / float(n);
  return sum16(perr);
}

// sum (w - w_r)^2 for zero z (the candidate the solver's last update made).
inline float hqq_block_sq(const float* w, size_t n, float inv, float z, float qmax) {
  const float s = 1.0f / inv;
  float psq[16] = {};
  for (size_t i = 0; i < n; ++i) {
    const float e = w[i] - ((hqq_q(w[i], inv, z, qmax) - z) * s);
    psq[i % 16] += e * e;
  }
  return sum16(psq);
}

inline void hqq_codes(const float* w, size_t n, float inv, float z, float qmax, uint8_t* codes) {
  for (size_t i = 0; i < n; ++i) codes[i] = uint8_t(int(hqq_q(w[i], inv, z, qmax)));
}

WQ_END_ISA_NAMESPACE
}  // namespace wq::ref
