// One body for every SIMD kernel table, templated on the xsimd arch tag. Each ISA file
// (kernels/x86/kernels_avx2.cpp, kernels/x86/kernels_avx512.cpp, kernels/arm/kernels_neon.cpp)
// builds its table from SimdKernels<Arch> through the registry and nothing else; the few operations xsimd 8.1
// lacks come from ArchOps<Arch> (kernels/simd_arch.h).
//
// How the bytes stay equal to the scalar reference (kernels/kernels_scalar.cpp):
//   - every per-element formula is the reference's, lane by lane, with the same IEEE
//     operations in the same order (no FMA: everything is built with -ffp-contract=off,
//     and no intrinsic here fuses; no approximate reciprocal);
//   - per-block parameters come from the reference's own scalar functions
//     (ref::block_codec, ref::f32_to_f16, ...), except in quantize_rows' groups of L
//     blocks, where codec_lanes computes ref::block_codec's formulas lane by lane,
//     operation for operation;
//   - quantize_rows runs the stages of kernels/fused_rows.h (which the scalar table
//     uses) per row with the blocks side by side instead of block by block: same
//     parameters, same formulas, so the same bytes;
//   - tails go through the same lanes from a zero- or NaN-padded copy, never through
//     a different formula;
//   - reductions whose result depends on order only through the sign of a zero
//     (min, max) canonicalise or fix up that sign exactly as the reference defines it;
//     sq_err keeps the 16 partial sums of kernels.h.
#pragma once

#include "kernels/isa_namespace.h"

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include "kernels/fused_rows.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_kquant_dequant_simd.h"
#include "kernels/ggml_kquant_simd.h"
#include "kernels/ggml_row_reference.h"
#include "kernels/kernel_tables.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/scratch_buffer.h"
#include "kernels/simd_arch.h"

namespace wq::simd {
WQ_BEGIN_ISA_NAMESPACE

template <class A>
struct Prims {
  using Ops = ArchOps<A>;
  using F = xsimd::batch<float, A>;
  using I = xsimd::batch<int32_t, A>;
  using U = xsimd::batch<uint32_t, A>;
  using U8 = xsimd::batch<uint8_t, A>;
  using U16 = xsimd::batch<uint16_t, A>;
  using U64 = xsimd::batch<uint64_t, A>;
  static constexpr size_t L = F::size;  // float lanes
  static_assert(16 % L == 0 && 32 % L == 0, "lane count must divide 16");

  // ---- helpers ------------------------------------------------------------------------

  static F bits(uint32_t u) { return F(ref::bits_f32(u)); }

  // The n < L floats at p in the low lanes, `pad` in the others.
  static F load_pad(const float* p, size_t n, float pad) {
    alignas(64) float buf[L];
    for (size_t j = 0; j < L; ++j) buf[j] = pad;
    std::memcpy(buf, p, n * sizeof(float));
    return F::load_aligned(buf);
  }
  static void store_part(float* p, size_t n, F v) {
    alignas(64) float buf[L];
    v.store_aligned(buf);
    std::memcpy(p, buf, n * sizeof(float));
  }
  static unsigned first_set(uint32_t m) { return unsigned(__builtin_ctz(m)); }

  // clamp(roundf(x), lo, hi) as int32 lanes, NaN -> lo, for integral lo <= hi (C roundf:
  // ties away from zero). roundf(x) == trunc(x + copysign(0.49999997f, x)) for every
  // float x (checked over all 2^32 patterns: the sum rounds up exactly when x's fraction
  // is at least one half); trunc commutes with clamping to integral bounds, and the
  // truncating conversion does the trunc.
  static constexpr float kJustBelowHalf = 0.49999997f;  // nextafter(0.5f, 0)
  static I round_away_clamped(F x, F lo, F hi) {
    return Ops::to_int(Ops::clamp(x + (F(kJustBelowHalf) | (x & F(-0.0f))), lo, hi));
  }
  // For a clamp to [0, hi]: int32 lanes that Ops::store_u8 saturates to exactly
  // clamp(roundf(x), 0, hi), NaN -> 0, one operation fewer. A negative x needs no sign
  // copy (x + 0.49999997 < 0.5 truncates to 0 or below); min_keep(hi, t) keeps a NaN t,
  // which converts to INT_MIN (x86) or 0 (Arm); the store's saturation is the low clamp.
  static I code_nonneg_round_away(F x, F hi) {
    return Ops::to_int(Ops::min_keep(hi, x + F(kJustBelowHalf)));
  }

  // ---- conversions ------------------------------------------------------------------

  static void widen_f16(const uint16_t* src, float* dst, size_t n) {
    size_t i = 0;
    for (; i + L <= n; i += L) Ops::load_f16(src + i).store_unaligned(dst + i);
    if (i < n) {
      alignas(64) uint16_t h[L] = {};
      std::memcpy(h, src + i, (n - i) * 2);
      store_part(dst + i, n - i, Ops::load_f16(h));
    }
  }

  static F widen_bf16_lanes(const uint16_t* p) {
    return xsimd::bitwise_cast<F>(Ops::load_u16(p) << 16);
  }
  static void widen_bf16(const uint16_t* src, float* dst, size_t n) {
    size_t i = 0;
    for (; i + L <= n; i += L) widen_bf16_lanes(src + i).store_unaligned(dst + i);
    if (i < n) {
      alignas(64) uint16_t h[L] = {};
      std::memcpy(h, src + i, (n - i) * 2);
      store_part(dst + i, n - i, widen_bf16_lanes(h));
    }
  }

  // ---- transpose ----------------------------------------------------------------------
  // L x L tiles loaded by rows, transposed in registers (Ops::transpose moves bits), stored
  // as whole destination rows of L elements; the edges element by element. Loads and
  // stores of float vectors never touch the bits, NaN payloads included.
  // Rows go 16 at a time where they can (16 / L tiles), so each destination row receives
  // a whole cache line at once: with L < 16, tile by tile left 16 lines half written at
  // a time and AVX2 ran slower than the scalar table's 16 x 16 loop.
  static void transpose32(const uint32_t* src, size_t ld_src, size_t rows, size_t cols, uint32_t* dst, size_t ld_dst) {
    constexpr size_t K = 16 / L;
    const size_t r16 = rows / 16 * 16, rf = rows / L * L, cf = cols / L * L;
    auto tile = [&](size_t r0, size_t c0, F* v) {
      for (size_t i = 0; i < L; ++i) v[i] = F::load_unaligned(reinterpret_cast<const float*>(src + (r0 + i) * ld_src + c0));
      Ops::transpose(v);
    };
    for (size_t c0 = 0; c0 < cf; c0 += L) {
      for (size_t r0 = 0; r0 < r16; r0 += 16) {
        F v[K][L];
        for (size_t t = 0; t < K; ++t) tile(r0 + t * L, c0, v[t]);
        for (size_t j = 0; j < L; ++j)
          for (size_t t = 0; t < K; ++t) v[t][j].store_unaligned(reinterpret_cast<float*>(dst + (c0 + j) * ld_dst + r0 + t * L));
      }
      for (size_t r0 = r16; r0 < rf; r0 += L) {
        F v[L];
        tile(r0, c0, v);
        for (size_t j = 0; j < L; ++j) v[j].store_unaligned(reinterpret_cast<float*>(dst + (c0 + j) * ld_dst + r0));
      }
    }
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = (r < rf ? cf : 0); c < cols; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
  }

  // A NaN becomes sign | 0x7FC00000, which every ISA's f32 -> f16 conversion turns into
  // sign | 0x7E00 (quiet NaN, top payload bits kept): the reference's f16 NaN.
  static F nan_for_f16(F x) {
    return xsimd::select(xsimd::isnan(x), (x & F(-0.0f)) | bits(0x7fc00000u), x);
  }
  static void narrow_f16(const float* src, uint16_t* dst, size_t n) {
    size_t i = 0;
    for (; i + L <= n; i += L) Ops::store_f16(dst + i, nan_for_f16(F::load_unaligned(src + i)));
    if (i < n) {
      alignas(64) uint16_t h[L];
      Ops::store_f16(h, nan_for_f16(load_pad(src + i, n - i, 0.0f)));
      std::memcpy(dst + i, h, (n - i) * 2);
    }
  }

  // ---- block statistics -------------------------------------------------------------

  [[gnu::always_inline]] static void minmax(const float* x, size_t n, float* mn, float* mx) {
    F lo0(INFINITY), lo1(INFINITY), hi0(-INFINITY), hi1(-INFINITY);
    size_t i = 0;
    for (; i + 2 * L <= n; i += 2 * L) {
      const F a = F::load_unaligned(x + i), b = F::load_unaligned(x + i + L);
      lo0 = Ops::min_keep(a, lo0);
      hi0 = Ops::max_keep(a, hi0);
      lo1 = Ops::min_keep(b, lo1);
      hi1 = Ops::max_keep(b, hi1);
    }
    for (; i + L <= n; i += L) {
      const F a = F::load_unaligned(x + i);
      lo0 = Ops::min_keep(a, lo0);
      hi0 = Ops::max_keep(a, hi0);
    }
    if (i < n) {  // NaN padding is ignored, as NaN elements are
      const F a = load_pad(x + i, n - i, NAN);
      lo0 = Ops::min_keep(a, lo0);
      hi0 = Ops::max_keep(a, hi0);
    }
    *mn = ref::canon_zero(Ops::hmin(Ops::min_keep(lo1, lo0)));
    *mx = ref::canon_zero(Ops::hmax(Ops::max_keep(hi1, hi0)));
  }

  static float absmax(const float* x, size_t n) {
    F m0(0.0f), m1(0.0f);
    size_t i = 0;
    for (; i + 2 * L <= n; i += 2 * L) {
      m0 = Ops::max_keep(xsimd::abs(F::load_unaligned(x + i)), m0);
      m1 = Ops::max_keep(xsimd::abs(F::load_unaligned(x + i + L)), m1);
    }
    for (; i + L <= n; i += L) m0 = Ops::max_keep(xsimd::abs(F::load_unaligned(x + i)), m0);
    if (i < n) m0 = Ops::max_keep(xsimd::abs(load_pad(x + i, n - i, 0.0f)), m0);
    return Ops::hmax(Ops::max_keep(m1, m0));
  }

  // The reference's test, element by element (bits read with memcpy: src may be
  // unaligned). Used only to locate the element inside a vector already known to hold one.
  static bool nonfinite_at(const uint8_t* p, DType dtype, size_t i) {
    if (dtype == DType::F32) {
      uint32_t u;
      std::memcpy(&u, p + 4 * i, 4);
      return (u & 0x7f800000u) == 0x7f800000u;
    }
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    return dtype == DType::F16 ? (h & 0x7c00u) == 0x7c00u : (h & 0x7f80u) == 0x7f80u;
  }
  static size_t locate_nonfinite(const uint8_t* p, DType dtype, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      if (nonfinite_at(p, dtype, i)) return i;
    }
    return end;
  }
  // Index of the first element (read as T's bits) whose exponent field `mask` is all
  // ones, or n. Vectors only detect; the scalar test above names the element.
  template <class T>
  static size_t find_exponent_all_ones(const uint8_t* p, DType dtype, size_t n, T mask) {
    using B = xsimd::batch<T, A>;
    constexpr size_t kPer = B::size;  // elements per vector
    const B m(mask);
    auto bad = [&](const uint8_t* q) {
      const B v = xsimd::bitwise_cast<B>(U8::load_unaligned(q));
      return (v & m) == m;
    };
    size_t i = 0;
    for (; i + 4 * kPer <= n; i += 4 * kPer) {
      const uint8_t* q = p + i * sizeof(T);
      if (xsimd::any(bad(q) | bad(q + U8::size) | bad(q + 2 * U8::size) | bad(q + 3 * U8::size))) {
        return locate_nonfinite(p, dtype, i, i + 4 * kPer);
      }
    }
    for (; i + kPer <= n; i += kPer) {
      if (xsimd::any(bad(p + i * sizeof(T)))) return locate_nonfinite(p, dtype, i, i + kPer);
    }
    if (i < n) {  // zero padding is finite
      alignas(64) uint8_t buf[U8::size] = {};
      std::memcpy(buf, p + i * sizeof(T), (n - i) * sizeof(T));
      if (xsimd::any(bad(buf))) return locate_nonfinite(p, dtype, i, n);
    }
    return n;
  }
  static size_t find_nonfinite(const void* src, DType dtype, size_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    switch (dtype) {
      case DType::F32: return find_exponent_all_ones<uint32_t>(p, dtype, n, 0x7f800000u);
      case DType::F16: return find_exponent_all_ones<uint16_t>(p, dtype, n, uint16_t(0x7c00u));
      case DType::BF16: return find_exponent_all_ones<uint16_t>(p, dtype, n, uint16_t(0x7f80u));
    }
    return n;
  }

  // ---- codes ------------------------------------------------------------------------

  // What a caller sees of each whole vector coded: seen(x, q) with the inputs and their
  // codes before the store saturates them, vector after vector in element order. Partial
  // vectors (n % L) are not shown. The default sees nothing and costs nothing.
  struct Unseen {
    void operator()(const F&, const I&) const {}
  };

  // The four vectors at x coded, shown to seen in order, then stored.
  template <class Code, class Seen, class Store>
  [[gnu::always_inline]] static void code_four(const float* x, const Code& code, const Seen& seen, const Store& store) {
    F v[4];
    I q[4];
    for (size_t k = 0; k < 4; ++k) v[k] = F::load_unaligned(x + k * L);
    for (size_t k = 0; k < 4; ++k) q[k] = code(v[k]);
    for (size_t k = 0; k < 4; ++k) seen(v[k], q[k]);
    store(q[0], q[1], q[2], q[3]);
  }

  // codes[i] = code(x[i]) for a lane function code: F -> I, saturated to [0, 255] by the store.
  template <class Code, class Seen = Unseen>
  [[gnu::always_inline]] static void map_to_codes(const float* x, size_t n, uint8_t* codes, const Code& code,
                                                  const Seen& seen = {}) {
    size_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
      code_four(x + i, code, seen, [&](I a, I b, I c, I d) { Ops::store_u8x4(codes + i, a, b, c, d); });
    }
    for (; i + L <= n; i += L) {
      const F v = F::load_unaligned(x + i);
      const I q = code(v);
      seen(v, q);
      Ops::store_u8(codes + i, q);
    }
    if (i < n) {
      alignas(64) uint8_t buf[L];
      Ops::store_u8(buf, code(load_pad(x + i, n - i, 0.0f)));
      std::memcpy(codes + i, buf, n - i);
    }
  }

  // 4-bit codes straight to the bitstream: n must be a multiple of 4L, n / 2 bytes out.
  template <class Code, class Seen = Unseen>
  [[gnu::always_inline]] static void map_to_nibbles(const float* x, size_t n, uint8_t* out, const Code& code,
                                                    const Seen& seen = {}) {
    for (size_t i = 0; i < n; i += 4 * L) {
      code_four(x + i, code, seen, [&](I a, I b, I c, I d) { Ops::store_nibbles_x4(out + i / 2, a, b, c, d); });
    }
  }

  // One block's codes under scheme S (c.scheme == S), as bytes or (kNibbles, 4 bits,
  // n a multiple of 4L) packed. Inlined into quantize_rows' block loop, so the scheme's
  // constants are set up once per block without a call.
  // seen (see Unseen) is shown every whole vector, also when one code fills the block.
  template <Scheme S, bool kNibbles = false, class Seen = Unseen>
  [[gnu::always_inline]] static void quantize_block(const float* x, size_t n, const BlockCodec& c, uint8_t* out,
                                                    const Seen& seen = {}) {
    auto fill = [&](int code) {
      if constexpr (kNibbles) {
        std::memset(out, code | (code << 4), n / 2);
      } else {
        std::memset(out, code, n);
      }
      if constexpr (!std::is_same_v<Seen, Unseen>) {
        for (size_t i = 0; i + L <= n; i += L) seen(F::load_unaligned(x + i), I(code));
      }
    };
    auto map = [&](const auto& code) {
      if constexpr (kNibbles) {
        map_to_nibbles(x, n, out, code, seen);
      } else {
        map_to_codes(x, n, out, code, seen);
      }
    };
    if constexpr (S == Scheme::MnnSym) {
      const int half = 1 << (c.bits - 1);
      if (ref::mnn_scale_is_zero(c.scale)) return fill(half);
      const F s(c.scale), lo(float(-half)), hi(float(half - 1));
      const I off(half);
      map([&](F v) { return round_away_clamped(Ops::div(v, s), lo, hi) + off; });
    } else if constexpr (S == Scheme::MnnAsym) {
      if (ref::mnn_scale_is_zero(c.scale)) return fill(0);
      const F s(c.scale), z(c.zero), hi(float(ref::qmax_of(c.bits)));
      map([&](F v) { return code_nonneg_round_away(Ops::div(v - z, s), hi); });
    } else {
      // clamp(rint(t), 0, qmax) the same way: min_keep keeps NaN, the store clamps below.
      const F inv(c.inv_scale), z(c.zero), hi(float(ref::qmax_of(c.bits)));
      map([&](F v) { return Ops::to_int(Ops::min_keep(hi, Ops::rint((v * inv) + z))); });
    }
  }
  static void quantize_codes(const float* x, size_t n, const BlockCodec& c, uint8_t* codes) {
    if (n == 0) return;  // as pack_codes
    switch (c.scheme) {
      case Scheme::MnnSym: quantize_block<Scheme::MnnSym>(x, n, c, codes); return;
      case Scheme::MnnAsym: quantize_block<Scheme::MnnAsym>(x, n, c, codes); return;
      case Scheme::Affine: quantize_block<Scheme::Affine>(x, n, c, codes); return;
    }
  }

  template <class Value>
  static void map_from_codes(const uint8_t* codes, size_t n, float* out, const Value& value) {
    size_t i = 0;
    for (; i + L <= n; i += L) value(Ops::load_u8(codes + i)).store_unaligned(out + i);
    if (i < n) {
      alignas(64) uint8_t buf[L] = {};
      std::memcpy(buf, codes + i, n - i);
      store_part(out + i, n - i, value(Ops::load_u8(buf)));
    }
  }

  // w_hat of codes q (in [0, 255]) under scheme S, with c's parameters made canonical
  // (ref::canon_nan_params) and half = 2^(bits-1): ref::dequantize_one lane by lane.
  template <Scheme S>
  [[gnu::always_inline]] static F dequantize_lanes(I q, F s, F z, I half) {
    if constexpr (S == Scheme::MnnSym) {
      return Ops::to_float(q - half) * s;
    } else if constexpr (S == Scheme::MnnAsym) {
      return (Ops::to_float(q) * s) + z;
    } else {
      return (Ops::to_float(q) - z) * s;
    }
  }
  template <Scheme S>
  static void dequantize_as(const uint8_t* codes, size_t n, const BlockCodec& c, float* out) {
    const F s(c.scale), z(c.zero);
    const I half(1 << (c.bits - 1));
    map_from_codes(codes, n, out, [&](I q) { return dequantize_lanes<S>(q, s, z, half); });
  }
  static void dequantize_codes(const uint8_t* codes, size_t n, const BlockCodec& codec, float* out) {
    const BlockCodec c = ref::canon_nan_params(codec);
    switch (c.scheme) {
      case Scheme::MnnSym: return dequantize_as<Scheme::MnnSym>(codes, n, c, out);
      case Scheme::MnnAsym: return dequantize_as<Scheme::MnnAsym>(codes, n, c, out);
      case Scheme::Affine: return dequantize_as<Scheme::Affine>(codes, n, c, out);
    }
  }

  // ---- bit packing ------------------------------------------------------------------
  // 4 bits: a uint16 lane holds codes (c0, c1) as c0 | c1 << 8; (v | v >> 4) & 0xff is
  // the byte c0 | c1 << 4. 2 bits: a uint32 lane holds 4 codes; two shift-ors gather them.
  // Other widths: a uint64 lane holds 8 codes (one per byte), three shift-or steps squeeze
  // them into the low 8*bits bits, which are `bits` whole bytes of the stream.

  static I pack2_lanes(const uint8_t* c) {
    const U v = xsimd::bitwise_cast<U>(U8::load_unaligned(c));
    const U w = v | (v >> 6);
    return xsimd::bitwise_cast<I>((w | (w >> 12)) & U(0xffu));
  }
  static U16 pack4_lanes(const uint8_t* c) {
    const U16 v = xsimd::bitwise_cast<U16>(U8::load_unaligned(c));
    return (v | (v >> 4)) & U16(uint16_t(0xff));
  }
  static U64 pack_steps(U64 x, int b) {
    x = (x & U64(0x00ff00ff00ff00ffull)) | (((x >> 8) & U64(0x00ff00ff00ff00ffull)) << b);
    x = (x & U64(0x0000ffff0000ffffull)) | (((x >> 16) & U64(0x0000ffff0000ffffull)) << (2 * b));
    return (x & U64(0xffffffffull)) | ((x >> 32) << (4 * b));
  }

  static void pack4(const uint8_t* codes, size_t n, uint8_t* out) {
    constexpr size_t S = U16::size;  // 2S codes -> S bytes
    size_t i = 0;
    for (; i + 2 * S <= n; i += 2 * S) Ops::store_u16_as_u8(out + i / 2, pack4_lanes(codes + i));
    if (i < n) {
      alignas(64) uint8_t c[2 * S] = {};
      alignas(64) uint8_t o[S];
      std::memcpy(c, codes + i, n - i);
      Ops::store_u16_as_u8(o, pack4_lanes(c));
      std::memcpy(out + i / 2, o, (n - i + 1) / 2);
    }
  }
  static void pack2(const uint8_t* codes, size_t n, uint8_t* out) {
    constexpr size_t C = 4 * L;  // codes per vector -> L bytes
    size_t i = 0;
    for (; i + 4 * C <= n; i += 4 * C) {
      Ops::store_u8x4(out + i / 4, pack2_lanes(codes + i), pack2_lanes(codes + i + C),
                      pack2_lanes(codes + i + 2 * C), pack2_lanes(codes + i + 3 * C));
    }
    for (; i + C <= n; i += C) Ops::store_u8(out + i / 4, pack2_lanes(codes + i));
    if (i < n) {
      alignas(64) uint8_t c[C] = {};
      alignas(64) uint8_t o[L];
      std::memcpy(c, codes + i, n - i);
      Ops::store_u8(o, pack2_lanes(c));
      std::memcpy(out + i / 4, o, (n - i + 3) / 4);
    }
  }
  // 8*S codes -> b*S bytes at out; each lane is written with one 8-byte store that the
  // next lane's store partly overwrites, so 8 - b bytes past the group must be writable.
  static void pack_group_vector(const uint8_t* codes, int b, uint8_t* out) {
    constexpr size_t S = U64::size;
    alignas(64) uint64_t lanes[S];
    pack_steps(xsimd::bitwise_cast<U64>(U8::load_unaligned(codes)), b).store_aligned(lanes);
    for (size_t k = 0; k < S; ++k) std::memcpy(out + k * size_t(b), &lanes[k], 8);
  }
  static void pack_groups(const uint8_t* codes, size_t n, int b, uint8_t* out) {
    constexpr size_t G = 8 * U64::size;  // codes per vector
    // Codes that must follow a vector so that its last 8-byte store stays inside the
    // output: (8 - b) bytes of slack are 8 * (8 - b) / b codes, rounded up.
    const size_t slack = (8 * (8 - size_t(b)) + size_t(b) - 1) / size_t(b);
    size_t i = 0;
    for (; i + G + slack <= n; i += G) pack_group_vector(codes + i, b, out + i / 8 * size_t(b));
    while (i < n) {
      const size_t m = n - i < G ? n - i : G;
      alignas(64) uint8_t c[G] = {};
      uint8_t o[G + 8];
      std::memcpy(c, codes + i, m);
      pack_group_vector(c, b, o);
      std::memcpy(out + i / 8 * size_t(b), o, (m * size_t(b) + 7) / 8);
      i += m;
    }
  }
  static void pack_codes(const uint8_t* codes, size_t n, int bits, uint8_t* out) {
    if (n == 0) return;  // the pointers may then be null: no memcpy/memset with them
    switch (bits) {
      case 8: std::memcpy(out, codes, n); return;
      case 4: pack4(codes, n, out); return;
      case 2: pack2(codes, n, out); return;
      default: pack_groups(codes, n, bits, out); return;
    }
  }

  static U16 unpack4_lanes(const uint8_t* in) {
    const U16 v = Ops::load_u8_as_u16(in);
    return (v & U16(uint16_t(0x0f))) | ((v << 4) & U16(uint16_t(0x0f00)));
  }
  static U unpack2_lanes(const uint8_t* in) {
    const U v = xsimd::bitwise_cast<U>(Ops::load_u8(in));
    return (v & U(3u)) | ((v << 6) & U(0x300u)) | ((v << 12) & U(0x30000u)) | ((v << 18) & U(0x3000000u));
  }
  static U64 unpack_steps(U64 x, int b) {
    const uint64_t m1 = ((uint64_t(1) << b) - 1) * 0x0001000100010001ull;
    const uint64_t m2 = ((uint64_t(1) << (2 * b)) - 1) * 0x0000000100000001ull;
    const uint64_t m4 = (uint64_t(1) << (4 * b)) - 1;
    x = x & U64((uint64_t(1) << (8 * b)) - 1);
    x = (x & U64(m4)) | (((x >> (4 * b)) & U64(m4)) << 32);
    x = (x & U64(m2)) | (((x >> (2 * b)) & U64(m2)) << 16);
    return (x & U64(m1)) | (((x >> b) & U64(m1)) << 8);
  }

  static void unpack4(const uint8_t* in, size_t n, uint8_t* codes) {
    constexpr size_t S = U16::size;  // S bytes -> 2S codes
    size_t i = 0;
    for (; i + 2 * S <= n; i += 2 * S) xsimd::bitwise_cast<U8>(unpack4_lanes(in + i / 2)).store_unaligned(codes + i);
    if (i < n) {
      alignas(64) uint8_t b[S] = {};
      alignas(64) uint8_t c[2 * S];
      std::memcpy(b, in + i / 2, (n - i + 1) / 2);
      xsimd::bitwise_cast<U8>(unpack4_lanes(b)).store_aligned(c);
      std::memcpy(codes + i, c, n - i);
    }
  }
  static void unpack2(const uint8_t* in, size_t n, uint8_t* codes) {
    constexpr size_t C = 4 * L;  // L bytes -> C codes
    size_t i = 0;
    for (; i + C <= n; i += C) xsimd::bitwise_cast<U8>(unpack2_lanes(in + i / 4)).store_unaligned(codes + i);
    if (i < n) {
      alignas(64) uint8_t b[L] = {};
      alignas(64) uint8_t c[C];
      std::memcpy(b, in + i / 4, (n - i + 3) / 4);
      xsimd::bitwise_cast<U8>(unpack2_lanes(b)).store_aligned(c);
      std::memcpy(codes + i, c, n - i);
    }
  }
  static void unpack_groups(const uint8_t* in, size_t n, int b, uint8_t* codes) {
    constexpr size_t S = U64::size;
    constexpr size_t G = 8 * S;
    const size_t nbytes = (n * size_t(b) + 7) / 8;
    alignas(64) uint64_t lanes[S];
    size_t i = 0;
    // Each lane reads 8 bytes from its group's start: stop while that stays in bounds.
    for (; i + G <= n && (i / 8 + S - 1) * size_t(b) + 8 <= nbytes; i += G) {
      for (size_t k = 0; k < S; ++k) std::memcpy(&lanes[k], in + (i / 8 + k) * size_t(b), 8);
      xsimd::bitwise_cast<U8>(unpack_steps(U64::load_aligned(lanes), b)).store_unaligned(codes + i);
    }
    while (i < n) {
      const size_t m = n - i < G ? n - i : G;
      alignas(64) uint8_t buf[G + 8] = {};
      alignas(64) uint8_t c[G];
      std::memcpy(buf, in + i / 8 * size_t(b), (m * size_t(b) + 7) / 8);
      for (size_t k = 0; k < S; ++k) std::memcpy(&lanes[k], buf + k * size_t(b), 8);
      xsimd::bitwise_cast<U8>(unpack_steps(U64::load_aligned(lanes), b)).store_aligned(c);
      std::memcpy(codes + i, c, m);
      i += m;
    }
  }
  static void unpack_codes(const uint8_t* in, size_t n, int bits, uint8_t* codes) {
    if (n == 0) return;  // as pack_codes
    switch (bits) {
      case 8: std::memcpy(codes, in, n); return;
      case 4: unpack4(in, n, codes); return;
      case 2: unpack2(in, n, codes); return;
      default: unpack_groups(in, n, bits, codes); return;
    }
  }

  // ---- squared error ----------------------------------------------------------------
  // 16 / L vectors hold the 16 partial sums: lane j of vector k is partial k * L + j.
  static void sq_err(const float* a, const float* b, size_t n, double* err2, double* ref2, float* max_abs) {
    constexpr size_t K = 16 / L;
    F pe[K], pr[K], mx(0.0f);
    for (size_t k = 0; k < K; ++k) pe[k] = pr[k] = F(0.0f);
    sq_err_add(a, b, n, pe, pr, mx);
    const RowError out = sq_err_result(pe, pr, mx);
    *err2 = out.err2;
    *ref2 = out.ref2;
    *max_abs = out.max_abs;
  }
  // The partials in memory (kernel_slots.inc): loaded, continued, stored back. The max is
  // carried in every lane and folded into one with `>`, which for values >= +0 without
  // NaN is the scalar table's running max in any order.
  static void sq_err_partials(const float* a, const float* b, size_t n, float* p) {
    constexpr size_t K = 16 / L;
    F pe[K], pr[K], mx;
    load_partials(p, pe, pr, mx);
    sq_err_add(a, b, n, pe, pr, mx);
    store_partials(p, pe, pr, mx, 0);
  }
  // The partials in memory into 16 / L vectors each (lane j of pe[k]: partial k * L + j)
  // and the max into every lane; and back, where pe[k] holds partials
  // ((k + rotation) % (16 / L)) * L + j, the max folded in.
  static void load_partials(const float* p, F* pe, F* pr, F& mx) {
    for (size_t k = 0; k < 16 / L; ++k) {
      pe[k] = F::load_unaligned(p + k * L);
      pr[k] = F::load_unaligned(p + 16 + k * L);
    }
    mx = F(p[32]);
  }
  static void store_partials(float* p, const F* pe, const F* pr, F mx, size_t rotation) {
    constexpr size_t K = 16 / L;
    for (size_t k = 0; k < K; ++k) {
      pe[k].store_unaligned(p + (k + rotation) % K * L);
      pr[k].store_unaligned(p + 16 + (k + rotation) % K * L);
    }
    alignas(64) float lanes[L];
    mx.store_aligned(lanes);
    float m = p[32];
    for (size_t j = 0; j < L; ++j) m = lanes[j] > m ? lanes[j] : m;
    p[32] = m;
  }
  // Adds n elements to sq_err's partials (lane j of pe[k]: partial k * L + j) and max.
  static void sq_err_add(const float* a, const float* b, size_t n, F* pe, F* pr, F& mx) {
    constexpr size_t K = 16 / L;
    auto step = [&](const float* pa, const float* pb) {
      for (size_t k = 0; k < K; ++k) {
        const F x = F::load_unaligned(pa + k * L), y = F::load_unaligned(pb + k * L);
        const F d = x - y;
        pe[k] = pe[k] + (d * d);
        pr[k] = pr[k] + (x * x);
        mx = Ops::max_keep(xsimd::abs(d), mx);  // (|d| > mx) ? |d| : mx: NaN skipped, as the reference
      }
    };
    size_t i = 0;
    for (; i + 16 <= n; i += 16) step(a + i, b + i);
    if (i < n) {  // zero padding adds +0 to partials that are never -0: no change
      alignas(64) float ta[16] = {}, tb[16] = {};
      std::memcpy(ta, a + i, (n - i) * sizeof(float));
      std::memcpy(tb, b + i, (n - i) * sizeof(float));
      step(ta, tb);
    }
  }
  // sq_err's partials (lane j of pe[k]: partial k * L + j) reduced in the reference's tree.
  static RowError sq_err_result(const F* pe, const F* pr, F mx) {
    constexpr size_t K = 16 / L;
    alignas(64) float e[16], r[16];
    for (size_t k = 0; k < K; ++k) {
      pe[k].store_aligned(e + k * L);
      pr[k].store_aligned(r + k * L);
    }
    for (int w = 8; w >= 1; w /= 2) {  // the reference's tree, term for term
      for (int j = 0; j < w; ++j) {
        e[j] += e[j + w];
        r[j] += r[j + w];
      }
    }
    alignas(64) float lanes[L];
    mx.store_aligned(lanes);  // every lane >= +0, no NaN: any order gives the max
    float m = 0.0f;
    for (size_t j = 0; j < L; ++j) m = lanes[j] > m ? lanes[j] : m;
    return {ref::sum_result(e[0]), ref::sum_result(r[0]), m};
  }

  // A row's sq_err against its dequantized codes, gathered vector by vector while the
  // codes are made (quantize_rows with job.errors). sq_err gives vector v of a row to
  // partial vector v % K; here the vector being added always goes to pe[0] and the K
  // accumulators rotate after each add, a renaming the unrolled block loops resolve at
  // compile time, so the same partials receive the same terms in the same order. At the
  // end they may be rotated by whole vectors: sq_err's tree adds partial p to p + 8, then
  // p + 4, ..., and for L >= 4 such a rotation only swaps the two operands of some of
  // those additions, which IEEE addition does not see.
  struct RowErrorAcc {
    static constexpr size_t K = 16 / L;
    F pe[K], pr[K], mx;
    RowErrorAcc() : mx(0.0f) {
      for (size_t k = 0; k < K; ++k) pe[k] = pr[k] = F(0.0f);
    }
    [[gnu::always_inline]] void add(F x, F w_hat) {
      const F d = x - w_hat;
      pe[0] = pe[0] + (d * d);
      pr[0] = pr[0] + (x * x);
      mx = Ops::max_keep(xsimd::abs(d), mx);  // as sq_err
      if constexpr (K > 1) {
        const F e0 = pe[0], r0 = pr[0];
        for (size_t k = 0; k + 1 < K; ++k) {
          pe[k] = pe[k + 1];
          pr[k] = pr[k + 1];
        }
        pe[K - 1] = e0;
        pr[K - 1] = r0;
      }
    }
    RowError result() const { return sq_err_result(pe, pr, mx); }
  };

  // codes_error_partials (kernel_slots.inc): each block's w_hat made in registers as
  // dequantize_codes makes it and gathered by a RowErrorAcc started from the partials in
  // memory, as sq_err_partials sums it (the lanes' partials in element order: blocks of
  // whole vectors keep its order); other blocks through the definition. HQQ's measured
  // rows took a call per block of 64 for dequantize_codes and a pass of sq_err over the
  // row in memory: 10% of the 1.1 B bf16 model's HQQ conversion (perf, 2026-12-07).
  template <Scheme S>
  static void codes_error_add(const float* x, const uint8_t* codes, size_t n, size_t block, int bits,
                              const float* scales, const float* zeros, RowErrorAcc& acc) {
    const I half(1 << (bits - 1));
    for (size_t b = 0; b < n / block; ++b) {
      const BlockCodec d = ref::canon_nan_params(BlockCodec{S, bits, scales[b], zeros ? zeros[b] : 0.0f, 0.0f});
      const F ds(d.scale), dz(d.zero);
      const float* xb = x + b * block;
      const uint8_t* cb = codes + b * block;
      if constexpr (L == 16) {
        if (bits <= 4) {  // every code's w_hat in one vector, read with the code as index
          const F table = dequantize_lanes<S>(Ops::iota16(), ds, dz, half);
          for (size_t i = 0; i < block; i += L) acc.add(F::load_unaligned(xb + i), Ops::permute16(table, Ops::load_u8(cb + i)));
          continue;
        }
      }
      for (size_t i = 0; i < block; i += L) {
        acc.add(F::load_unaligned(xb + i), dequantize_lanes<S>(Ops::load_u8(cb + i), ds, dz, half));
      }
    }
  }
  static void codes_error_partials(const float* x, const uint8_t* codes, size_t n, size_t block, Scheme scheme,
                                   int bits, const float* scales, const float* zeros, float* p) {
    if (block == 0 || block % L != 0) {
      codes_error_partials_by_definition<Prims>(x, codes, n, block, scheme, bits, scales, zeros, p);
      return;
    }
    RowErrorAcc acc;
    load_partials(p, acc.pe, acc.pr, acc.mx);
    switch (scheme) {
      case Scheme::MnnSym: codes_error_add<Scheme::MnnSym>(x, codes, n, block, bits, scales, zeros, acc); break;
      case Scheme::MnnAsym: codes_error_add<Scheme::MnnAsym>(x, codes, n, block, bits, scales, zeros, acc); break;
      case Scheme::Affine: codes_error_add<Scheme::Affine>(x, codes, n, block, bits, scales, zeros, acc); break;
    }
    // After n / L vectors the accumulator's pe[k] holds partials (k + n / L) % K (it
    // rotates by one a vector).
    store_partials(p, acc.pe, acc.pr, acc.mx, n / L);
  }

  // ---- fused rows -------------------------------------------------------------------
  // The stages of kernels/fused_rows.h (widen, block statistics, ref::block_codec, codes,
  // pack) for one row at a time, with the same per-block parameters and the same
  // per-element formulas, hence the same bytes. Each stage is one pass over the row's
  // blocks, which stay in L1, with no call per block: a block's statistics -> parameters
  // -> codes chain is long (horizontal reductions, scalar divisions), and only
  // independent blocks side by side let the core hide it.

  // Scratch for one call: the widened row, each block's scale, zero and inv_scale, the
  // row's codes.
  struct RowScratch {
    ScratchBuffer<float> floats;
    ScratchBuffer<uint8_t> code_bytes;
    float* wide;
    float* scale;
    float* zero;
    float* inv;
    uint8_t* codes;
    RowScratch(size_t cols, size_t nblocks, bool widen)
        : floats((widen ? cols : 0) + 3 * nblocks + 1), code_bytes(cols + 1) {
      wide = floats.data();
      scale = wide + (widen ? cols : 0);
      zero = scale + nblocks;
      inv = zero + nblocks;
      codes = code_bytes.data();
    }
    RowScratch(const RowScratch&) = delete;
    RowScratch& operator=(const RowScratch&) = delete;
  };

  // A block's lanes folded vertically (block % L == 0): one vector of lane minima and
  // one of lane maxima.
  [[gnu::always_inline]] static void fold_block(const float* x, size_t block, F* lo, F* hi) {
    F l(INFINITY), h(-INFINITY);
    for (size_t i = 0; i < block; i += L) {
      const F v = F::load_unaligned(x + i);
      l = Ops::min_keep(v, l);
      h = Ops::max_keep(v, h);
    }
    *lo = l;
    *hi = h;
  }

  // ref::block_codec for L blocks at once (lane j: block j's min and max as minmax gives
  // them), operation for operation: IEEE division through Ops::div, each `if` a select on
  // the same comparison, NaN made canonical. Same bits as calling it per block, without
  // ~30 scalar instructions per block; the tests compare every scheme's scales and zeros
  // with the scalar table's, which calls ref::block_codec.
  struct CodecLanes {
    F scale, zero, inv;
  };
  template <Scheme S>
  [[gnu::always_inline]] static CodecLanes codec_lanes(F mn, F mx, int b, bool round_zero) {
    const F qnan = bits(0x7fc00000u), zero(0.0f);
    auto canon = [&](F v) { return xsimd::select(xsimd::isnan(v), qnan, v); };  // ref::canon_nan
    if constexpr (S == Scheme::MnnSym) {
      const F a = xsimd::abs(mn), c = xsimd::abs(mx);
      const F absmax = xsimd::select(a > c, a, c);
      return {canon(Ops::div(absmax, F(float((1 << (b - 1)) - 1)))), zero, zero};
    } else if constexpr (S == Scheme::MnnAsym) {
      return {canon(Ops::div(mx - mn, F(float(ref::qmax_of(b))))), canon(mn), zero};
    } else {
      const F d = mx - mn;
      F inv = Ops::div(F(1.0f), d) * F(float(ref::qmax_of(b)));
      inv = xsimd::select(d <= F(1e-4f), F(1.0f), inv);
      inv = xsimd::select(inv <= F(2e4f), inv, F(2e4f));  // NaN -> 2e4 too
      F z = (mn ^ F(-0.0f)) * inv;  // -mn as C negates: the sign bit (xsimd's avx512 neg is 0 - x)
      if (round_zero) z = Ops::rint(z);
      return {canon(Ops::div(F(1.0f), inv)), canon(z), canon(inv)};
    }
  }

  // The parameters of L blocks whose lanes fold_block folded into lo[] and hi[]: one
  // transposed reduction gives the L minima (maxima) in one vector, zeros made +0 as
  // minmax does, then codec_lanes.
  template <Scheme S>
  [[gnu::always_inline]] static CodecLanes codec_group(const F* lo, const F* hi, int bits, bool round_zero) {
    const F zero(0.0f);
    F l = Ops::template reduce_lanes<true>(lo), h = Ops::template reduce_lanes<false>(hi);
    l = xsimd::select(l == zero, zero, l);
    h = xsimd::select(h == zero, zero, h);
    return codec_lanes<S>(l, h, bits, round_zero);
  }

  // HQQ's start, L blocks at a time where blocks are whole vectors.
  static void affine_params(const float* x, size_t nblocks, size_t block, int bits, bool round_zero, float* scale,
                            float* zero, float* inv_scale) {
    size_t b = 0;
    if (block % L == 0) {
      for (; b + L <= nblocks; b += L) {
        F lo[L], hi[L];
        for (size_t j = 0; j < L; ++j) fold_block(x + (b + j) * block, block, &lo[j], &hi[j]);
        const CodecLanes c = codec_group<Scheme::Affine>(lo, hi, bits, round_zero);
        c.scale.store_unaligned(scale + b);
        c.zero.store_unaligned(zero + b);
        c.inv.store_unaligned(inv_scale + b);
      }
    }
    ref::affine_params_each(x, b, nblocks, block, bits, round_zero, scale, zero, inv_scale,
                            [](const float* p, size_t n, float* mn, float* mx) { minmax(p, n, mn, mx); });
  }

  // kBlock: the block size as a compile-time constant (0: job.block at run time), so the
  // per-block loops of the common sizes unroll.
  template <Scheme S, size_t kBlock>
  static void quantize_rows_as(const RowQuantJob& job, size_t row_begin, size_t row_end) {
    const size_t block = kBlock ? kBlock : job.block;
    const size_t cols = job.cols, nblocks = cols / block;
    const size_t esize = dtype_size(job.src_dtype);
    // 8-bit codes are the row's bytes, and 4-bit blocks of whole 4L-lane groups are packed
    // from registers: no codes buffer, no packing pass.
    const bool direct8 = job.bits == 8;
    const bool direct4 = job.bits == 4 && block % (4 * L) == 0;
    // Blocks of whole vectors go in groups of L (below); the rest one by one.
    const size_t grouped = block % L == 0 ? nblocks / L * L : 0;
    RowScratch t(cols, nblocks, job.src_dtype != DType::F32);
    // The error, with job.errors: gathered as the codes are made where blocks are whole
    // vectors (always so for direct4), else from the row's codes dequantized afterwards.
    const bool measure_fused = job.errors && block % L == 0;
    ScratchBuffer<float> w_hat(job.errors && !measure_fused ? cols : 0);
    for (size_t r = row_begin; r < row_end; ++r) {
      const size_t offset = r * job.src_row_stride;
      const float* row = t.wide;
      switch (job.src_dtype) {
        case DType::F32: row = static_cast<const float*>(job.src) + offset; break;
        case DType::F16: widen_f16(static_cast<const uint16_t*>(job.src) + offset, t.wide, cols); break;
        case DType::BF16: widen_bf16(static_cast<const uint16_t*>(job.src) + offset, t.wide, cols); break;
      }
      float* scales = job.scales + r * nblocks;
      float* zeros = job.zeros ? job.zeros + r * nblocks : nullptr;
      uint8_t* packed = job.packed + r * job.packed_row_bytes;
      RowErrorAcc acc;
      auto code_block = [&](size_t b) __attribute__((always_inline)) {
        const float* x = row + b * block;
        const BlockCodec c{S, job.bits, t.scale[b], t.zero[b], t.inv[b]};
        if (measure_fused) {
          // w_hat as dequantize_codes makes it from the stored code (the store saturates).
          const BlockCodec d = ref::canon_nan_params(c);
          const F ds(d.scale), dz(d.zero);
          const I half(1 << (job.bits - 1)), lo(0), hi(255);
          if constexpr (L == 16) {
            // Codes of at most 4 bits index a vector holding every code's w_hat: one
            // permute per vector instead of a convert, a multiply and an add (the error
            // sums were 44% of this kernel's time, kernels_bench .../errors). The codes
            // are never above 2^bits - 1 (each scheme clamps to its top code) and what a
            // NaN converts to, INT_MIN, reads entry 0 (the permute takes an index's low 4
            // bits), the code the store's saturation gives it, so each lane reads the
            // value dequantize_lanes gives its stored code. No finite
            // weight gives a negative code: MnnSym adds half to a code clamped at -half,
            // MnnAsym codes v - min >= 0, and Affine's v * inv + z, with p = fl(min * inv)
            // and z = -p (or rint(-p) >= -p - 0.5 under round_zero, which only HQQ's
            // affine_params uses), is fl(fl(v * inv) + z) >= fl(p + z) >= -0.5 (rounding
            // is monotone, contraction is off), whose rint is -0, code 0. (A NaN's tensor
            // is refused after this pass anyway.)
            if (job.bits <= 4) {
              const F table = dequantize_lanes<S>(Ops::iota16(), ds, dz, half);
              auto looked_up = [&](const F& v, const I& q) __attribute__((always_inline)) {
                acc.add(v, Ops::permute16(table, q));
              };
              if (direct4) {
                quantize_block<S, true>(x, block, c, packed + b * block / 2, looked_up);
              } else {
                quantize_block<S>(x, block, c, t.codes + b * block, looked_up);
              }
              return;
            }
          }
          auto seen = [&](const F& v, const I& q) __attribute__((always_inline)) {
            acc.add(v, dequantize_lanes<S>(xsimd::min(xsimd::max(q, lo), hi), ds, dz, half));
          };
          if (direct4) {
            quantize_block<S, true>(x, block, c, packed + b * block / 2, seen);
          } else {
            quantize_block<S>(x, block, c, (direct8 ? packed : t.codes) + b * block, seen);
          }
        } else if (direct4) {
          quantize_block<S, true>(x, block, c, packed + b * block / 2);
        } else {
          quantize_block<S>(x, block, c, (direct8 ? packed : t.codes) + b * block);
        }
      };
      // The statistics of blocks [b, b + L), folded into lo[] and hi[], to parameters.
      auto set_group = [&](size_t b, const F* lo, const F* hi) {
        const CodecLanes c = codec_group<S>(lo, hi, job.bits, job.round_zero);
        c.scale.store_unaligned(t.scale + b);
        c.zero.store_unaligned(t.zero + b);
        c.inv.store_unaligned(t.inv + b);
        c.scale.store_unaligned(scales + b);
        if (zeros) c.zero.store_unaligned(zeros + b);
      };
      // While this row is coded from L1, the next row of the tile is fetched (one
      // prefetch per cache line), so memory and arithmetic overlap.
      const char* next = r + 1 < row_end ? static_cast<const char*>(job.src) + (offset + job.src_row_stride) * esize
                                         : nullptr;
      auto prefetch_next = [&](size_t b) {
        if (!next) return;
        for (size_t o = 0; o < block * esize; o += 64) __builtin_prefetch(next + b * block * esize + o);
      };
      // Software-pipelined: the codes of group g (division-bound) and the statistics of
      // group g + 1 (loads, min/max) share one loop, so they run side by side on the core.
      F lo[L], hi[L];
      if (grouped) {
        for (size_t j = 0; j < L; ++j) fold_block(row + j * block, block, &lo[j], &hi[j]);
        set_group(0, lo, hi);
      }
      for (size_t g = 0; g < grouped; g += L) {
        const bool more = g + L < grouped;
        for (size_t j = 0; j < L; ++j) {
          const size_t b = g + j;
          code_block(b);
          if (more) fold_block(row + (b + L) * block, block, &lo[j], &hi[j]);
          prefetch_next(b);
        }
        if (more) set_group(g + L, lo, hi);
      }
      for (size_t b = grouped; b < nblocks; ++b) {
        float mn, mx;
        minmax(row + b * block, block, &mn, &mx);
        const BlockCodec c = ref::block_codec(S, job.bits, mn, mx, job.round_zero);
        t.scale[b] = scales[b] = c.scale;
        t.zero[b] = c.zero;
        t.inv[b] = c.inv_scale;
        if (zeros) zeros[b] = c.zero;
        code_block(b);
        prefetch_next(b);
      }
      if (!direct8 && !direct4) pack_codes(t.codes, cols, job.bits, packed);
      if (measure_fused) {
        job.errors[r] = acc.result();
      } else if (job.errors) {  // blocks of partial vectors: the definition, from L1
        // (direct4 blocks are whole vectors, so the codes are bytes here)
        measure_row<Prims>(job, r, row, direct8 ? packed : t.codes, w_hat.data());
      }
    }
  }

  template <Scheme S>
  static void quantize_rows_sized(const RowQuantJob& job, size_t row_begin, size_t row_end) {
    switch (job.block) {
      case 32: return quantize_rows_as<S, 32>(job, row_begin, row_end);
      case 64: return quantize_rows_as<S, 64>(job, row_begin, row_end);
      case 128: return quantize_rows_as<S, 128>(job, row_begin, row_end);
      case 256: return quantize_rows_as<S, 256>(job, row_begin, row_end);
      default: return quantize_rows_as<S, 0>(job, row_begin, row_end);
    }
  }
  static void quantize_rows(const RowQuantJob& job, size_t row_begin, size_t row_end) {
    if (row_begin >= row_end || job.cols == 0) return;
    switch (job.scheme) {
      case Scheme::MnnSym: return quantize_rows_sized<Scheme::MnnSym>(job, row_begin, row_end);
      case Scheme::MnnAsym: return quantize_rows_sized<Scheme::MnnAsym>(job, row_begin, row_end);
      case Scheme::Affine: return quantize_rows_sized<Scheme::Affine>(job, row_begin, row_end);
    }
  }

  // ---- columns of a matrix stored transposed (ColumnQuantJob) ----------------------------
  // Lane j is stored column c + j: a block's statistics are vertical min/max over its
  // stored rows (no reduction across lanes), codec_lanes gives the L blocks' parameters
  // (quantize_rows' groups use the same function), each element is coded with its lane's
  // parameters by quantize_block's formulas, and the error is added to the partial sums
  // with sq_err's operations. Codes reach each column's byte row through registers:
  // packed bytes gathered four to a lane (G), or one code a lane transposed (G 0).

  // quantize_block's code of every lane of v under that lane's parameters p (the blocks
  // whose MNN scale counts as zero take the code quantize_block fills them with).
  template <Scheme S>
  [[gnu::always_inline]] static I code_lanes(F v, const CodecLanes& p, int bits) {
    if constexpr (S == Scheme::MnnSym) {
      const int half = 1 << (bits - 1);
      const I q = round_away_clamped(Ops::div(v, p.scale), F(float(-half)), F(float(half - 1))) + I(half);
      return xsimd::select(Ops::mask_ones(p.scale <= F(1e-6f)) != I(0), I(half), q);  // ref::mnn_scale_is_zero
    } else if constexpr (S == Scheme::MnnAsym) {
      const I q = code_nonneg_round_away(Ops::div(v - p.zero, p.scale), F(float(ref::qmax_of(bits))));
      return xsimd::select(Ops::mask_ones(p.scale <= F(1e-6f)) != I(0), I(0), q);
    } else {
      return Ops::to_int(Ops::min_keep(F(float(ref::qmax_of(bits))), Ops::rint((v * p.inv) + p.zero)));
    }
  }

  // f(std::integral_constant<size_t, I>{}) for I = 0, 1, ..., in order: each index is a
  // constant from the start. (A loop unrolled by #pragma GCC unroll indexes arrays with a
  // variable until late, and GCC then keeps those arrays, the column kernel's 16 partial
  // sums, in memory: every add a load and a store on the stack.)
  template <class Fn, size_t... Is>
  [[gnu::always_inline]] static void each_index(std::index_sequence<Is...>, const Fn& f) {
    (f(std::integral_constant<size_t, Is>{}), ...);
  }
  // G: codes per byte for 8-, 4- and 2-bit codes, packed in registers (each column's
  // bytes leave them packed: no packing pass); 0: any width, the codes transposed one
  // per lane and packed afterwards.
  // M: job.partials is set (the errors measured); a template parameter so that no test of
  // it sits among the loops' operations.
  template <Scheme S, size_t G, bool M>
  static void quantize_columns_as(const ColumnQuantJob& job) {
    const size_t rows = job.rows, block = job.block, nblocks = rows / block, cols = job.cols;
    const bool direct_f32 = job.src_dtype == DType::F32;
    // Partial column groups, and 16-bit sources, are widened into x first: [rows][L].
    ScratchBuffer<float> x(rows * L);
    // The group's codes, one byte each (G 0), or its packed rows (rows / G bytes a column):
    // written from the transposes, then each column's run copied to its place whole (the
    // transposes' 16-byte stores straight into the output's lines, which are rarely in
    // cache, ran at 0.7x the speed, kernels_bench's 64 MiB case).
    constexpr size_t per_lane = G ? G : 1;  // stored rows whose codes share a lane (a byte)
    ScratchBuffer<uint8_t> codes(rows / per_lane * L);
    // The block's stored rows of the group, as the statistics pass loads them: the coding
    // pass reads them from here, contiguous in L1, instead of down the band again, whose
    // rows (8-22 KiB apart in the engine's bands) fall into a few sets of L1 and L2 and
    // evict one another. kernels_bench quantize_columns/mnn_asym/b4/g64/f32/engine_bands/
    // avx512/64MiB (the engine's 512-row bands of 2048 columns, coded 256 at a time; each
    // band's copy, about 3 ms, included), five alternations: 9.05 against 9.65 ms
    // (medians); the 1.1 B model's ONNX RTN job, bench/ab_bench.sh 8, 8 and 14 pairs: CPU
    // 0.937, 1.034 and 0.977, wall 0.904, 1.000 and 0.970 (2026-12-06). The 64 MiB case
    // of 128-row bands read straight from the tensor slowed from 8.3 to 9.8 ms (its rows
    // stream from memory, and the copy is then only a cost): not the engine's shape.
    ScratchBuffer<float> blk(block * L);
    const F zero(0.0f);
    const I lo8(0), hi8(255), half(1 << (job.bits - 1));
    for (size_t c = 0; c < cols; c += L) {
      const size_t m = cols - c < L ? cols - c : L;  // (no std::min: kernels/isa_namespace.h)
      const float* base;
      size_t stride;
      if (direct_f32 && m == L) {
        base = static_cast<const float*>(job.src) + c;
        stride = job.src_row_stride;
      } else {
        for (size_t k = 0; k < rows; ++k) {
          float* dst = x.data() + k * L;
          const size_t off = k * job.src_row_stride + c;
          switch (job.src_dtype) {
            case DType::F32: std::memcpy(dst, static_cast<const float*>(job.src) + off, m * sizeof(float)); break;
            case DType::F16: widen_f16(static_cast<const uint16_t*>(job.src) + off, dst, m); break;
            case DType::BF16: widen_bf16(static_cast<const uint16_t*>(job.src) + off, dst, m); break;
          }
          for (size_t j = m; j < L; ++j) dst[j] = 0.0f;
        }
        base = x.data();
        stride = L;
      }
      // Each stored row gives this group one line, a whole row pitch from the last: no
      // hardware prefetcher follows that, so the next group's lines are asked for while
      // this one is coded (the band itself is in L2 or L3 after the caller's read).
      const float* next = direct_f32 && c + 2 * L <= cols ? base + L : nullptr;
      // The 16 partial sums of errors and the 16 of squares (and the max) wait in
      // job.partials between passes: each pass loads the ones it adds to and stores them
      // back, so only one set is live in either loop (both, with the codes, were more than
      // the 32 registers, and GCC kept them on the stack).
      auto load_sums = [&](size_t plane) __attribute__((always_inline)) {
        const float* q = job.partials + column_partial(c, plane);
        return m == L ? F::load_unaligned(q) : load_pad(q, m, 0.0f);
      };
      auto store_sums = [&](size_t plane, F v) __attribute__((always_inline)) {
        float* q = job.partials + column_partial(c, plane);
        if (m == L) v.store_unaligned(q);
        else store_part(q, m, v);
      };
      for (size_t b = 0; b < nblocks; ++b) {
        const size_t k0 = b * block;
        F l(INFINITY), h(-INFINITY);
        F pr[16];
        each_index(std::make_index_sequence<16>{}, [&](auto pc) __attribute__((always_inline)) {
          pr[pc] = M ? load_sums(16 + pc) : F(0.0f);
        });
        // The sums of squares are added here, where each element is first loaded: with them
        // in the coding loop below, its 32 partial sums and working vectors did not fit the
        // registers and were spilled to the stack at every element. (Element k + i still goes
        // to partial i, in the same order.)
        // Stored rows through a pointer stepped one row at a time: with an offset per
        // unrolled row, GCC kept 16-32 row offsets live and spilled them to the stack.
        const float* rp = base + k0 * stride;
        for (size_t k = k0; k < k0 + block; k += 16) {
          each_index(std::make_index_sequence<16>{}, [&](auto ic) __attribute__((always_inline)) {
            constexpr size_t i = decltype(ic)::value;
            const F v = F::load_unaligned(rp);
            if (next) __builtin_prefetch(rp + L);
            rp += stride;
            v.store_aligned(blk.data() + (k - k0 + i) * L);
            l = Ops::min_keep(v, l);
            h = Ops::max_keep(v, h);
            if constexpr (M) pr[i] = pr[i] + (v * v);
          });
        }
        if constexpr (M) {
          each_index(std::make_index_sequence<16>{}, [&](auto pc) __attribute__((always_inline)) {
            store_sums(16 + pc, pr[pc]);
          });
        }
        // minmax's zero, +0 whatever the sign (codec_group does the same).
        l = xsimd::select(l == zero, zero, l);
        h = xsimd::select(h == zero, zero, h);
        const CodecLanes p = codec_lanes<S>(l, h, job.bits, job.round_zero);
        alignas(64) float ts[L], tz[L];
        p.scale.store_aligned(ts);
        p.zero.store_aligned(tz);
        for (size_t j = 0; j < m; ++j) {
          job.scales[(c + j) * job.params_stride + b] = ts[j];
          if (job.zeros) job.zeros[(c + j) * job.params_stride + b] = tz[j];
        }
        F pe[16], mx(0.0f);
        each_index(std::make_index_sequence<16>{}, [&](auto pc) __attribute__((always_inline)) {
          pe[pc] = M ? load_sums(pc) : F(0.0f);
        });
        if constexpr (M) mx = load_sums(32);
        // The saturated code of the block's element k + i (ic: i, a constant) from its
        // stored row v; with M its error goes to partial i % 16 (k steps by multiples of
        // 16, as block does). w_hat as dequantize_codes makes it from the stored code.
        auto code_one = [&](F v, auto ic) __attribute__((always_inline)) {
          const I code = code_lanes<S>(v, p, job.bits);
          const I stored = xsimd::min(xsimd::max(code, lo8), hi8);
          if constexpr (M) {
            const F d = v - dequantize_lanes<S>(stored, p.scale, p.zero, half);
            pe[decltype(ic)::value % 16] = pe[decltype(ic)::value % 16] + (d * d);
            mx = Ops::max_keep(xsimd::abs(d), mx);  // as sq_err
          }
          return stored;
        };
        rp = blk.data();
        if constexpr (G != 0) {
          // A column's bytes 16 at a time (16 G stored rows): byte t of column j goes to
          // bits 8 (t % 4) of lane j of q4[t / 4], and store_dword_columns writes each
          // column's 16 bytes. (A transpose of L vectors of one byte a lane kept those L
          // vectors live beside the 16 partial sums, more than the registers hold, and took
          // 64 shuffles where these take 8.)
          constexpr size_t C = 16 * per_lane;
          for (size_t k = k0; k < k0 + block; k += C) {
            I q4[4] = {I(0), I(0), I(0), I(0)};
            each_index(std::make_index_sequence<16>{}, [&](auto tc) __attribute__((always_inline)) {
              constexpr size_t t = decltype(tc)::value;
              I byte(0);
              each_index(std::make_index_sequence<per_lane>{}, [&](auto gc) __attribute__((always_inline)) {
                constexpr size_t g = decltype(gc)::value;
                const F v = F::load_aligned(rp);
                rp += L;
                // Code g of a byte at bits [g b, g b + b), as pack_codes packs them (every
                // stored code is in [0, 2^b - 1]: each scheme clamps to its top code, and
                // the saturation takes what a NaN converts to, INT_MIN, to 0).
                const I code = code_one(v, std::integral_constant<size_t, t * per_lane + g>{});
                byte = byte | (code << int(g * 8 / per_lane));
              });
              q4[t / 4] = q4[t / 4] | (byte << int(8 * (t % 4)));
            });
            Ops::store_dword_columns(q4, codes.data() + k / per_lane, rows / per_lane, m);
          }
        } else {
          // One code a lane, as store_u8 stores it: L stored rows per transpose, `step`
          // rows per outer step.
          constexpr size_t step = L > 16 ? L : 16, U = step / L;
          for (size_t k = k0; k < k0 + block; k += step) {
            each_index(std::make_index_sequence<U>{}, [&](auto uc) __attribute__((always_inline)) {
              constexpr size_t u = decltype(uc)::value;
              F q[L];
              each_index(std::make_index_sequence<L>{}, [&](auto tc) __attribute__((always_inline)) {
                constexpr size_t t = decltype(tc)::value;
                const F v = F::load_aligned(rp);
                rp += L;
                q[t] = xsimd::bitwise_cast<F>(code_one(v, std::integral_constant<size_t, u * L + t>{}));
              });
              Ops::transpose(q);  // q[j]: column c + j's codes of these L stored rows
              for (size_t j = 0; j < m; ++j) {
                Ops::store_u8(codes.data() + j * rows + k + u * L, xsimd::bitwise_cast<I>(q[j]));
              }
            });
          }
        }
        if constexpr (M) {
          each_index(std::make_index_sequence<16>{}, [&](auto pc) __attribute__((always_inline)) {
            store_sums(pc, pe[pc]);
          });
          store_sums(32, mx);
        }
      }
      for (size_t j = 0; j < m; ++j) {
        if constexpr (G) {
          std::memcpy(job.packed + (c + j) * job.packed_row_bytes, codes.data() + j * (rows / per_lane), rows / per_lane);
        } else {
          pack_codes(codes.data() + j * rows, rows, job.bits, job.packed + (c + j) * job.packed_row_bytes);
        }
      }
    }
  }
  // 8-, 4- and 2-bit codes packed in registers where a block holds whole 16-byte runs of
  // them (the 1.1 B model's ONNX RTN job at 4 bits: the packing pass was 5% of its CPU).
  template <Scheme S, size_t G>
  static void quantize_columns_grouped(const ColumnQuantJob& job) {
    if (job.partials) quantize_columns_as<S, G, true>(job);
    else quantize_columns_as<S, G, false>(job);
  }
  template <Scheme S>
  static void quantize_columns_packed(const ColumnQuantJob& job) {
    auto fits = [&](size_t g) { return job.block % (16 * g) == 0; };  // whole 16-byte runs of a column
    if (job.bits == 8 && fits(1)) return quantize_columns_grouped<S, 1>(job);
    if (job.bits == 4 && fits(2)) return quantize_columns_grouped<S, 2>(job);
    if (job.bits == 2 && fits(4)) return quantize_columns_grouped<S, 4>(job);
    quantize_columns_grouped<S, 0>(job);
  }
  static void quantize_columns(const ColumnQuantJob& job) {
    if (job.rows == 0 || job.cols == 0) return;
    switch (job.scheme) {
      case Scheme::MnnSym: return quantize_columns_packed<Scheme::MnnSym>(job);
      case Scheme::MnnAsym: return quantize_columns_packed<Scheme::MnnAsym>(job);
      case Scheme::Affine: return quantize_columns_packed<Scheme::Affine>(job);
    }
  }

  // ---- llama.cpp blocks ---------------------------------------------------------------
  static constexpr size_t NV = 32 / L;  // vectors per 32-weight block
  static constexpr size_t NH = NV / 2;  // vectors per 16-weight half

  static void put_f16(uint8_t* p, float v) {
    const uint16_t h = ref::f32_to_f16(v);
    std::memcpy(p, &h, 2);
  }
  static float get_f16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return ref::f16_to_f32(h);
  }
  static void store_codes(uint8_t* p, const I* q, size_t count) {
    size_t k = 0;
    for (; k + 4 <= count; k += 4) Ops::store_u8x4(p + k * L, q[k], q[k + 1], q[k + 2], q[k + 3]);
    for (; k < count; ++k) Ops::store_u8(p + k * L, q[k]);
  }
  static void load_block(const float* x, F* v) {
    for (size_t k = 0; k < NV; ++k) v[k] = F::load_unaligned(x + k * L);
  }
  static float block_absmax(const F* v) {
    F m(0.0f);
    for (size_t k = 0; k < NV; ++k) m = Ops::max_keep(xsimd::abs(v[k]), m);
    return Ops::hmax(m);
  }
  // x[j] for the first j whose lane satisfies pred (float compares: +0 matches -0).
  // The block's 32 lane masks are joined into one word first: a branch per vector on
  // which one holds the element mispredicted about once a block (perf: the largest cost
  // of Q4_0, 2026-12-02).
  template <class Pred>
  static float first_where(const float* x, const F* v, const Pred& pred) {
    uint32_t all = 0;
    for (size_t k = 0; k < NV; ++k) all |= uint32_t(Ops::mask_bits(pred(v[k]))) << (k * L);
    return all ? x[first_set(all)] : 0.0f;
  }
  // ggml's "first element of largest magnitude" (+0 when every |x| is 0 or NaN).
  static float block_signed_absmax(const float* x, const F* v) {
    const float amax = block_absmax(v);
    if (!(amax > 0.0f)) return 0.0f;
    const F t(amax);
    return first_where(x, v, [&](F e) { return xsimd::abs(e) == t; });
  }
  // The L blocks of 32 from x, each folded to one vector of lane minima (lo[j]) and one of
  // lane maxima (hi[j]), from +-FLT_MAX with NaN ignored, as block_minmax starts. The
  // blocks two groups on are asked for meanwhile: with every load of a group together and
  // then its coding, the hardware prefetchers fell behind a row streamed from memory (half
  // the speed of block-by-block code; kernels_bench's 64 MiB case, 2026-12-05).
  static void fold_group(const float* x, F* lo, F* hi) {
    for (size_t j = 0; j < L; ++j) {
      __builtin_prefetch(x + 32 * (2 * L + j));
      __builtin_prefetch(x + 32 * (2 * L + j) + 16);
      F l(FLT_MAX), h(-FLT_MAX);
      for (size_t k = 0; k < NV; ++k) {
        const F v = F::load_unaligned(x + 32 * j + k * L);
        l = Ops::min_keep(v, l);
        h = Ops::max_keep(v, h);
      }
      lo[j] = l;
      hi[j] = h;
    }
  }
  // block_signed_absmax of the L blocks from x, lane j for block j. Each block's max and
  // min are folded to one vector apiece (NaN ignored, as block_absmax ignores it) and two
  // transposed reductions give the L of each at once: no horizontal reduction and no
  // search per block (those were a third of Q4_0's quantizer, perf 2026-12-05). The
  // magnitude is max(hi, -lo), and the element reaching it is hi or lo (an exact value,
  // nonzero, so the order of the folds cannot change it); only a block holding both +a
  // and -a needs the first of them, found as block_signed_absmax finds it.
  static F blocks_signed_absmax(const float* x) {
    F hi[L], lo[L];
    fold_group(x, lo, hi);
    const F h = Ops::template reduce_lanes<false>(hi), l = Ops::template reduce_lanes<true>(lo);
    const F nl = l ^ F(-0.0f);
    const F amax = xsimd::select(h > nl, h, nl);
    const auto any = amax > F(0.0f);  // (all NaN: -FLT_MAX; all zero: 0; both give +0, as the reference)
    F m = xsimd::select(any, xsimd::select(h == amax, h, l), F(0.0f));
    if (const uint32_t both = Ops::mask_bits(any && h == amax && nl == amax)) {
      alignas(64) float lanes[L];
      m.store_aligned(lanes);
      for (size_t j = 0; j < L; ++j) {
        if (both >> j & 1u) {
          F v[NV];
          load_block(x + 32 * j, v);
          lanes[j] = block_signed_absmax(x + 32 * j, v);
        }
      }
      m = F::load_aligned(lanes);
    }
    return m;
  }
  // ggml's min/max search from +-FLT_MAX that keeps the first element reaching the
  // extreme: the value is order-free, only a zero's sign needs the first zero.
  static void block_minmax(const float* x, const F* v, float* mn, float* mx) {
    F lo(FLT_MAX), hi(-FLT_MAX);
    for (size_t k = 0; k < NV; ++k) {
      lo = Ops::min_keep(v[k], lo);
      hi = Ops::max_keep(v[k], hi);
    }
    *mn = Ops::hmin(lo);
    *mx = Ops::hmax(hi);
    const F zero(0.0f);
    auto is_zero = [&](F e) { return e == zero; };
    if (*mn == 0.0f) *mn = first_where(x, v, is_zero);
    if (*mx == 0.0f) *mx = first_where(x, v, is_zero);
  }
  // Codes of the low half in the low nibble, high half in the high nibble.
  static void store_nibbles(uint8_t* qs, const I* q) {
    I b[NH];
    for (size_t k = 0; k < NH; ++k) b[k] = (q[k] & I(0x0f)) | ((q[k + NH] & I(0x0f)) << 4);
    store_codes(qs, b, NH);
  }
  // Bit 4 of code e goes to bit e of qh.
  static uint32_t high_bits(const I* q) {
    uint32_t qh = 0;
    for (size_t k = 0; k < NV; ++k) qh |= Ops::sign_bits(q[k] << 27) << (k * L);
    return qh;
  }

  // The group step the legacy quantizers share, for L blocks' d at once (lane j: block
  // j): 1 / d where d is not zero (0 where it is) into id, d's f16 rounding into h, and
  // with kMeasure that rounding read back as dequantize_ggml reads it into dq.
  template <bool kMeasure>
  static void group_scales(F d, float* id, uint16_t* h, float* dq) {
    xsimd::select(d != F(0.0f), Ops::div(F(1.0f), d), F(0.0f)).store_aligned(id);
    Ops::store_f16(h, nan_for_f16(d));
    if constexpr (kMeasure) Ops::load_f16(h).store_aligned(dq);
  }

  // With kMeasure, *err receives sq_err's results for x against the blocks as
  // dequantize_ggml gives them (quantize_ggml_measured): each w_hat vector is made from the
  // codes and the stored f16 d while the block is in registers, with dequantize_ggml's
  // operations, and added to the row's partial sums in element order, as sq_err adds it.
  template <bool kMeasure = false>
  static void quantize_q8_0(const float* x, void* y, size_t n, RowError* err = nullptr) {
    auto* out = static_cast<uint8_t*>(y);
    const size_t nblk = n / 32;
    RowErrorAcc acc;
    // The codes of one block, its d already stored (dq: that d as dequantize_ggml reads it).
    auto code_block = [&](const float* xb, uint8_t* yb, float id, float dq) __attribute__((always_inline)) {
      F v[NV];
      load_block(xb, v);
      const F vid(id), lo(-128.0f), hi(127.0f);
      I q[NV];
      for (size_t k = 0; k < NV; ++k) {
        const F r = v[k] * vid;
        q[k] = select_i32<A>(xsimd::bool_cast(xsimd::isnan(r)), I(0), round_away_clamped(r, lo, hi));
      }
      if constexpr (kMeasure) {
        const F d(dq);
        for (size_t k = 0; k < NV; ++k) acc.add(v[k], Ops::to_float(q[k]) * d);  // the code sign-extended, as stored
      }
      for (size_t k = 0; k < NV; ++k) q[k] = q[k] & I(0xff);
      store_codes(yb + offsetof(BlockQ8_0, qs), q, NV);
    };
    size_t blk = 0;
    // L blocks at a time, as quantize_x_0: their maxima |x| by one transposed reduction
    // (max is order-free on |x| >= +0, NaN ignored as block_absmax ignores it), then d,
    // 1 / d and d's f16 rounding for all L (the same IEEE operations as block by block).
    for (; blk + L <= nblk; blk += L) {
      const float* xg = x + 32 * blk;
      F am[L];
      for (size_t j = 0; j < L; ++j) {
        __builtin_prefetch(xg + 32 * (2 * L + j));  // (fold_group says why)
        __builtin_prefetch(xg + 32 * (2 * L + j) + 16);
        F m(0.0f);
        for (size_t k = 0; k < NV; ++k) m = Ops::max_keep(xsimd::abs(F::load_unaligned(xg + 32 * j + k * L)), m);
        am[j] = m;
      }
      const F d = Ops::div(Ops::template reduce_lanes<false>(am), F(127.0f));
      alignas(64) float id[L], dq[L];
      alignas(64) uint16_t h[L];
      group_scales<kMeasure>(d, id, h, dq);
      for (size_t j = 0; j < L; ++j) {
        uint8_t* yb = out + sizeof(BlockQ8_0) * (blk + j);
        std::memcpy(yb, &h[j], 2);
        code_block(xg + 32 * j, yb, id[j], kMeasure ? dq[j] : 0.0f);
      }
    }
    for (; blk < nblk; ++blk) {
      const float* xb = x + 32 * blk;
      uint8_t* yb = out + sizeof(BlockQ8_0) * blk;
      F v[NV];
      load_block(xb, v);
      const float d = block_absmax(v) / 127.0f;
      put_f16(yb, d);
      code_block(xb, yb, d != 0.0f ? 1.0f / d : 0.0f, kMeasure ? get_f16(yb) : 0.0f);
    }
    if constexpr (kMeasure) *err = acc.result();
  }
  // Q4_0 / Q5_0: d = max / -half, code = trunc_sat(x * id + half + 0.5, 0, hi).
  // The codes of one block, its d already stored (dq: that d as dequantize_ggml reads it;
  // with kMeasure the block's w_hat is added to acc).
  template <class Block, int kHalf, int kHi, bool kMeasure>
  static void codes_x_0(const F* v, float id, float dq, uint8_t* yb, RowErrorAcc& acc) {
    const F vid(id), lo(0.0f);
    const F bias = F(float(kHalf) + 0.5f), hi = F(float(kHi));
    I q[NV];
    // trunc_sat: the truncating conversion truncates, which commutes with clamping to
    // integral bounds; NaN clamps to lo = 0, as trunc_sat gives 0.
    for (size_t k = 0; k < NV; ++k) q[k] = Ops::to_int(Ops::clamp((v[k] * vid) + bias, lo, hi));
    if constexpr (kMeasure) {
      const F d(dq);
      if constexpr (L == 16 && kHi <= 15) {
        // Every code's w_hat in one vector, read by a permute per vector (as
        // quantize_rows_as does; the clamp keeps every code, NaN's too, in [0, 15]): the
        // same products, 2 operations a vector fewer. kernels_bench
        // quantize_ggml_measured/Q4_0/avx512/16KiB, 5 alternations: 724-753 against
        // 745-796 ns (2026-12-07).
        const F table = Ops::to_float(Ops::iota16() - I(kHalf)) * d;
        for (size_t k = 0; k < NV; ++k) acc.add(v[k], Ops::permute16(table, q[k]));
      } else {
        for (size_t k = 0; k < NV; ++k) acc.add(v[k], Ops::to_float(q[k] - I(kHalf)) * d);
      }
    }
    store_nibbles(yb + offsetof(Block, qs), q);
    if constexpr (kHalf == 16) {
      const uint32_t qh = high_bits(q);
      std::memcpy(yb + offsetof(BlockQ5_0, qh), &qh, 4);
    }
  }
  template <class Block, int kHalf, int kHi, bool kMeasure = false>
  static void quantize_x_0(const float* x, void* y, size_t n, RowError* err = nullptr) {
    auto* out = static_cast<uint8_t*>(y);
    const size_t nblk = n / 32;
    size_t blk = 0;
    RowErrorAcc acc;
    // L blocks at a time: their signed maxima first (independent reductions that overlap),
    // then d, 1 / d and d's f16 rounding once for all L, lane j for block j (the same IEEE
    // operations as one block at a time: same bytes). One block at a time, the divisions
    // and the scalar f16 rounding were a serial chain in every block.
    for (; blk + L <= nblk; blk += L) {
      alignas(64) float id[L], dq[L];
      alignas(64) uint16_t h[L];
      const F d = Ops::div(blocks_signed_absmax(x + 32 * blk), F(-float(kHalf)));
      group_scales<kMeasure>(d, id, h, dq);
      for (size_t j = 0; j < L; ++j) {
        uint8_t* yb = out + sizeof(Block) * (blk + j);
        std::memcpy(yb + offsetof(Block, d), &h[j], 2);
        F v[NV];
        load_block(x + 32 * (blk + j), v);
        codes_x_0<Block, kHalf, kHi, kMeasure>(v, id[j], kMeasure ? dq[j] : 0.0f, yb, acc);
      }
    }
    for (; blk < nblk; ++blk) {
      const float* xb = x + 32 * blk;
      uint8_t* yb = out + sizeof(Block) * blk;
      F v[NV];
      load_block(xb, v);
      const float d = block_signed_absmax(xb, v) / -float(kHalf);
      const float id1 = d != 0.0f ? 1.0f / d : 0.0f;
      put_f16(yb + offsetof(Block, d), d);
      codes_x_0<Block, kHalf, kHi, kMeasure>(v, id1, kMeasure ? get_f16(yb + offsetof(Block, d)) : 0.0f, yb, acc);
    }
    if constexpr (kMeasure) *err = acc.result();
  }
  // Q4_1 / Q5_1: d = (max - min) / qmax, code = trunc_sat((x - min) * id + 0.5, 0, hi).
  template <class Block, int kQmax, int kHi, bool kMeasure = false>
  static void quantize_x_1(const float* x, void* y, size_t n, RowError* err = nullptr) {
    auto* out = static_cast<uint8_t*>(y);
    const size_t nblk = n / 32;
    RowErrorAcc acc;
    // The codes of one block, its d and m already stored.
    auto code_block = [&](const float* xb, uint8_t* yb, float mn, float id) __attribute__((always_inline)) {
      F v[NV];
      load_block(xb, v);
      const F vid(id), vmn(mn), half(0.5f), lo(0.0f);
      const F hi = F(float(kHi));
      I q[NV];
      for (size_t k = 0; k < NV; ++k) q[k] = Ops::to_int(Ops::clamp(((v[k] - vmn) * vid) + half, lo, hi));  // as x_0
      if constexpr (kMeasure) {  // dequantize_x's formula: canonical NaN for d, m and the result
        const F dq(ref::canon_nan(get_f16(yb + offsetof(Block, d)))), mq(ref::canon_nan(get_f16(yb + offsetof(Block, m))));
        for (size_t k = 0; k < NV; ++k) {
          const F a = (Ops::to_float(q[k]) * dq) + mq;
          acc.add(v[k], xsimd::select(xsimd::isnan(a), bits(0x7fc00000u), a));
        }
      }
      store_nibbles(yb + offsetof(Block, qs), q);
      if constexpr (kQmax == 31) {
        const uint32_t qh = high_bits(q);
        std::memcpy(yb + offsetof(BlockQ5_1, qh), &qh, 4);
      }
    };
    size_t blk = 0;
    // L blocks at a time, as quantize_x_0: their minima and maxima by two transposed
    // reductions (order-free but for a zero's sign: a block whose min or max is zero takes
    // block_minmax's first-zero rule instead), then d, 1 / d and the f16 roundings of d and
    // min for all L (the same IEEE operations as block by block).
    for (; blk + L <= nblk; blk += L) {
      const float* xg = x + 32 * blk;
      F los[L], his[L];
      fold_group(xg, los, his);
      alignas(64) float mn[L], mx[L], id[L];
      Ops::template reduce_lanes<true>(los).store_aligned(mn);
      Ops::template reduce_lanes<false>(his).store_aligned(mx);
      for (size_t j = 0; j < L; ++j) {
        if (mn[j] == 0.0f || mx[j] == 0.0f) {
          F v[NV];
          load_block(xg + 32 * j, v);
          block_minmax(xg + 32 * j, v, &mn[j], &mx[j]);
        }
      }
      const F vmn = F::load_aligned(mn);
      const F d = Ops::div(F::load_aligned(mx) - vmn, F(float(kQmax)));
      alignas(64) uint16_t hd[L], hm[L];
      group_scales<false>(d, id, hd, nullptr);  // (code_block reads d and m back from the block)
      Ops::store_f16(hm, nan_for_f16(vmn));
      for (size_t j = 0; j < L; ++j) {
        uint8_t* yb = out + sizeof(Block) * (blk + j);
        std::memcpy(yb + offsetof(Block, d), &hd[j], 2);
        std::memcpy(yb + offsetof(Block, m), &hm[j], 2);
        code_block(xg + 32 * j, yb, mn[j], id[j]);
      }
    }
    for (; blk < nblk; ++blk) {
      const float* xb = x + 32 * blk;
      uint8_t* yb = out + sizeof(Block) * blk;
      F v[NV];
      load_block(xb, v);
      float mn, mx;
      block_minmax(xb, v, &mn, &mx);
      const float d = (mx - mn) / float(kQmax);
      put_f16(yb + offsetof(Block, d), d);
      put_f16(yb + offsetof(Block, m), mn);
      code_block(xb, yb, mn, d != 0.0f ? 1.0f / d : 0.0f);
    }
    if constexpr (kMeasure) *err = acc.result();
  }

  static void dequantize_q8_0(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const uint8_t*>(y);
    for (size_t blk = 0; blk < n / 32; ++blk) {
      const uint8_t* yb = in + sizeof(BlockQ8_0) * blk;
      const F d(get_f16(yb));
      for (size_t k = 0; k < NV; ++k) {
        const I q = (Ops::load_u8(yb + offsetof(BlockQ8_0, qs) + k * L) ^ I(0x80)) - I(0x80);  // sign-extend
        (Ops::to_float(q) * d).store_unaligned(x + 32 * blk + k * L);
      }
    }
  }
  // Bit e of qh as 0 or 16, for lanes e = base .. base + L - 1.
  static I high_nibble_bit(uint32_t qh, size_t base) {
    // A plain array: std::array's members would be weak symbols outside the ISA's
    // namespace in a -O0 build (kernels/isa_namespace.h).
    alignas(64) static constexpr uint32_t kBit[32] = {
        1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
        1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
        1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
        1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};
    const I sel = xsimd::bitwise_cast<I>(U::load_aligned(kBit + base));
    return select_i32<A>((I(int32_t(qh)) & sel) != I(0), I(16), I(0));
  }
  // Q4_0, Q4_1, Q5_0, Q5_1: code e from the nibbles (and qh), then (code - off) * d [+ m].
  template <class Block, bool kHasMin, bool kHasHigh>
  static void dequantize_x(const void* y, float* x, size_t n) {
    const auto* in = static_cast<const uint8_t*>(y);
    for (size_t blk = 0; blk < n / 32; ++blk) {
      const uint8_t* yb = in + sizeof(Block) * blk;
      float* xb = x + 32 * blk;
      const F d(kHasMin ? ref::canon_nan(get_f16(yb + offsetof(Block, d))) : get_f16(yb + offsetof(Block, d)));
      uint32_t qh = 0;
      const uint8_t* qs;
      float m = 0.0f;
      if constexpr (kHasMin) m = ref::canon_nan(get_f16(yb + 2));
      if constexpr (kHasHigh) std::memcpy(&qh, yb + (kHasMin ? 4 : 2), 4);
      qs = yb + (kHasMin ? 4 : 2) + (kHasHigh ? 4 : 0);
      const I off(kHasMin ? 0 : (kHasHigh ? 16 : 8));
      const F vm(m);
      for (size_t k = 0; k < NH; ++k) {
        const I b = Ops::load_u8(qs + k * L);
        I lo = b & I(0x0f), hi = b >> 4;
        if constexpr (kHasHigh) {
          lo = lo | high_nibble_bit(qh, k * L);
          hi = hi | high_nibble_bit(qh, 16 + k * L);
        }
        if constexpr (kHasMin) {  // a NaN result made canonical, as the reference does
          const F a = (Ops::to_float(lo) * d) + vm, b2 = (Ops::to_float(hi) * d) + vm;
          xsimd::select(xsimd::isnan(a), bits(0x7fc00000u), a).store_unaligned(xb + k * L);
          xsimd::select(xsimd::isnan(b2), bits(0x7fc00000u), b2).store_unaligned(xb + 16 + k * L);
        } else {
          (Ops::to_float(lo - off) * d).store_unaligned(xb + k * L);
          (Ops::to_float(hi - off) * d).store_unaligned(xb + 16 + k * L);
        }
      }
    }
  }
};

// The kernel table of one ISA. The ISA file wraps it in its function-local static.
// The registry's view of this body (kernels/kernel_tables.h make_kernels): Prims' kernels,
// the per-block-type ones by GgmlBlock, and this ISA's HQQ kernels from hqq_<isa>.cpp.
template <class A>
struct SimdKernels : Prims<A> {
  using P = Prims<A>;
  static constexpr auto hqq_solve_blocks = &::wq::hqq_solve_blocks;
  static constexpr auto hqq_step_blocks = &::wq::hqq_step_blocks;

  // K-quants, IQ4 and the legacy types' importance-matrix path: the searches one block
  // per lane (kernels/ggml_kquant_simd.h); the K-quant and IQ4 dequantizers are
  // kernels/ggml_kquant_dequant_simd.h's. A type without a body here would run the scalar
  // reference (kernels/ggml_row_reference.h) compiled for this ISA; none is left.
  template <GgmlBlock T>
  static void quantize_ggml(const float* x, void* y, size_t n, const float* imatrix) {
    using KQ = KquantSearch<A>;
    if (imatrix && ref::kLegacyImatrix<T>) {
      if constexpr (T == GgmlBlock::Q4_0) KQ::template quantize_legacy_imatrix<BlockQ4_0, 8, false>(x, y, n, imatrix);
      else if constexpr (T == GgmlBlock::Q5_0) KQ::template quantize_legacy_imatrix<BlockQ5_0, 16, false>(x, y, n, imatrix);
      else if constexpr (T == GgmlBlock::Q4_1) KQ::template quantize_legacy_imatrix<BlockQ4_1, 15, true>(x, y, n, imatrix);
      else if constexpr (T == GgmlBlock::Q5_1) KQ::template quantize_legacy_imatrix<BlockQ5_1, 31, true>(x, y, n, imatrix);
    } else if constexpr (T == GgmlBlock::Q8_0) P::quantize_q8_0(x, y, n);
    else if constexpr (T == GgmlBlock::Q4_0) P::template quantize_x_0<BlockQ4_0, 8, 15>(x, y, n);
    else if constexpr (T == GgmlBlock::Q4_1) P::template quantize_x_1<BlockQ4_1, 15, 15>(x, y, n);
    else if constexpr (T == GgmlBlock::Q5_0) P::template quantize_x_0<BlockQ5_0, 16, 31>(x, y, n);
    else if constexpr (T == GgmlBlock::Q5_1) P::template quantize_x_1<BlockQ5_1, 31, 255>(x, y, n);
    else if constexpr (T == GgmlBlock::Q2_K) KquantSearch<A>::quantize_q2(x, y, n, imatrix);
    else if constexpr (T == GgmlBlock::Q3_K) KquantSearch<A>::quantize_q3(x, y, n, imatrix);
    else if constexpr (T == GgmlBlock::Q4_K) KquantSearch<A>::template quantize_k4<15, BlockQ4_K>(x, y, n, imatrix);
    else if constexpr (T == GgmlBlock::Q5_K) KquantSearch<A>::template quantize_k4<31, BlockQ5_K>(x, y, n, imatrix);
    else if constexpr (T == GgmlBlock::Q6_K) KquantSearch<A>::quantize_q6(x, y, n, imatrix);
    else if constexpr (T == GgmlBlock::IQ4_NL) KquantSearch<A>::template quantize_iq4<32, BlockIQ4_NL>(x, y, n, imatrix);
    else if constexpr (T == GgmlBlock::IQ4_XS) KquantSearch<A>::template quantize_iq4<256, BlockIQ4_XS>(x, y, n, imatrix);
    else ref::quantize_row<T>(x, static_cast<Block<T>*>(y), n, imatrix);
  }
  template <GgmlBlock T>
  static void dequantize_ggml(const void* y, float* x, size_t n) {
    if constexpr (T == GgmlBlock::Q8_0) P::dequantize_q8_0(y, x, n);
    else if constexpr (T == GgmlBlock::Q4_0) P::template dequantize_x<BlockQ4_0, false, false>(y, x, n);
    else if constexpr (T == GgmlBlock::Q4_1) P::template dequantize_x<BlockQ4_1, true, false>(y, x, n);
    else if constexpr (T == GgmlBlock::Q5_0) P::template dequantize_x<BlockQ5_0, false, true>(y, x, n);
    else if constexpr (T == GgmlBlock::Q5_1) P::template dequantize_x<BlockQ5_1, true, true>(y, x, n);
    else if constexpr (T == GgmlBlock::Q2_K) KquantDequant<A>::q2_K(y, x, n);
    else if constexpr (T == GgmlBlock::Q4_K) KquantDequant<A>::q4_K(y, x, n);
    else if constexpr (T == GgmlBlock::Q5_K) KquantDequant<A>::q5_K(y, x, n);
    else if constexpr (T == GgmlBlock::Q6_K) KquantDequant<A>::q6_K(y, x, n);
    else if constexpr (T == GgmlBlock::Q3_K) KquantDequant<A>::q3_K(y, x, n);
    else if constexpr (T == GgmlBlock::IQ4_NL) KquantDequant<A>::iq4_nl(y, x, n);
    else if constexpr (T == GgmlBlock::IQ4_XS) KquantDequant<A>::iq4_xs(y, x, n);
    else ref::dequantize_row<T>(static_cast<const Block<T>*>(y), x, n);
  }
  // The legacy types' own quantizers measure as they code; every other type (and the
  // legacy types' importance path, a search) quantizes, then dequantizes and measures
  // the row while it is in L1 (kernels/fused_rows.h).
  template <GgmlBlock T>
  static void quantize_ggml_measured(const float* x, void* y, size_t n, const float* imatrix, RowError* err) {
    if (!imatrix || !ref::kLegacyImatrix<T>) {
      if constexpr (T == GgmlBlock::Q8_0) return P::template quantize_q8_0<true>(x, y, n, err);
      else if constexpr (T == GgmlBlock::Q4_0) return P::template quantize_x_0<BlockQ4_0, 8, 15, true>(x, y, n, err);
      else if constexpr (T == GgmlBlock::Q4_1) return P::template quantize_x_1<BlockQ4_1, 15, 15, true>(x, y, n, err);
      else if constexpr (T == GgmlBlock::Q5_0) return P::template quantize_x_0<BlockQ5_0, 16, 31, true>(x, y, n, err);
      else if constexpr (T == GgmlBlock::Q5_1) return P::template quantize_x_1<BlockQ5_1, 31, 255, true>(x, y, n, err);
    }
    quantize_ggml_then_measure<SimdKernels, T>(x, y, n, imatrix, err);
  }
};

WQ_END_ISA_NAMESPACE
}  // namespace wq::simd

// The whole of an ISA's kernels_<isa>.cpp: its table, built from this body on xsimd's
// `arch`, inside the ISA's namespace.
#define WQ_DEFINE_SIMD_TABLE(arch, isa_id)                                                  \
  namespace wq {                                                                          \
  WQ_BEGIN_ISA_NAMESPACE                                                                  \
  const Kernels* kernel_table() {                                                         \
    static const Kernels table = make_kernels<simd::SimdKernels<arch>>(Isa::isa_id);      \
    return &table;                                                                        \
  }                                                                                       \
  WQ_END_ISA_NAMESPACE                                                                    \
  }
