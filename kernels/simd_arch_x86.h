// ArchOps for x86: AVX2 (with F16C) and AVX-512 (F/BW/DQ/VL). See kernels/simd_arch.h
// for the contract. Included only by translation units compiled with -mavx2 (and the
// AVX-512 part only under -mavx512bw), so no instruction here can reach a CPU without it.
#pragma once

#include "kernels/isa_namespace.h"

#include <immintrin.h>

#include <cstring>

#include "kernels/simd_arch.h"

namespace wq::simd {
WQ_BEGIN_ISA_NAMESPACE

template <>
struct ArchOps<xsimd::avx2> {
  using F = xsimd::batch<float, xsimd::avx2>;
  using I = xsimd::batch<int32_t, xsimd::avx2>;
  using U16 = xsimd::batch<uint16_t, xsimd::avx2>;
  using M = xsimd::batch_bool<float, xsimd::avx2>;

  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F sqrt(F x) { return _mm256_sqrt_ps(x); }
  static F rint(F x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I to_int(F x) { return _mm256_cvttps_epi32(x); }
  static F to_float(I x) { return _mm256_cvtepi32_ps(x); }
  // MINPS/MAXPS return the second operand when either is NaN or both are zero, so
  // min(x, acc) is exactly (x < acc) ? x : acc, for every input.
  static F min_keep(F x, F acc) { return _mm256_min_ps(x, acc); }
  static F max_keep(F x, F acc) { return _mm256_max_ps(x, acc); }
  static F clamp(F x, F lo, F hi) { return _mm256_min_ps(_mm256_max_ps(x, lo), hi); }
  static F clamp0(F x, F hi) { return _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), hi); }
  static float hmin(F v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static float hmax(F v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  template <bool kMin>
  static F reduce_lanes(const F* v) {
    return fold_lanes(v, [](__m256 a, __m256 b) { return kMin ? _mm256_min_ps(a, b) : _mm256_max_ps(a, b); });
  }
  static F sum_lanes(const F* v) { return fold_lanes(v, [](__m256 a, __m256 b) { return _mm256_add_ps(a, b); }); }
  // A transposed reduction: three levels of (two shuffles, one fold) over pairs. The
  // shuffles leave lane j holding input slot (j % 4) * 2 + j / 4, so slot s reads v[perm(s)].
  // Each level folds lane i of a vector with lane i + 4, then i + 2, then i + 1: the order
  // of ref::sum16's tree (what sum_lanes promises).
  template <class Fold>
  static F fold_lanes(const F* v, Fold fold) {
    auto in = [&](int s) -> __m256 { return v[(s % 2) * 4 + s / 2]; };
    __m256 l1[4], l2[2];
    for (int i = 0; i < 4; ++i) {
      const __m256 a = in(2 * i), b = in(2 * i + 1);
      l1[i] = fold(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    }
    for (int i = 0; i < 2; ++i) {
      l2[i] = fold(_mm256_shuffle_ps(l1[2 * i], l1[2 * i + 1], 0x44), _mm256_shuffle_ps(l1[2 * i], l1[2 * i + 1], 0xEE));
    }
    return fold(_mm256_shuffle_ps(l2[0], l2[1], 0x88), _mm256_shuffle_ps(l2[0], l2[1], 0xDD));
  }
  static uint32_t mask_bits(M m) { return uint32_t(_mm256_movemask_ps(m)); }
  static I mask_ones(M m) { return _mm256_castps_si256(m); }
  static uint32_t sign_bits(I v) { return uint32_t(_mm256_movemask_ps(_mm256_castsi256_ps(v))); }

  static F load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_f16(uint16_t* p, F x) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static I load_u16(const uint16_t* p) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static I load_u8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_u8(uint8_t* p, I v) {
    // Saturating packs (int32 -> uint16 -> uint8) work per 128-bit half, so dword 0 of
    // each half holds 4 bytes of the result.
    __m256i w = _mm256_packus_epi32(v, v);
    w = _mm256_packus_epi16(w, w);
    const __m128i r = _mm_unpacklo_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), r);
  }
  static void store_u8x4(uint8_t* p, I a, I b, I c, I d) {
    // After the two packs, dwords are [a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7].
    const __m256i ab = _mm256_packus_epi32(a, b);
    const __m256i cd = _mm256_packus_epi32(c, d);
    const __m256i abcd = _mm256_packus_epi16(ab, cd);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permutevar8x32_epi32(abcd, order));
  }
  static void store_nibbles_x4(uint8_t* p, I a, I b, I c, I d) {
    // The bytes as store_u8x4 orders them; a uint16 lane holds (c0, c1) as c0 | c1 << 8.
    const __m256i ab = _mm256_packus_epi32(a, b), cd = _mm256_packus_epi32(c, d);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
    const __m256i nib = _mm256_and_si256(_mm256_or_si256(v, _mm256_srli_epi16(v, 4)), _mm256_set1_epi16(0xff));
    const __m256i w = _mm256_packus_epi16(nib, nib);  // [n0-7 n0-7 | n8-15 n8-15]
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(_mm256_permute4x64_epi64(w, 0x08)));
  }
  // PSHUFB looks byte 0 of each lane up in the table (the other bytes look up t[0]); the
  // shifts keep that byte, sign-extended.
  static I lookup16(const int8_t* t, I i) {
    const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
    return _mm256_srai_epi32(_mm256_slli_epi32(_mm256_shuffle_epi8(tbl, i), 24), 24);
  }
  // As the AVX-512 one: column 4 h + e ends in half h of r[e].
  static void store_dword_columns(const I* q, uint8_t* dst, size_t stride, size_t m) {
    const __m256i a = _mm256_unpacklo_epi32(q[0], q[1]), b = _mm256_unpackhi_epi32(q[0], q[1]);
    const __m256i c = _mm256_unpacklo_epi32(q[2], q[3]), d = _mm256_unpackhi_epi32(q[2], q[3]);
    const __m256i r[4] = {_mm256_unpacklo_epi64(a, c), _mm256_unpackhi_epi64(a, c), _mm256_unpacklo_epi64(b, d),
                          _mm256_unpackhi_epi64(b, d)};
    for (size_t j = 0; j < m; ++j) {
      const __m128i v = j < 4 ? _mm256_castsi256_si128(r[j % 4]) : _mm256_extracti128_si256(r[j % 4], 1);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j * stride), v);
    }
  }
  // Pairs of lanes (unpack), then pairs of pairs (shuffle), then 128-bit halves.
  static void transpose(F* v) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
      u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
      v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
  }
  static U16 load_u8_as_u16(const uint8_t* p) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_u16_as_u8(uint8_t* p, U16 v) {
    const __m256i w = _mm256_packus_epi16(v, v);  // [v0-7 v0-7 | v8-15 v8-15]
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(_mm256_permute4x64_epi64(w, 0x08)));
  }
};

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
template <>
struct ArchOps<xsimd::avx512bw> {
  using F = xsimd::batch<float, xsimd::avx512bw>;
  using I = xsimd::batch<int32_t, xsimd::avx512bw>;
  using U16 = xsimd::batch<uint16_t, xsimd::avx512bw>;
  using M = xsimd::batch_bool<float, xsimd::avx512bw>;

  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F sqrt(F x) { return _mm512_sqrt_ps(x); }
  static F rint(F x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static I to_int(F x) { return _mm512_cvttps_epi32(x); }
  static F to_float(I x) { return _mm512_cvtepi32_ps(x); }
  // VMINPS/VMAXPS: second operand on NaN or equal zeros, as MINPS: exact formulas.
  static F min_keep(F x, F acc) { return _mm512_min_ps(x, acc); }
  static F max_keep(F x, F acc) { return _mm512_max_ps(x, acc); }
  static F clamp(F x, F lo, F hi) { return _mm512_min_ps(_mm512_max_ps(x, lo), hi); }
  static F clamp0(F x, F hi) { return _mm512_min_ps(_mm512_max_ps(x, _mm512_setzero_ps()), hi); }
  static float hmin(F v) { return _mm512_reduce_min_ps(v); }
  static float hmax(F v) { return _mm512_reduce_max_ps(v); }
  template <bool kMin>
  static F reduce_lanes(const F* v) {
    return fold_lanes(v, [](__m512 a, __m512 b) { return kMin ? _mm512_min_ps(a, b) : _mm512_max_ps(a, b); });
  }
  static F sum_lanes(const F* v) { return fold_lanes(v, [](__m512 a, __m512 b) { return _mm512_add_ps(a, b); }); }
  // A transposed reduction: four levels of (two shuffles, one fold) over pairs. The
  // shuffles leave lane 4q + r holding input slot 4r + q, so slot s reads v[perm(s)].
  // Each level folds lane i of a vector with lane i + 8, then i + 4, i + 2, i + 1: the
  // order of ref::sum16's tree (what sum_lanes promises).
  template <class Fold>
  static F fold_lanes(const F* v, Fold fold) {
    auto in = [&](int s) -> __m512 { return v[(s % 4) * 4 + s / 4]; };
    __m512 l1[8], l2[4], l3[2];
    for (int i = 0; i < 8; ++i) {
      const __m512 a = in(2 * i), b = in(2 * i + 1);
      l1[i] = fold(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    }
    for (int i = 0; i < 4; ++i) {
      l2[i] = fold(_mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], 0x88),
                   _mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], 0xDD));
    }
    for (int i = 0; i < 2; ++i) {
      l3[i] = fold(_mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], 0x44), _mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], 0xEE));
    }
    return fold(_mm512_shuffle_ps(l3[0], l3[1], 0x88), _mm512_shuffle_ps(l3[0], l3[1], 0xDD));
  }
  static uint32_t mask_bits(M m) { return uint32_t(m.data); }
  static I mask_ones(M m) { return _mm512_movm_epi32(m); }
  static uint32_t sign_bits(I v) { return uint32_t(_mm512_movepi32_mask(v)); }

  static F load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store_f16(uint16_t* p, F x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static I load_u16(const uint16_t* p) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static I load_u8(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_u8(uint8_t* p, I v) {
    const __m512i pos = _mm512_max_epi32(v, _mm512_setzero_si512());
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtusepi32_epi8(pos));
  }
  static void store_u8x4(uint8_t* p, I a, I b, I c, I d) {
    _mm512_storeu_si512(p, bytes_x4(a, b, c, d));
  }
  static void store_nibbles_x4(uint8_t* p, I a, I b, I c, I d) {
    const __m512i v = bytes_x4(a, b, c, d);  // a uint16 lane holds (c0, c1) as c0 | c1 << 8
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi16_epi8(_mm512_or_si512(v, _mm512_srli_epi16(v, 4))));
  }
  // The 4L lanes as bytes in order, saturated to [0, 255]: the packs work per 128-bit
  // lane, which ends as dwords [a_k b_k c_k d_k] (x_k = x's elements 4k..4k+3); one
  // permute restores the order.
  static __m512i bytes_x4(I a, I b, I c, I d) {
    const __m512i abcd = _mm512_packus_epi16(_mm512_packus_epi32(a, b), _mm512_packus_epi32(c, d));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_epi32(order, abcd);
  }
  static I lookup16(const int8_t* t, I i) {
    return _mm512_permutexvar_epi32(i, _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t))));
  }
  // Lane j of q[0], q[1], q[2], q[3] (16 bytes) to dst + j * stride, for j < m: the four
  // dwords of each column gathered within 128-bit lanes by two levels of unpacks (column
  // 4 l + e ends in lane l of r[e]), each 128-bit lane then stored whole.
  static void store_dword_columns(const I* q, uint8_t* dst, size_t stride, size_t m) {
    const __m512i a = _mm512_unpacklo_epi32(q[0], q[1]), b = _mm512_unpackhi_epi32(q[0], q[1]);
    const __m512i c = _mm512_unpacklo_epi32(q[2], q[3]), d = _mm512_unpackhi_epi32(q[2], q[3]);
    const __m512i r[4] = {_mm512_unpacklo_epi64(a, c), _mm512_unpackhi_epi64(a, c), _mm512_unpacklo_epi64(b, d),
                          _mm512_unpackhi_epi64(b, d)};
    auto at = [&](size_t j) { return reinterpret_cast<__m128i*>(dst + j * stride); };
    if (m == 16) {
      for (int e = 0; e < 4; ++e) {
        _mm_storeu_si128(at(size_t(e)), _mm512_castsi512_si128(r[e]));
        _mm_storeu_si128(at(size_t(4 + e)), _mm512_extracti32x4_epi32(r[e], 1));
        _mm_storeu_si128(at(size_t(8 + e)), _mm512_extracti32x4_epi32(r[e], 2));
        _mm_storeu_si128(at(size_t(12 + e)), _mm512_extracti32x4_epi32(r[e], 3));
      }
    } else {
      alignas(64) uint8_t t[4][64];
      for (int e = 0; e < 4; ++e) _mm512_store_si512(t[e], r[e]);
      for (size_t j = 0; j < m; ++j) std::memcpy(dst + j * stride, &t[j % 4][16 * (j / 4)], 16);
    }
  }
  // (AVX-512 only, for the body's L == 16 paths) lane k = t's lane (i_k & 15); and the
  // int32 lanes 0, 1, ..., 15.
  static F permute16(F t, I i) { return _mm512_permutexvar_ps(i, t); }
  static I iota16() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  // Four levels of 16 shuffles. After the 32- and 64-bit unpacks, u[4 i + c] holds in its
  // 128-bit lane k the elements 4 k + c of rows 4 i .. 4 i + 3; two levels of 128-bit
  // lane shuffles then gather, for output row 4 k + c, lane k of u[c], u[4 + c],
  // u[8 + c] and u[12 + c]. (Through memory, as this was until a Zen 5 was at hand to
  // test it, a 16 x 16 tile cost 256 scalar moves.)
  static void transpose(F* v) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
    }
    auto lo64 = [](__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); };
    auto hi64 = [](__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); };
    for (int i = 0; i < 16; i += 4) {
      u[i] = lo64(t[i], t[i + 2]);
      u[i + 1] = hi64(t[i], t[i + 2]);
      u[i + 2] = lo64(t[i + 1], t[i + 3]);
      u[i + 3] = hi64(t[i + 1], t[i + 3]);
    }
    for (int c = 0; c < 4; ++c) {
      const __m512 p_lo = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), p_hi = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
      const __m512 q_lo = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44), q_hi = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
      v[c] = _mm512_shuffle_f32x4(p_lo, q_lo, 0x88);
      v[4 + c] = _mm512_shuffle_f32x4(p_lo, q_lo, 0xDD);
      v[8 + c] = _mm512_shuffle_f32x4(p_hi, q_hi, 0x88);
      v[12 + c] = _mm512_shuffle_f32x4(p_hi, q_hi, 0xDD);
    }
  }
  static U16 load_u8_as_u16(const uint8_t* p) {
    return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store_u16_as_u8(uint8_t* p, U16 v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi16_epi8(v));
  }
};
#endif

WQ_END_ISA_NAMESPACE
}  // namespace wq::simd
