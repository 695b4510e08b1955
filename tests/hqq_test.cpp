// HQQ against the reference's golden cases (shared/data/hqq-golden, README there), under
// every ISA; thread-count invariance; and RTN vs HQQ on a heavy-tailed tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "engine/metrics.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"
#include "io/model_reader.h"
#include "tests/test_support.h"

namespace wq {
namespace {

struct Golden {
  std::string path;
  std::unique_ptr<ModelReader> r;
  std::map<std::string, std::string> meta;
  int bits = 0;
  size_t group = 0;

  std::vector<float> f32(const std::string& name) {
    const long i = r->find(name);
    if (i < 0) return {};
    return test::read_f32(*r, size_t(i));
  }
  std::vector<uint8_t> u8(const std::string& name) {
    size_t n;
    const uint8_t* p = r->raw(size_t(r->find(name)), &n);
    return std::vector<uint8_t>(p, p + n);
  }
  TensorView W() { return r->view(size_t(r->find("W"))); }
};

std::vector<std::string> golden_files() {
  std::vector<std::string> out;
  const std::string dir = test::shared_file("data/hqq-golden");
  if (dir.empty()) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Golden load(const std::string& path) {
  Golden g;
  g.path = path;
  g.r = open_model(path);
  g.meta = g.r->string_metadata();
  g.bits = std::stoi(g.meta.at("nbits"));
  g.group = std::stoul(g.meta.at("group_size"));
  return g;
}

QuantSpec hqq_spec(int bits, size_t group, int steps, float kappa, bool round_zero, HqqStop stop) {
  QuantSpec s;
  s.bits = bits;
  s.block = int64_t(group);
  s.hqq = true;
  s.asym = true;
  s.hqq_opts.max_steps = steps;
  s.hqq_opts.kappa = kappa;
  s.hqq_opts.round_zero = round_zero;
  s.hqq_opts.stop = stop;
  return s;
}

std::vector<uint8_t> codes_of(const QuantizedTensor& q) {
  std::vector<uint8_t> c(q.rows * q.cols);
  for (size_t r = 0; r < q.rows; ++r)
    kernels_for(Isa::Scalar)->unpack_codes(q.packed.data() + r * q.packed_row_bytes, q.cols, q.spec.bits, c.data() + r * q.cols);
  return c;
}

double rel_err(const TensorView& w, const QuantizedTensor& q, const Kernels* k) { return tensor_error(w, q, k).rel_rmse; }

class HqqGolden : public ::testing::TestWithParam<Isa> {};

TEST_P(HqqGolden, RtnStartIsBitExact) {
  WQ_REQUIRE_ISA(GetParam());
  const auto files = golden_files();
  if (files.empty()) GTEST_SKIP() << "shared/data/hqq-golden is absent (../shared is not beside this checkout)";
  const Kernels* k = kernels_for(GetParam());
  for (const std::string& f : files) {
    Golden g = load(f);
    const TensorView w = g.W();
    const QuantizedTensor q = quantize_tensor(w, hqq_spec(g.bits, g.group, 0, 1.01f, false, HqqStop::Block), g.group, k);
    EXPECT_EQ(codes_of(q), g.u8("rtn_q")) << f;
    EXPECT_EQ(q.scales, g.f32("rtn_scale")) << f;
    EXPECT_EQ(q.zeros, g.f32("rtn_zero")) << f;
    std::vector<float> wh(q.rows * q.cols);
    dequantize_tensor(q, wh.data(), k);
    EXPECT_EQ(wh, g.f32("rtn_w_hat")) << f;
    EXPECT_NEAR(rel_err(w, q, k), std::stod(g.meta.at("rtn_rel_err")), 1e-6 * std::stod(g.meta.at("rtn_rel_err")) + 1e-12) << f;
  }
}

struct Method {
  const char* name;
  float kappa;
  bool round_zero;
};
const Method kMethods[] = {{"hqq", 1.01f, false}, {"hqq_rz", 1.01f, true}, {"hqq028", 1.0f, false}};

TEST_P(HqqGolden, ReferenceRuleMeetsThePassCriteria) {
  WQ_REQUIRE_ISA(GetParam());
  const auto files = golden_files();
  if (files.empty()) GTEST_SKIP() << "shared/data/hqq-golden is absent";
  const Kernels* k = kernels_for(GetParam());
  int cases = 0;
  double sum_ratio = 0, max_ratio = 0;
  for (const std::string& f : files) {
    Golden g = load(f);
    const TensorView w = g.W();
    for (const Method& m : kMethods) {
      const std::string M = m.name;
      if (!g.meta.count(M + "_rel_err")) continue;
      ++cases;
      const QuantizedTensor q =
          quantize_tensor(w, hqq_spec(g.bits, g.group, 20, m.kappa, m.round_zero, HqqStop::Tensor), g.group, k);
      const std::string at = f + " " + M;
      EXPECT_EQ(q.scales, g.f32(M + "_scale")) << at;
      EXPECT_LE(std::abs(q.solver_steps - std::stoi(g.meta.at(M + "_steps"))), 1) << at;
      const std::vector<uint8_t> mine = codes_of(q), ref = g.u8(M + "_q");
      size_t diff = 0;
      for (size_t i = 0; i < mine.size(); ++i) {
        if (mine[i] != ref[i]) {
          ++diff;
          EXPECT_LE(std::abs(int(mine[i]) - int(ref[i])), 1) << at << " element " << i;
        }
      }
      EXPECT_LE(double(diff), 0.001 * double(mine.size())) << at;
      const double want = std::stod(g.meta.at(M + "_rel_err"));
      const double got = rel_err(w, q, k);
      EXPECT_NEAR(got, want, 0.001 * want) << at;
      sum_ratio += want > 0 ? got / want : 1.0;
      max_ratio = std::max(max_ratio, want > 0 ? got / want : 1.0);
      const std::vector<float> zref = g.f32(M + "_zero");
      size_t far = 0;
      for (size_t b = 0; b < zref.size(); ++b) far += std::fabs(q.zeros[b] - zref[b]) > 1e-3f;
      EXPECT_LE(double(far), 0.02 * double(zref.size())) << at;
    }
  }
  EXPECT_GE(cases, 36 * 2);
  if (cases) std::printf("reference rule: rel_err / reference rel_err: mean %.6f, max %.6f over %d cases\n", sum_ratio / cases, max_ratio, cases);
}

TEST_P(HqqGolden, PerBlockRuleIsNeverWorseThanTheReference) {
  WQ_REQUIRE_ISA(GetParam());
  const auto files = golden_files();
  if (files.empty()) GTEST_SKIP() << "shared/data/hqq-golden is absent";
  const Kernels* k = kernels_for(GetParam());
  double sum_ratio = 0, max_ratio = 0, min_ratio = INFINITY;
  int n = 0;
  for (const std::string& f : files) {
    Golden g = load(f);
    const TensorView w = g.W();
    for (const Method& m : kMethods) {
      const std::string M = m.name;
      if (!g.meta.count(M + "_rel_err")) continue;
      const QuantizedTensor q =
          quantize_tensor(w, hqq_spec(g.bits, g.group, 20, m.kappa, m.round_zero, HqqStop::Block), g.group, k);
      const double want = std::stod(g.meta.at(M + "_rel_err"));
      const double got = rel_err(w, q, k);
      EXPECT_LE(got, want * 1.001) << f << " " << M;
      const double ratio = want > 0 ? got / want : 1.0;
      sum_ratio += ratio;
      max_ratio = std::max(max_ratio, ratio);
      min_ratio = std::min(min_ratio, ratio);
      ++n;
    }
  }
  if (n) {
    std::printf("per-block rule: rel_err / reference rel_err: mean %.6f, min %.6f, max %.6f over %d cases\n",
                sum_ratio / n, min_ratio, max_ratio, n);
  }
}

TEST_P(HqqGolden, SameBytesForAnyThreadCountAndEveryIsa) {
  WQ_REQUIRE_ISA(GetParam());
  const Kernels* k = kernels_for(GetParam());
  std::mt19937 gen(3);
  std::student_t_distribution<float> t(3.0f);
  const size_t rows = 200, cols = 512;
  std::vector<float> v(rows * cols);
  for (float& x : v) x = 0.02f * t(gen);
  TensorView w{"t", {int64_t(rows), int64_t(cols)}, DType::F32, v.data(), v.size() * 4};
  for (HqqStop stop : {HqqStop::Block, HqqStop::Tensor}) {
    const QuantSpec s = hqq_spec(3, 64, 20, 1.01f, false, stop);
    QuantizedTensor ref;
    {
      Scheduler one(1);  // its thread limit must not outlive this block
      one.run([&] { ref = quantize_tensor(w, s, 64, kernels_for(Isa::Scalar)); });
    }
    for (int threads : {1, 2, 3, 8}) {
      QuantizedTensor q;
      Scheduler sched(threads);
      sched.run([&] { q = quantize_tensor(w, s, 64, k); });
      EXPECT_EQ(q.packed, ref.packed) << threads;
      EXPECT_EQ(0, std::memcmp(q.zeros.data(), ref.zeros.data(), q.zeros.size() * 4)) << threads;
      EXPECT_EQ(q.scales, ref.scales);
      EXPECT_EQ(q.solver_steps, ref.solver_steps);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, HqqGolden, ::testing::ValuesIn(test::all_isas()), test::isa_param_name);

// RTN vs HQQ on a heavy-tailed tensor (Student-t, 3 degrees of freedom), the table the
// HQQ issue asks for. HQQ must never be worse than the affine RTN it starts from.
TEST(HqqHeavyTailed, NeverWorseThanRtn) {
  std::mt19937 gen(20261122);
  std::student_t_distribution<float> t(3.0f);
  const size_t rows = 256, cols = 1024;
  std::vector<float> v(rows * cols);
  for (float& x : v) x = 0.02f * t(gen);
  TensorView w{"student_t3", {int64_t(rows), int64_t(cols)}, DType::F32, v.data(), v.size() * 4};
  std::printf("relative RMSE, Student-t(3) x 0.02, %zux%zu\n", rows, cols);
  std::printf("bits block  MNN-asym-RTN  affine-RTN   HQQ(block)  HQQ(tensor)\n");
  for (int bits : {2, 3, 4, 8}) {
    for (size_t block : {32, 64, 128}) {
      QuantSpec mnn;
      mnn.bits = bits;
      mnn.block = int64_t(block);
      mnn.asym = true;
      const double e_mnn = tensor_error(w, quantize_tensor(w, mnn, block)).rel_rmse;
      const double e_rtn = tensor_error(w, quantize_tensor(w, hqq_spec(bits, block, 0, 1.01f, false, HqqStop::Block), block)).rel_rmse;
      const double e_blk = tensor_error(w, quantize_tensor(w, hqq_spec(bits, block, 20, 1.01f, false, HqqStop::Block), block)).rel_rmse;
      const double e_ten = tensor_error(w, quantize_tensor(w, hqq_spec(bits, block, 20, 1.01f, false, HqqStop::Tensor), block)).rel_rmse;
      std::printf("%4d %5zu  %12.6f  %10.6f  %11.6f  %11.6f\n", bits, block, e_mnn, e_rtn, e_blk, e_ten);
      EXPECT_LE(e_blk, e_rtn) << bits << " bits, block " << block;
      EXPECT_LE(e_ten, e_rtn) << bits << " bits, block " << block;
    }
  }
}

}  // namespace
}  // namespace wq
