// The error measured while quantizing (row sums filled tile by tile, in cache) against
// the two-pass measurement (tensor_error / ggml_tensor_error after the fact): the same
// figures to the last bit, and the same output bytes with and without measuring, for every
// scheme, every input dtype, f16 parameters, MNN's flush of tiny weights, HQQ's two stop
// rules, every GGUF block type, every ISA and several thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "engine/ggml_quantize.h"
#include "engine/metrics.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"
#include "kernels/ggml_types.h"
#include "kernels/reference.h"
#include "tests/test_support.h"

namespace wq {
namespace {

// A weight matrix in one dtype: f32 values, and their f16/bf16 encodings when asked (the
// f32 values are the encodings widened, so every dtype holds the same weights).
struct Weights {
  size_t rows, cols;
  DType dtype;
  std::vector<float> f32;
  std::vector<uint16_t> half;
  TensorView view() const {
    TensorView t;
    t.name = "w";
    t.shape = {int64_t(rows), int64_t(cols)};
    t.dtype = dtype;
    t.data = dtype == DType::F32 ? static_cast<const void*>(f32.data()) : half.data();
    t.nbytes = rows * cols * dtype_size(dtype);
    return t;
  }
};

// bf16 by truncation: any bf16 values do here.
uint16_t upper_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

// Normal weights with a few subnormals and -0s (so MNN's flush changes something).
Weights make_weights(size_t rows, size_t cols, DType dtype, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  Weights w{rows, cols, dtype, std::vector<float>(rows * cols), {}};
  for (float& x : w.f32) x = d(g);
  for (size_t i = 3; i < w.f32.size(); i += 97) w.f32[i] = (i % 2) ? -0.0f : 1e-39f;
  if (dtype == DType::F32) return w;
  w.half.resize(w.f32.size());
  for (size_t i = 0; i < w.f32.size(); ++i) {
    w.half[i] = dtype == DType::F16 ? ref::f32_to_f16(w.f32[i]) : upper_half(w.f32[i]);
  }
  return w;
}

template <class A, class B>
bool same_bits(const A& a, const B& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

void expect_same_figures(const ErrorMetrics& a, const ErrorMetrics& b, const std::string& what) {
  // Bit equality: the fused sums must be the very same doubles, not close ones.
  EXPECT_EQ(std::memcmp(&a.rel_rmse, &b.rel_rmse, sizeof(double)), 0) << what << ": " << a.rel_rmse << " vs " << b.rel_rmse;
  EXPECT_EQ(std::memcmp(&a.snr_db, &b.snr_db, sizeof(double)), 0) << what;
  EXPECT_EQ(std::memcmp(&a.max_abs, &b.max_abs, sizeof(double)), 0) << what;
  EXPECT_EQ(std::memcmp(&a.rmse, &b.rmse, sizeof(double)), 0) << what;
  EXPECT_EQ(a.count, b.count) << what;
  EXPECT_GT(a.rel_rmse, 0.0) << what << ": a lossy scheme measured as exact";
}

QuantSpec spec(int bits, int64_t block, bool asym) {
  QuantSpec s;
  s.bits = bits;
  s.block = block;
  s.asym = asym;
  return s;
}

std::vector<QuantSpec> specs() {
  // Blocks of whole vectors on every ISA (measured by the kernel as it codes), 8-bit
  // (codes stored straight), and block 8 (partial vectors on AVX-512: measured from L1
  // after the row is coded).
  std::vector<QuantSpec> v = {spec(4, 64, false), spec(3, 128, true), spec(8, 0, true), spec(2, 32, false),
                              spec(8, 64, false), spec(6, 16, true), spec(4, 8, true), spec(5, 8, false)};
  QuantSpec f16 = spec(4, 32, true);
  f16.fp16 = true;
  v.push_back(f16);
  QuantSpec trunc = spec(5, 64, false);
  trunc.fp16 = trunc.fp16_truncate = true;
  v.push_back(trunc);
  QuantSpec flush = spec(4, 64, true);
  flush.mnn_flush = true;
  v.push_back(flush);
  QuantSpec hqq = spec(4, 64, true);
  hqq.hqq = true;
  v.push_back(hqq);
  QuantSpec hqq3 = spec(3, 32, true);  // the per-block solver measures its own rows
  hqq3.hqq = true;
  v.push_back(hqq3);
  QuantSpec hqq_f16 = hqq;  // f16 parameters: measured after the rounding, from the tile
  hqq_f16.fp16 = true;
  v.push_back(hqq_f16);
  QuantSpec hqq_tensor = hqq;
  hqq_tensor.hqq_opts.stop = HqqStop::Tensor;
  hqq_tensor.fp16 = true;
  hqq_tensor.mnn_flush = true;
  v.push_back(hqq_tensor);
  return v;
}

class FusedMetrics : public ::testing::TestWithParam<Isa> {};

TEST_P(FusedMetrics, SchemesGiveTheTwoPassFiguresAndTheSameBytes) {
  WQ_REQUIRE_ISA(GetParam());
  const Kernels* k = kernels_for(GetParam());
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const Weights w = make_weights(70, 256, dt, 11);  // 70 rows: tiles of uneven sizes
    for (const QuantSpec& s : specs()) {
      const size_t block = s.block ? size_t(s.block) : w.cols;
      const std::string what = s.describe() + " from " + dtype_name(dt);
      for (int threads : {1, 3}) {
        Scheduler sched(threads);
        sched.run([&] {
          const QuantizedTensor plain = quantize_tensor(w.view(), s, block, k);
          std::vector<ErrorSums> sums;
          const QuantizedTensor fused = quantize_tensor(w.view(), s, block, k, &sums);
          ASSERT_EQ(sums.size(), w.rows);
          EXPECT_EQ(fused.packed, plain.packed) << what;
          EXPECT_EQ(fused.scales_f16, plain.scales_f16) << what;
          EXPECT_TRUE(same_bits(fused.scales, plain.scales)) << what;
          EXPECT_TRUE(same_bits(fused.zeros, plain.zeros)) << what;
          expect_same_figures(combine_error_sums(sums), tensor_error(w.view(), plain, k), what);
        });
      }
    }
  }
}

// Weights near float's limit: the kernel's float sums overflow to Inf, so those rows are
// summed again in double as the two-pass measurement does; finite, equal figures.
TEST_P(FusedMetrics, RowsWhoseFloatSumsOverflowGiveTheDoubleFigures) {
  WQ_REQUIRE_ISA(GetParam());
  const Kernels* k = kernels_for(GetParam());
  Weights w = make_weights(24, 128, DType::F32, 7);
  for (size_t r = 0; r < w.rows; r += 3) {
    for (size_t c = 0; c < w.cols; ++c) w.f32[r * w.cols + c] *= 1e22f;  // squares past FLT_MAX
  }
  for (const QuantSpec& s : {spec(4, 64, true), spec(4, 8, false)}) {
    const size_t block = size_t(s.block);
    Scheduler sched(2);
    sched.run([&] {
      const QuantizedTensor plain = quantize_tensor(w.view(), s, block, k);
      std::vector<ErrorSums> sums;
      const QuantizedTensor fused = quantize_tensor(w.view(), s, block, k, &sums);
      EXPECT_EQ(fused.packed, plain.packed) << s.describe();
      ASSERT_EQ(sums.size(), w.rows);
      EXPECT_TRUE(std::isfinite(sums[0].err2) && std::isfinite(sums[0].ref2)) << s.describe();
      EXPECT_GT(sums[0].ref2, 1e30) << s.describe() << ": the scaled row's sum is beyond float";
      const ErrorMetrics m = combine_error_sums(sums);
      EXPECT_TRUE(std::isfinite(m.rel_rmse)) << s.describe();
      expect_same_figures(m, tensor_error(w.view(), plain, k), s.describe());
    });
  }
}

// Weights so small that their squares vanish in float (1e-30: MNN's schemes and the
// GGUF types keep nothing of them: zeros, or a zero point): the figures are the double
// sums' (relative RMSE 1 for zeros, more for a zero point), not "exact" (0 / 0 read as
// rel RMSE 0, SNR infinite), the same fused or not.
TEST_P(FusedMetrics, RowsWhoseFloatSquaresVanishGiveTheDoubleFigures) {
  WQ_REQUIRE_ISA(GetParam());
  const Kernels* k = kernels_for(GetParam());
  Weights w = make_weights(6, 256, DType::F32, 9);
  for (float& x : w.f32) x *= 1e-29f;  // |w| ~ 1e-30
  auto nothing_kept = [](const ErrorMetrics& m, const std::string& what) {
    EXPECT_GE(m.rel_rmse, 1.0 - 1e-6) << what;
    EXPECT_LE(m.snr_db, 1e-4) << what;
    EXPECT_GT(m.max_abs, 0.0) << what;
  };
  auto near_one = [&](const ErrorMetrics& fused, const ErrorMetrics& two_pass, const std::string& what) {
    nothing_kept(fused, what + " fused");
    nothing_kept(two_pass, what + " two-pass");
    EXPECT_NEAR(fused.rel_rmse, two_pass.rel_rmse, 1e-9 * two_pass.rel_rmse) << what;
  };
  for (const QuantSpec& s : {spec(8, 32, false), spec(4, 64, true), spec(4, 8, false)}) {
    Scheduler sched(2);
    sched.run([&] {
      std::vector<ErrorSums> sums;
      const QuantizedTensor q = quantize_tensor(w.view(), s, size_t(s.block), k, &sums);
      near_one(combine_error_sums(sums), tensor_error(w.view(), q, k), s.describe());
    });
  }
  for (GgmlBlock t : {GgmlBlock::Q4_0, GgmlBlock::Q8_0, GgmlBlock::Q4_K, GgmlBlock::Q6_K}) {
    Scheduler sched(2);
    sched.run([&] {
      std::vector<uint8_t> out;
      std::vector<ErrorSums> sums;
      quantize_ggml_tensor(w.view(), t, QuantSpec{}, out, k, nullptr, &sums);
      near_one(combine_error_sums(sums), ggml_tensor_error(w.view(), t, out.data(), k), ggml_block_name(t));
    });
  }
}

TEST_P(FusedMetrics, GgmlTypesGiveTheTwoPassFiguresAndTheSameBytes) {
  WQ_REQUIRE_ISA(GetParam());
  const Kernels* k = kernels_for(GetParam());
  for (DType dt : {DType::F32, DType::BF16}) {
    const Weights w = make_weights(40, 512, dt, 5);
    for (const GgmlTypeTraits& t : kGgmlTraits) {
      for (bool hqq : {false, true}) {
        if (hqq && !(t.has_min && t.weights == 32)) continue;  // HQQ needs a zero point
        QuantSpec s;
        s.hqq = s.asym = hqq;
        const std::string what = std::string(t.name) + (hqq ? " hqq" : "") + " from " + dtype_name(dt);
        Scheduler sched(2);
        sched.run([&] {
          std::vector<uint8_t> plain, fused;
          std::vector<ErrorSums> sums;
          quantize_ggml_tensor(w.view(), t.type, s, plain, k);
          quantize_ggml_tensor(w.view(), t.type, s, fused, k, nullptr, &sums);
          EXPECT_EQ(fused, plain) << what;
          ASSERT_EQ(sums.size(), w.rows);
          expect_same_figures(combine_error_sums(sums), ggml_tensor_error(w.view(), t.type, plain.data(), k), what);
        });
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, FusedMetrics, ::testing::ValuesIn(test::all_isas()), test::isa_param_name);

}  // namespace
}  // namespace wq
