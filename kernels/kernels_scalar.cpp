// The scalar reference table, in namespace wq::isa_scalar: the oracle every SIMD table is
// tested against.
// Written for clarity of semantics, one element at a time.
#include <cstring>

#include "kernels/fused_rows.h"
#include "kernels/ggml_row_reference.h"
#include "kernels/ggml_types.h"
#include "kernels/kernel_tables.h"
#include "kernels/reference.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE
namespace {

struct ScalarPrims {
  static void widen_f16(const uint16_t* src, float* dst, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] = ref::f16_to_f32(src[i]);
  }
  static void widen_bf16(const uint16_t* src, float* dst, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] = ref::bf16_to_f32(src[i]);
  }
  static void narrow_f16(const float* src, uint16_t* dst, size_t n) {
    for (size_t i = 0; i < n; ++i) dst[i] = ref::f32_to_f16(src[i]);
  }
  // In 16 x 16 tiles (a cache line of each side), so that the table without SIMD, which
  // CPUs without AVX2 run, is not a stride-per-element walk over the destination.
  static void transpose32(const uint32_t* src, size_t ld_src, size_t rows, size_t cols, uint32_t* dst, size_t ld_dst) {
    constexpr size_t T = 16;
    for (size_t r0 = 0; r0 < rows; r0 += T)
      for (size_t c0 = 0; c0 < cols; c0 += T)
        for (size_t c = c0; c < std::min(c0 + T, cols); ++c)
          for (size_t r = r0; r < std::min(r0 + T, rows); ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
  }
  static void minmax(const float* x, size_t n, float* mn, float* mx) {
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; ++i) {
      lo = (x[i] < lo) ? x[i] : lo;  // NaN compares false: ignored
      hi = (x[i] > hi) ? x[i] : hi;
    }
    *mn = ref::canon_zero(lo);
    *mx = ref::canon_zero(hi);
  }
  static void affine_params(const float* x, size_t nblocks, size_t block, int bits, bool round_zero, float* scale,
                            float* zero, float* inv_scale) {
    ref::affine_params_each(x, 0, nblocks, block, bits, round_zero, scale, zero, inv_scale, minmax);
  }
  static float absmax(const float* x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; ++i) {
      const float a = ref::abs_f(x[i]);
      m = (a > m) ? a : m;
    }
    return m;
  }
  static size_t find_nonfinite(const void* src, DType dtype, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      bool bad;
      if (dtype == DType::F32) {
        uint32_t u;
        std::memcpy(&u, static_cast<const uint8_t*>(src) + 4 * i, 4);
        bad = (u & 0x7f800000u) == 0x7f800000u;
      } else {
        uint16_t h;
        std::memcpy(&h, static_cast<const uint8_t*>(src) + 2 * i, 2);
        bad = dtype == DType::F16 ? (h & 0x7c00u) == 0x7c00u : (h & 0x7f80u) == 0x7f80u;
      }
      if (bad) return i;
    }
    return n;
  }
  static void quantize_codes(const float* x, size_t n, const BlockCodec& c, uint8_t* codes) {
    for (size_t i = 0; i < n; ++i) codes[i] = ref::quantize_one(x[i], c);
  }
  static void dequantize_codes(const uint8_t* codes, size_t n, const BlockCodec& c, float* out) {
    const BlockCodec k = ref::canon_nan_params(c);
    for (size_t i = 0; i < n; ++i) out[i] = ref::dequantize_one(codes[i], k);
  }
  static void pack_codes(const uint8_t* codes, size_t n, int bits, uint8_t* out) {
    if (n == 0) return;  // out may be null: no memset on it
    const size_t nbytes = (n * size_t(bits) + 7) / 8;
    std::memset(out, 0, nbytes);
    for (size_t i = 0; i < n; ++i) {
      const size_t bit = i * size_t(bits);
      const uint32_t v = uint32_t(codes[i]) << (bit & 7);
      out[bit >> 3] |= uint8_t(v);
      if ((bit & 7) + size_t(bits) > 8) out[(bit >> 3) + 1] |= uint8_t(v >> 8);
    }
  }
  static void unpack_codes(const uint8_t* in, size_t n, int bits, uint8_t* codes) {
    const uint32_t mask = (1u << bits) - 1u;
    const size_t nbytes = (n * size_t(bits) + 7) / 8;
    for (size_t i = 0; i < n; ++i) {
      const size_t bit = i * size_t(bits);
      uint32_t v = in[bit >> 3];
      if ((bit >> 3) + 1 < nbytes) v |= uint32_t(in[(bit >> 3) + 1]) << 8;
      codes[i] = uint8_t((v >> (bit & 7)) & mask);
    }
  }
  static void codes_error_partials(const float* x, const uint8_t* codes, size_t n, size_t block, Scheme scheme,
                                   int bits, const float* scales, const float* zeros, float* partials) {
    codes_error_partials_by_definition<ScalarPrims>(x, codes, n, block, scheme, bits, scales, zeros, partials);
  }
  static void sq_err_partials(const float* a, const float* b, size_t n, float* p) {
    for (size_t i = 0; i < n; ++i) {
      const float d = a[i] - b[i];
      p[i % 16] += d * d;
      p[16 + i % 16] += a[i] * a[i];
      const float ad = ref::abs_f(d);
      p[32] = ad > p[32] ? ad : p[32];  // a NaN difference compares false: skipped
    }
  }
  static void sq_err(const float* a, const float* b, size_t n, double* err2, double* ref2, float* max_abs) {
    float p[kColumnPartialPlanes] = {};
    sq_err_partials(a, b, n, p);
    const RowError e = ref::partials_error(p, 1);
    *err2 = e.err2;
    *ref2 = e.ref2;
    *max_abs = e.max_abs;
  }
};

// The registry's view of the scalar reference (kernels/kernel_tables.h make_kernels).
struct ScalarKernels : ScalarPrims {
  static constexpr auto quantize_rows = quantize_rows_body<ScalarPrims>;
  static constexpr auto quantize_columns = quantize_columns_body<ScalarPrims>;
  static constexpr auto hqq_solve_blocks = &::wq::hqq_solve_blocks;
  static constexpr auto hqq_step_blocks = &::wq::hqq_step_blocks;

  template <GgmlBlock T>
  static void quantize_ggml(const float* x, void* y, size_t n, const float* imatrix) {
    ref::quantize_row<T>(x, static_cast<Block<T>*>(y), n, imatrix);
  }
  template <GgmlBlock T>
  static void dequantize_ggml(const void* y, float* x, size_t n) {
    ref::dequantize_row<T>(static_cast<const Block<T>*>(y), x, n);
  }
  template <GgmlBlock T>
  static void quantize_ggml_measured(const float* x, void* y, size_t n, const float* imatrix, RowError* err) {
    quantize_ggml_then_measure<ScalarKernels, T>(x, y, n, imatrix, err);
  }
};

}  // namespace

const Kernels* kernel_table() {
  static const Kernels table = make_kernels<ScalarKernels>(Isa::Scalar);
  return &table;
}

WQ_END_ISA_NAMESPACE
}  // namespace wq
