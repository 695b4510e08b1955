// ArchOps for AArch64 Advanced SIMD (xsimd::neon64). See kernels/simd_arch.h for the
// contract. FMINNM/FMAXNM are not used for the NaN-ignoring min/max: they turn a
// signalling NaN into a NaN result, so compare + select gives the one rule every ISA keeps.
#pragma once

#include "kernels/isa_namespace.h"

#include <arm_neon.h>

#include <cstring>

#include "kernels/simd_arch.h"

namespace wq::simd {
WQ_BEGIN_ISA_NAMESPACE

template <>
struct ArchOps<xsimd::neon64> {
  using F = xsimd::batch<float, xsimd::neon64>;
  using I = xsimd::batch<int32_t, xsimd::neon64>;
  using U16 = xsimd::batch<uint16_t, xsimd::neon64>;
  using M = xsimd::batch_bool<float, xsimd::neon64>;

  static F div(F a, F b) { return vdivq_f32(a, b); }
  static F sqrt(F x) { return vsqrtq_f32(x); }
  static F rint(F x) { return vrndnq_f32(x); }
  static I to_int(F x) { return vcvtq_s32_f32(x); }
  static F to_float(I x) { return vcvtq_f32_s32(x); }
  static F min_keep(F x, F acc) { return vbslq_f32(vcltq_f32(x, acc), x, acc); }
  static F max_keep(F x, F acc) { return vbslq_f32(vcgtq_f32(x, acc), x, acc); }
  static F clamp(F x, F lo, F hi) {
    const float32x4_t a = vbslq_f32(vcgeq_f32(x, lo), x, lo);
    return vbslq_f32(vcleq_f32(a, hi), a, hi);
  }
  static F clamp0(F x, F hi) { return vaddq_f32(clamp(x, vdupq_n_f32(0.0f), hi), vdupq_n_f32(0.0f)); }
  static float hmin(F v) { return vminvq_f32(v); }
  static float hmax(F v) { return vmaxvq_f32(v); }
  // Pairwise FMINP/FMAXP: two levels give lane j = fold of v[j] (no NaN lanes, so their
  // NaN rule does not matter).
  template <bool kMin>
  static F reduce_lanes(const F* v) {
    auto fold = [](float32x4_t a, float32x4_t b) { return kMin ? vpminq_f32(a, b) : vpmaxq_f32(a, b); };
    return fold(fold(v[0], v[1]), fold(v[2], v[3]));
  }
  // FADDP would add lanes 0 + 1 first; ref::sum16's order is (0 + 2) + (1 + 3): halves
  // added first (lane i with i + 2 of each input), then the even and odd lanes.
  static F sum_lanes(const F* v) {
    auto halves = [](float32x4_t a, float32x4_t b) {
      return vaddq_f32(vcombine_f32(vget_low_f32(a), vget_low_f32(b)), vcombine_f32(vget_high_f32(a), vget_high_f32(b)));
    };
    const float32x4_t ab = halves(v[0], v[1]), cd = halves(v[2], v[3]);
    return vaddq_f32(vuzp1q_f32(ab, cd), vuzp2q_f32(ab, cd));
  }
  static I mask_ones(M m) { return vreinterpretq_s32_u32(m); }
  static uint32_t mask_bits(M m) {
    static const uint32_t kWeights[4] = {1, 2, 4, 8};
    return vaddvq_u32(vandq_u32(m, vld1q_u32(kWeights)));
  }
  static uint32_t sign_bits(I v) {
    static const int32_t kShifts[4] = {0, 1, 2, 3};
    const uint32x4_t s = vshrq_n_u32(vreinterpretq_u32_s32(v), 31);
    return vaddvq_u32(vshlq_u32(s, vld1q_s32(kShifts)));
  }

  static F load_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static void store_f16(uint16_t* p, F x) { vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(x))); }
  static I load_u16(const uint16_t* p) { return vreinterpretq_s32_u32(vmovl_u16(vld1_u16(p))); }
  static I load_u8(const uint8_t* p) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    const uint16x8_t h = vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(w)));
    return vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(h)));
  }
  // SQXTUN (int32 -> uint16, negatives to 0) then UQXTN (uint16 -> uint8): saturation.
  static void store_u8(uint8_t* p, I v) {
    const uint16x4_t h = vqmovun_s32(v);
    const uint8x8_t b = vqmovn_u16(vcombine_u16(h, h));
    const uint32_t w = vget_lane_u32(vreinterpret_u32_u8(b), 0);
    std::memcpy(p, &w, 4);
  }
  static uint8x16_t bytes_x4(I a, I b, I c, I d) {
    const uint16x8_t ab = vcombine_u16(vqmovun_s32(a), vqmovun_s32(b));
    const uint16x8_t cd = vcombine_u16(vqmovun_s32(c), vqmovun_s32(d));
    return vcombine_u8(vqmovn_u16(ab), vqmovn_u16(cd));
  }
  static void store_u8x4(uint8_t* p, I a, I b, I c, I d) { vst1q_u8(p, bytes_x4(a, b, c, d)); }
  static void store_nibbles_x4(uint8_t* p, I a, I b, I c, I d) {
    const uint16x8_t v = vreinterpretq_u16_u8(bytes_x4(a, b, c, d));  // (c0, c1) as c0 | c1 << 8
    vst1_u8(p, vmovn_u16(vorrq_u16(v, vshrq_n_u16(v, 4))));
  }
  // TBL on the indices narrowed to bytes, then widened back with their sign.
  static I lookup16(const int8_t* t, I i) {
    const uint16x4_t h = vmovn_u32(vreinterpretq_u32_s32(i));
    const int8x8_t v = vqtbl1_s8(vld1q_s8(t), vmovn_u16(vcombine_u16(h, h)));
    return vmovl_s16(vget_low_s16(vmovl_s8(v)));
  }
  // Column j = lane j of q[0..3], a 4 x 4 transpose of dwords.
  static void store_dword_columns(const I* q, uint8_t* dst, size_t stride, size_t m) {
    const int32x4x2_t a = vtrnq_s32(q[0], q[1]);  // q0[0] q1[0] q0[2] q1[2] | q0[1] q1[1] q0[3] q1[3]
    const int32x4x2_t b = vtrnq_s32(q[2], q[3]);
    const int32x4_t r[4] = {vcombine_s32(vget_low_s32(a.val[0]), vget_low_s32(b.val[0])),
                            vcombine_s32(vget_low_s32(a.val[1]), vget_low_s32(b.val[1])),
                            vcombine_s32(vget_high_s32(a.val[0]), vget_high_s32(b.val[0])),
                            vcombine_s32(vget_high_s32(a.val[1]), vget_high_s32(b.val[1]))};
    for (size_t j = 0; j < m; ++j) vst1q_s32(reinterpret_cast<int32_t*>(dst + j * stride), r[j]);
  }
  static void transpose(F* v) {
    const float32x4x2_t a = vtrnq_f32(v[0], v[1]);  // v0[0] v1[0] v0[2] v1[2] | v0[1] v1[1] v0[3] v1[3]
    const float32x4x2_t b = vtrnq_f32(v[2], v[3]);
    v[0] = vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0]));
    v[1] = vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1]));
    v[2] = vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0]));
    v[3] = vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1]));
  }
  static U16 load_u8_as_u16(const uint8_t* p) { return vmovl_u8(vld1_u8(p)); }
  static void store_u16_as_u8(uint8_t* p, U16 v) { vst1_u8(p, vmovn_u16(v)); }
};

WQ_END_ISA_NAMESPACE
}  // namespace wq::simd
