// The few per-ISA primitives the SIMD kernel body (kernels/simd_body.h) needs and xsimd
// 8.1 lacks or gets wrong for our purpose. Each ISA specialises ArchOps<Arch> in its own
// header, compiled only in that ISA's translation unit (guarded by the compiler's ISA
// macro). Everything else in the body is plain xsimd.
//
// Why not xsimd for these:
//   - xsimd 8.1's float division on NEON is a reciprocal estimate plus Newton steps, not
//     IEEE division; nearbyint on NEON goes through a generic emulation.
//   - xsimd's min/max follow the instruction (x86 MINPS keeps the second operand on NaN,
//     NEON FMIN propagates NaN); the kernels need one defined NaN rule on every ISA.
//   - f16 <-> f32 conversion, narrowing int32/uint16 lanes to bytes, lane masks as bits.
//
// Contract every specialisation meets (F = batch<float>, I = batch<int32_t>,
// U16 = batch<uint16_t>, M = batch_bool<float>, L = F::size lanes):
//   div(a, b)           IEEE a / b, round to nearest even.
//   sqrt(x)             IEEE square root, round to nearest even (xsimd 8.1's float sqrt
//                       on NEON is an estimate plus Newton steps too).
//   rint(x)             round to nearest even; NaN stays NaN, +-Inf stays.
//   to_int(x)           truncation toward zero; x must be within int32 range.
//   to_float(i)         exact for |i| < 2^24.
//   min_keep(x, acc)    exactly (x < acc) ? x : acc, and (x > acc) ? x : acc, for every
//   max_keep(x, acc)    input: a NaN x leaves acc, a NaN acc stays, equal zeros give acc.
//   clamp(x, lo, hi)    NaN -> lo, else min(max(x, lo), hi); a zero's sign unspecified
//                       (only used where the result is then converted to an integer).
//   clamp0(x, hi)       NaN -> +0, else min(max(x, +0), hi), a zero always +0 (x86's
//                       MAXPS gives its second operand, +0, for -0; NEON adds +0).
//   hmin(v), hmax(v)    over lanes holding no NaN; a zero's sign unspecified.
//   reduce_lanes<kMin>(v)  L vectors in, one out: lane j = hmin(v[j]) (kMin) or hmax(v[j]),
//                       the same values (no NaN lanes; a zero's sign unspecified) for L
//                       vectors at the cost of a few shuffles each.
//   sum_lanes(v)        L vectors in, one out: lane j = the sum of v[j]'s lanes in
//                       ref::sum16's tree order (lane i + lane i + L/2 first, then i + L/4,
//                       ...), so the bits equal a store and that scalar tree.
//   mask_bits(m)        bit i set when lane i of m is true.
//   mask_ones(m)        int32 lanes: -1 where m is true, 0 elsewhere.
//   sign_bits(i)        bit i = sign bit of int32 lane i.
//   load_f16(p)         L halves at p, widened exactly (NaN quieted, payload kept).
//   store_f16(p, x)     L halves, round to nearest even, overflow to Inf; a NaN keeps its
//                       sign and top mantissa bits (the body canonicalises NaN first).
//   load_u16(p)         L uint16 at p, zero-extended to int32 lanes.
//   load_u8(p)          L bytes at p, zero-extended to int32 lanes.
//   store_u8(p, i)      L bytes, each lane saturated to [0, 255] (so INT_MIN, what x86
//                       converts NaN to, stores 0).
//   store_u8x4(p,a,b,c,d)  4L bytes: a's lanes, then b's, c's, d's; saturated as store_u8.
//   store_nibbles_x4(p,a,b,c,d)  the 4L lanes (each in [0, 15] after saturating as
//                       store_u8) as 2L bytes, lane 2k in the low nibble of byte k.
//   lookup16(t, i)      lane k = t[i_k], sign-extended; t holds 16 int8, every i_k is in
//                       [0, 15] (IQ4's non-linear levels, kValuesIq4nl).
//   permute16(t, i)     (L == 16 only) lane k = lane (i_k & 15) of t, bits moved.
//   iota16()            (L == 16 only) int32 lanes 0, 1, ..., 15.
//   store_dword_columns(q, dst, stride, m)  for j < m: lane j of q[0], q[1], q[2], q[3]
//                       (16 bytes, little-endian dwords) to dst + j * stride.
//   transpose(v)        L vectors in place: lane j of v[i] becomes lane i of v[j] (bits moved,
//                       never computed on).
//   load_u8_as_u16(p)   U16::size bytes at p, zero-extended to uint16 lanes.
//   store_u16_as_u8(p, v)  U16::size bytes; every lane must be in [0, 255].
// No pointer needs any alignment.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

namespace wq::simd {
WQ_BEGIN_ISA_NAMESPACE

template <class Arch>
struct ArchOps;

// select() on int32 lanes. xsimd 8.1's avx512bw::select switches on the element size at
// run time, so at -O0 (Debug builds) it instantiates the 8- and 16-bit blends for int32
// batches and does not compile; the AVX-512 blend is called directly instead.
template <class A>
xsimd::batch<int32_t, A> select_i32(xsimd::batch_bool<int32_t, A> m, xsimd::batch<int32_t, A> a,
                                    xsimd::batch<int32_t, A> b) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<A, xsimd::avx512bw>) {
    return _mm512_mask_blend_epi32(static_cast<__mmask16>(m), b, a);
  } else
#endif
  {
    return xsimd::select(m, a, b);
  }
}


WQ_END_ISA_NAMESPACE
}  // namespace wq::simd

#if defined(__AVX2__)
#include "kernels/simd_arch_x86.h"
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include "kernels/simd_arch_neon.h"
#endif
