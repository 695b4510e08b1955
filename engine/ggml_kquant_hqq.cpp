#include "engine/ggml_kquant_hqq.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/ggml_blocks.h"
#include "kernels/ggml_kquant_reference.h"

namespace wq {

namespace {

// Where a type keeps its sub-block scales, mins and codes (ggml-quants.c's layouts).
template <class B>
struct KMin;

// Q4_K and Q5_K share their head: d, dmin and 8 6-bit scales and mins in 12 bytes.
template <class B>
struct K4Head {
  static constexpr int kSub = 32, kNsub = 8, kMmax = 63;
  static void get(const B& b, int j, uint8_t* sc, uint8_t* m) { ref::get_scale_min_k4(j, b.scales, sc, m); }
  static void put(B& b, const uint8_t* sc, const uint8_t* m) {
    for (int j = 0; j < kNsub; ++j) ref::put_scale_min_k4(j, sc[j], m[j], b.scales);  // ascending: j >= 4 ORs into j - 4's
  }
};

template <>
struct KMin<BlockQ4_K> : K4Head<BlockQ4_K> {
  static constexpr int kNmax = 15, kBits = 4;
  static void unpack(const BlockQ4_K& b, uint8_t* L) {
    const uint8_t* q = b.qs;
    for (int j = 0; j < 256; j += 64, q += 32) {
      for (int l = 0; l < 32; ++l) {
        L[j + l] = q[l] & 0xF;
        L[j + l + 32] = q[l] >> 4;
      }
    }
  }
  static void pack(const uint8_t* L, BlockQ4_K& b) { ref::pack_q4_K(L, &b); }
};

template <>
struct KMin<BlockQ5_K> : K4Head<BlockQ5_K> {
  static constexpr int kNmax = 31, kBits = 5;
  static void unpack(const BlockQ5_K& b, uint8_t* L) {
    const uint8_t* ql = b.qs;
    for (int n = 0; n < 4; ++n, ql += 32) {
      const uint8_t m1 = uint8_t(1u << (2 * n)), m2 = uint8_t(2u << (2 * n));
      for (int j = 0; j < 32; ++j) {
        L[64 * n + j] = uint8_t((ql[j] & 0xF) + ((b.qh[j] & m1) ? 16 : 0));
        L[64 * n + j + 32] = uint8_t((ql[j] >> 4) + ((b.qh[j] & m2) ? 16 : 0));
      }
    }
  }
  static void pack(const uint8_t* L, BlockQ5_K& b) { ref::pack_q5_K(L, &b); }
};

template <>
struct KMin<BlockQ2_K> {
  static constexpr int kSub = 16, kNsub = 16, kMmax = 15, kNmax = 3, kBits = 2;
  static void get(const BlockQ2_K& b, int j, uint8_t* sc, uint8_t* m) {
    *sc = b.scales[j] & 0xF;
    *m = uint8_t(b.scales[j] >> 4);
  }
  static void put(BlockQ2_K& b, const uint8_t* sc, const uint8_t* m) {
    for (int j = 0; j < kNsub; ++j) b.scales[j] = uint8_t(sc[j] | (m[j] << 4));
  }
  static void unpack(const BlockQ2_K& b, uint8_t* L) {  // pack_2bit's inverse
    for (int j = 0; j < 256; j += 128) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q = b.qs[j / 4 + l];
        for (int s = 0; s < 4; ++s) L[j + l + 32 * s] = (q >> (2 * s)) & 3;
      }
    }
  }
  static void pack(const uint8_t* L, BlockQ2_K& b) { ref::pack_2bit(L, b.qs); }
};

// A sub-block's codes for minimum m1 (requantize_k4's / requantize_q2's formula) and
// the squared error of what the dequantizer makes of them (s * q - m1, its products).
template <class T>
double sub_block_error(const float* x, const float* qw, float s, float m1, uint8_t* L) {
  double err = 0;
  for (int l = 0; l < T::kSub; ++l) {
    int q = ref::nearest_int((x[l] + m1) / s);
    q = q < 0 ? 0 : q > T::kNmax ? T::kNmax : q;
    L[l] = uint8_t(q);
    const float e = x[l] - ((s * float(q)) - m1);
    err += double(qw ? qw[l] : 1.0f) * double(e) * double(e);
  }
  return err;
}

template <class B>
void refine_row(const float* x, B* blocks, size_t n, const float* qw, const HqqParams& hp, const Kernels& k) {
  using T = KMin<B>;
  const size_t nsb = n / T::kSub;
  std::vector<float> inv(nsb), zero(nsb);
  std::vector<uint8_t> ok(nsb), hqq_codes(n);
  std::vector<int> steps(nsb);
  for (size_t i = 0; i < n / 256; ++i) {
    const float d = ref::half(blocks[i].d), dmin = ref::half(blocks[i].dmin);
    for (int j = 0; j < T::kNsub; ++j) {
      const size_t sb = i * T::kNsub + size_t(j);
      uint8_t sc, m;
      T::get(blocks[i], j, &sc, &m);
      const float s = d * float(sc);
      ok[sb] = std::isfinite(d) && std::isfinite(dmin) && dmin > 0.0f && s > 0.0f;
      inv[sb] = ok[sb] ? 1.0f / s : 1.0f;  // unrefinable sub-blocks get a harmless start, their result unused
      zero[sb] = ok[sb] ? (dmin * float(m)) / s : 0.0f;
    }
  }
  HqqParams h = hp;
  h.bits = T::kBits;
  k.hqq_solve_blocks(x, nsb, size_t(T::kSub), h, inv.data(), zero.data(), hqq_codes.data(), steps.data());

  uint8_t L[256], cand[T::kSub], best_codes[T::kSub];  // cand: the plain codes, only measured
  for (size_t i = 0; i < n / 256; ++i) {
    B& b = blocks[i];
    const float d = ref::half(b.d), dmin = ref::half(b.dmin);
    uint8_t sc[T::kNsub], m[T::kNsub];
    for (int j = 0; j < T::kNsub; ++j) T::get(b, j, &sc[j], &m[j]);
    bool changed = false;
    for (int j = 0; j < T::kNsub; ++j) {
      const size_t sb = i * T::kNsub + size_t(j);
      if (!ok[sb]) continue;
      const float s = d * float(sc[j]);
      const float t = (zero[sb] * s) / dmin;  // the solved minimum in units of dmin
      if (!std::isfinite(t)) continue;
      const float* xs = x + sb * T::kSub;
      const float* ws = qw ? qw + sb * T::kSub : nullptr;
      int c = ref::nearest_int(t);
      c = c < 0 ? 0 : c > T::kMmax ? T::kMmax : c;
      if (c == m[j]) continue;
      const double plain = sub_block_error<T>(xs, ws, s, dmin * float(m[j]), cand);
      const double solved = sub_block_error<T>(xs, ws, s, dmin * float(c), best_codes);
      if (!(solved < plain)) continue;
      const uint8_t best_m = uint8_t(c);
      if (!changed) T::unpack(b, L);
      changed = true;
      m[j] = best_m;
      for (int l = 0; l < T::kSub; ++l) L[j * T::kSub + l] = best_codes[l];
    }
    if (changed) {
      T::put(b, sc, m);
      T::pack(L, b);
    }
  }
}

}  // namespace

bool hqq_refines_kquant(GgmlBlock t) { return t == GgmlBlock::Q2_K || t == GgmlBlock::Q4_K || t == GgmlBlock::Q5_K; }

void hqq_refine_kquant_row(GgmlBlock t, const float* x, void* blocks, size_t n, const float* imatrix, const HqqParams& hp,
                           const Kernels& k) {
  switch (t) {
    case GgmlBlock::Q2_K: refine_row(x, static_cast<BlockQ2_K*>(blocks), n, imatrix, hp, k); break;
    case GgmlBlock::Q4_K: refine_row(x, static_cast<BlockQ4_K*>(blocks), n, imatrix, hp, k); break;
    case GgmlBlock::Q5_K: refine_row(x, static_cast<BlockQ5_K*>(blocks), n, imatrix, hp, k); break;
    default: break;
  }
}

}  // namespace wq
