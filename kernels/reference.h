// Scalar building blocks that define what every kernel computes. The scalar table uses
// them element by element; SIMD tables use the per-block ones (block_codec, the ggml
// block headers) as they are, so that the per-block parameters are the same bits on
// every ISA by construction, and re-implement the per-element ones lane-wise.
//
// Everything here is compiled with -ffp-contract=off: no a*b+c is fused.
#pragma once

#include "kernels/isa_namespace.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace wq::ref {
WQ_BEGIN_ISA_NAMESPACE

// <cmath>'s functions live in namespace std: in an ISA's file built at -O0 they are
// emitted out of line, outside the ISA's namespace (kernels/isa_namespace.h), and the
// linker could keep that copy for everyone. These call the same builtins from inside it.
inline float abs_f(float x) { return __builtin_fabsf(x); }
inline float rint_f(float x) { return __builtin_nearbyintf(x); }  // to nearest even, no inexact flag
inline float round_f(float x) { return __builtin_roundf(x); }     // ties away from zero (C roundf)
inline float trunc_f(float x) { return __builtin_truncf(x); }

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Exact f16 -> f32. NaN keeps sign and payload with the quiet bit set (as F16C and
// AArch64 FCVT do).
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u));
  if (exp == 0) {
    // A denormal is mant * 2^-24, exact in f32.
    const float v = float(mant) * 5.9604644775390625e-08f;
    return bits_f32(sign | f32_bits(v));
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

// f32 -> f16, round to nearest even; NaN -> sign | 0x7E00, as llama.cpp's portable
// GGML_FP32_TO_FP16 does.
inline uint16_t f32_to_f16(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u;
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to Inf
  if (ax >= 0x38800000u) {                        // normal half
    ax -= 0x38000000u;                            // rebias 127 -> 15
    ax += 0xfffu + ((ax >> 13) & 1u);             // round to nearest even
    return sign | uint16_t(ax >> 13);
  }
  // Denormal half (or zero): |f| * 2^24 is exact; rint rounds to even.
  const float v = rint_f(bits_f32(ax) * 16777216.0f);
  return sign | uint16_t(v);
}

inline float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

// Clamp with NaN going to lo. Comparisons are written so that a SIMD select on the same
// predicate gives the same lane result.
inline float clamp_nan_lo(float x, float lo, float hi) {
  const float a = (x >= lo) ? x : lo;
  return (a <= hi) ? a : hi;
}

// Canonical +0 for a zero statistic, so that -0 vs +0 never depends on element order.
inline float canon_zero(float x) { return x == 0.0f ? 0.0f : x; }

// A float sum widened for output, a NaN sum as the canonical quiet NaN: when two NaNs
// meet in an addition, which one survives depends on the operand order the compiler
// picks and on the ISA, so a NaN's sign and payload are not part of the result.
inline double sum_result(float s) { return s == s ? double(s) : __builtin_nan(""); }

// A NaN as the canonical quiet NaN (+, 0x7FC00000), for the same reason: the sign of a
// NaN made by an invalid operation depends on the ISA (x86 makes -NaN, Arm +NaN) and on
// whether the compiler negates before or after (-a * b vs FNMUL).
inline float canon_nan(float x) { return x == x ? x : bits_f32(0x7fc00000u); }

inline int qmax_of(int bits) { return (1 << bits) - 1; }

// The codec with NaN parameters made canonical. Where a scale and a zero are both NaN,
// which one w_hat = code * s + z (or (code - z) * s) propagates depends on operand
// order; with one canonical NaN it does not.
inline BlockCodec canon_nan_params(BlockCodec c) {
  c.scale = canon_nan(c.scale);
  c.zero = canon_nan(c.zero);
  c.inv_scale = canon_nan(c.inv_scale);
  return c;
}

// Per-block parameters from the block's min and max (NaN-free statistics as minmax
// returns them). This one function serves every ISA.
inline BlockCodec block_codec(Scheme scheme, int bits, float mn, float mx, bool round_zero) {
  BlockCodec c{scheme, bits, 0.0f, 0.0f, 0.0f};
  switch (scheme) {
    case Scheme::MnnSym: {
      const float absmax = abs_f(mn) > abs_f(mx) ? abs_f(mn) : abs_f(mx);
      c.scale = absmax / float((1 << (bits - 1)) - 1);
      break;
    }
    case Scheme::MnnAsym:
      c.scale = (mx - mn) / float(qmax_of(bits));
      c.zero = mn;
      break;
    case Scheme::Affine: {
      const float d = mx - mn;
      float inv = (1.0f / d) * float(qmax_of(bits));
      if (d <= 1e-4f) inv = 1.0f;
      if (!(inv <= 2e4f)) inv = 2e4f;  // clamp(max=2e4); Inf and NaN clamp too
      float z = -mn * inv;
      if (round_zero) z = rint_f(z);
      c.inv_scale = inv;
      c.zero = z;
      c.scale = 1.0f / inv;
      break;
    }
  }
  // Only non-finite statistics (an Inf weight) give a NaN parameter; it is stored, so
  // its bits must not depend on the ISA.
  return canon_nan_params(c);
}

// Scheme::Affine's parameters of blocks [b0, nblocks) of x, each from the caller's minmax
// (the ISA's own: every table's minmax gives the same bits) through block_codec.
template <class MinMax>
inline void affine_params_each(const float* x, size_t b0, size_t nblocks, size_t block, int bits, bool round_zero,
                               float* scale, float* zero, float* inv_scale, const MinMax& minmax) {
  for (size_t b = b0; b < nblocks; ++b) {
    float mn, mx;
    minmax(x + b * block, block, &mn, &mx);
    const BlockCodec c = block_codec(Scheme::Affine, bits, mn, mx, round_zero);
    scale[b] = c.scale;
    zero[b] = c.zero;
    inv_scale[b] = c.inv_scale;
  }
}

// sq_err's results from its 16 err partials, 16 ref partials and max, the i-th of
// those 33 at p[i * stride]: the reference's tree, sum_result, and the max as kept.
inline RowError partials_error(const float* p, size_t stride) {
  float pe[16], pr[16];
  for (size_t i = 0; i < 16; ++i) {
    pe[i] = p[i * stride];
    pr[i] = p[(16 + i) * stride];
  }
  for (int w = 8; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) {
      pe[j] += pe[j + w];
      pr[j] += pr[j + w];
    }
  }
  return {sum_result(pe[0]), sum_result(pr[0]), p[32 * stride]};
}

// sq_err's results from the partial sums ColumnQuantJob::partials keeps for column c
// (plane i of column c at column_partial(c, i): 16 floats apart).
inline RowError column_error(const float* partials, size_t c) { return partials_error(partials + column_partial(c, 0), 16); }

// MNN's threshold: "s <= 1e-6" compares a float with a double literal.
inline bool mnn_scale_is_zero(float s) { return double(s) <= 1e-6; }

// One element to its code, per scheme. Ties: roundf (away from zero) for the MNN
// schemes, rint (to even) for Affine, as the references compute.
inline uint8_t quantize_one(float w, const BlockCodec& c) {
  switch (c.scheme) {
    case Scheme::MnnSym: {
      const int half = 1 << (c.bits - 1);
      if (mnn_scale_is_zero(c.scale)) return uint8_t(half);
      const float q = clamp_nan_lo(round_f(w / c.scale), float(-half), float(half - 1));
      return uint8_t(int(q) + half);
    }
    case Scheme::MnnAsym: {
      if (mnn_scale_is_zero(c.scale)) return 0;
      const float q = clamp_nan_lo(round_f((w - c.zero) / c.scale), 0.0f, float(qmax_of(c.bits)));
      return uint8_t(int(q));
    }
    case Scheme::Affine: {
      const float t = (w * c.inv_scale) + c.zero;
      const float q = clamp_nan_lo(rint_f(t), 0.0f, float(qmax_of(c.bits)));
      return uint8_t(int(q));
    }
  }
  return 0;
}

inline float dequantize_one(uint8_t code, const BlockCodec& c) {
  switch (c.scheme) {
    case Scheme::MnnSym:
      return float(int(code) - (1 << (c.bits - 1))) * c.scale;
    case Scheme::MnnAsym:
      return (float(code) * c.scale) + c.zero;
    case Scheme::Affine:
      return (float(code) - c.zero) * c.scale;
  }
  return 0.0f;
}

// Truncation toward zero as C's (int8_t)float cast does for in-range values; NaN -> 0,
// out of range saturates. Only used by the ggml block formulas.
inline int trunc_sat(float x, int lo, int hi) {
  if (!(x == x)) return 0;
  const float t = trunc_f(x);
  if (t < float(lo)) return lo;
  if (t > float(hi)) return hi;
  return int(t);
}

WQ_END_ISA_NAMESPACE
}  // namespace wq::ref
