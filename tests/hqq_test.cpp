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
#include "kernels/hqq_reference.h"
#include "tests/test_support.h"

namespace wq {
namespace {

// The engine's parameter buffers as the plain vectors the golden files give.
std::vector<float> plain(const OutputVector<float>& v) { return {v.begin(), v.end()}; }

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
    EXPECT_EQ(plain(q.scales), g.f32("rtn_scale")) << f;
    EXPECT_EQ(plain(q.zeros), g.f32("rtn_zero")) << f;
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
      EXPECT_EQ(plain(q.scales), g.f32(M + "_scale")) << at;
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
      // Against wquant's own reference rule, the same trajectories: never above it but
      // for the last bits of a float sum.
      const QuantizedTensor qt =
          quantize_tensor(w, hqq_spec(g.bits, g.group, 20, m.kappa, m.round_zero, HqqStop::Tensor), g.group, k);
      EXPECT_LE(got, rel_err(w, qt, k) * (1 + 1e-6)) << f << " " << M;
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
      EXPECT_LE(e_blk, e_ten * (1 + 1e-6)) << bits << " bits, block " << block;
      EXPECT_LE(e_ten, e_rtn) << bits << " bits, block " << block;
    }
  }
}

}  // namespace
}  // namespace wq

namespace wq {
namespace {

// Issue 11 item 12: 1024x4096 normal(0, 0.02) with 1% of the columns (41, the same in every
// row) scaled x20, 2-bit block 128. With this seed, block 19445 sits on a plateau: its
// zero does not move at step 1 (the shrinkage is active, so a growing beta still changes
// the update), it leaves the plateau at step 6 and ends with 26x less error under the
// reference's lockstep rule. A block rule that stopped where the zero first stood still
// kept the start there and ended the tensor 2000 ppm worse than the reference.
std::vector<float> outlier_columns_tensor(size_t rows, size_t cols) {
  std::mt19937 gen(33);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> v(rows * cols);
  for (float& x : v) x = d(gen);
  std::vector<bool> outlier(cols, false);
  for (size_t picked = 0; picked < cols / 100;) {
    const size_t c = size_t(gen() % cols);
    if (!outlier[c]) {
      outlier[c] = true;
      ++picked;
    }
  }
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      if (outlier[c]) v[r * cols + c] *= 20.0f;
    }
  }
  return v;
}

// Per block, the squared error the solver minimises (ref::hqq_block_sq: float, 16
// partial sums in a fixed order) for the stored zero, and the same error in double from
// the dequantized weights.
void block_errors(const std::vector<float>& v, const QuantizedTensor& q, std::vector<float>* solver,
                  std::vector<double>* exact) {
  const size_t nb = q.blocks_per_row();
  const float qmax = float((1 << q.spec.bits) - 1);
  std::vector<float> wh(q.rows * q.cols);
  dequantize_tensor(q, wh.data(), kernels_for(Isa::Scalar));
  solver->assign(q.rows * nb, 0.0f);
  exact->assign(q.rows * nb, 0.0);
  for (size_t b = 0; b < q.rows * nb; ++b) {
    const float* x = v.data() + b * q.block;
    const float mn = *std::min_element(x, x + q.block), mx = *std::max_element(x, x + q.block);
    const float inv = ref::block_codec(Scheme::Affine, q.spec.bits, mn, mx, false).inv_scale;
    (*solver)[b] = ref::hqq_block_sq(x, q.block, inv, q.zeros[b], qmax);
    for (size_t i = 0; i < q.block; ++i) {
      const double d = double(x[i]) - double(wh[b * q.block + i]);
      (*exact)[b] += d * d;
    }
  }
}

class HqqBlockRule : public ::testing::TestWithParam<Isa> {};

TEST_P(HqqBlockRule, NeverWorseThanTheReferenceRuleOnAPlateau) {
  WQ_REQUIRE_ISA(GetParam());
  const Kernels* k = kernels_for(GetParam());
  const size_t rows = 1024, cols = 4096, block = 128;
  const std::vector<float> v = outlier_columns_tensor(rows, cols);
  const TensorView w{"outlier_cols", {int64_t(rows), int64_t(cols)}, DType::F32, v.data(), v.size() * 4};
  const QuantizedTensor qb = quantize_tensor(w, hqq_spec(2, block, 20, 1.01f, false, HqqStop::Block), block, k);
  const QuantizedTensor qt = quantize_tensor(w, hqq_spec(2, block, 20, 1.01f, false, HqqStop::Tensor), block, k);
  const QuantizedTensor q0 = quantize_tensor(w, hqq_spec(2, block, 0, 1.01f, false, HqqStop::Block), block, k);
  std::vector<float> fb, ft, f0;
  std::vector<double> eb, et, e0;
  block_errors(v, qb, &fb, &eb);
  block_errors(v, qt, &ft, &et);
  block_errors(v, q0, &f0, &e0);
  // The case is still the one of the issue: the plateau block gains 20x under the
  // reference's rule.
  ASSERT_LT(et[19445] * 20, e0[19445]);
  size_t worse = 0, worse_exact = 0;
  double sb = 0, st = 0;
  for (size_t b = 0; b < eb.size(); ++b) {
    sb += eb[b];
    st += et[b];
    // In the solver's own metric the choice is exact; in double, two candidates whose
    // float errors tie or differ in the last bit may order the other way (1e-7).
    worse += fb[b] > ft[b];
    worse_exact += eb[b] > et[b] * (1 + 1e-6);
    EXPECT_LE(fb[b], ft[b]) << "block " << b;
    EXPECT_LE(eb[b], et[b] * (1 + 1e-6)) << "block " << b;
    EXPECT_LE(fb[b], f0[b]) << "block " << b;
  }
  std::printf("outlier columns, 2-bit block 128: block rule %.9g, tensor rule %.9g (%+.1f ppm); plateau block %.4g "
              "vs %.4g (start %.4g)\n",
              sb, st, 1e6 * (sb / st - 1), eb[19445], et[19445], e0[19445]);
  EXPECT_EQ(worse, 0u);
  EXPECT_EQ(worse_exact, 0u);
  EXPECT_LE(sb, st);
  EXPECT_LE(tensor_error(w, qb, k).rel_rmse, tensor_error(w, qt, k).rel_rmse);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, HqqBlockRule, ::testing::ValuesIn(test::all_isas()), test::isa_param_name);

}  // namespace
}  // namespace wq
