// wquant bench --model's sweep (cli/scheme_sweep.h): bits per weight against the formats'
// own arithmetic (codes + f32 scales / zeros per block; llama.cpp's block sizes), the
// error against the two-pass measurement, tensors a GGUF type cannot hold kept exactly,
// and the Pareto marking.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <map>
#include <set>

#include "cli/scheme_sweep.h"
#include "engine/quantize.h"
#include "engine/scheduler.h"

namespace wq::cli {
namespace {

struct Matrix {
  std::vector<float> w;
  TensorView view;
  Matrix(const char* name, size_t rows, size_t cols, uint32_t seed) : w(rows * cols) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (float& x : w) x = d(g);
    view.name = name;
    view.shape = {int64_t(rows), int64_t(cols)};
    view.dtype = DType::F32;
    view.data = w.data();
    view.nbytes = w.size() * 4;
  }
};

const SweepScheme& find(const std::vector<SweepScheme>& all, const std::string& name) {
  for (const SweepScheme& s : all) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no scheme " << name;
  return all.front();
}

TEST(SchemeSweep, SchemesCoverBitsBlocksKindsAndGgufTypes) {
  const std::vector<SweepScheme> all = sweep_schemes();
  std::set<std::string> names;
  for (const SweepScheme& s : all) names.insert(s.name);
  EXPECT_EQ(names.size(), all.size()) << "scheme names must be unique";
  EXPECT_EQ(all.size(), 3u * 7 * 4 + kGgmlBlockCount + 5);  // + HQQ on Q4_1, Q5_1, Q2_K, Q4_K, Q5_K
  for (const char* n : {"2-bit sym block 32", "8-bit asym channel-wise", "4-bit hqq block 64", "Q4_0", "Q8_0",
                        "Q5_1 hqq", "Q4_K hqq"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
}

// Bits per weight from each format's layout: b-bit codes plus an f32 scale (and an f32
// zero when asymmetric) per block; llama.cpp blocks of 32 weights in 18 (Q4_0), 20 (Q4_1),
// 22 (Q5_0), 24 (Q5_1) and 34 (Q8_0) bytes.
TEST(SchemeSweep, BitsPerWeightIncludeScalesAndZeros) {
  const std::vector<SweepScheme> all = sweep_schemes();
  Matrix a("a", 8, 256, 1), b("b", 4, 256, 2);
  const std::vector<TensorView> views = {a.view, b.view};
  const std::vector<std::pair<std::string, double>> expect = {
      {"4-bit sym block 64", 4 + 32.0 / 64},       {"4-bit asym block 64", 4 + 64.0 / 64},
      {"4-bit hqq block 64", 4 + 64.0 / 64},  {"4-bit sym channel-wise", 4 + 32.0 / 256},
      {"3-bit asym block 32", 3 + 64.0 / 32},      {"8-bit sym block 128", 8 + 32.0 / 128},
      {"Q4_0", 18 * 8 / 32.0},                     {"Q4_1", 20 * 8 / 32.0},
      {"Q5_0", 22 * 8 / 32.0},                     {"Q5_1 hqq", 24 * 8 / 32.0},
      {"Q8_0", 34 * 8 / 32.0}};
  Scheduler sched(2);
  sched.run([&] {
    for (const auto& [name, bpw] : expect) {
      const SchemeResult r = run_scheme(find(all, name), views, *kernels_for(Isa::Scalar));
      EXPECT_DOUBLE_EQ(r.bits_per_weight, bpw) << name;
      EXPECT_EQ(r.kept_float, 0u) << name;
      EXPECT_EQ(r.tensors, 2u);
    }
  });
}

// wquant's own block schemes on rows their block does not divide fall back to channel-wise,
// as quantize does (README: bench --model): the figures of "block 64" on rows of 96 are
// the channel-wise scheme's, nothing is counted as kept float.
TEST(SchemeSweep, ABlockThatDoesNotFitTheRowsGivesTheChannelWiseFigures) {
  const std::vector<SweepScheme> all = sweep_schemes();
  Matrix a("a", 8, 96, 5);
  Scheduler sched(1);
  sched.run([&] {
    for (const char* kind : {"sym", "asym", "hqq"}) {
      SCOPED_TRACE(kind);
      const std::string prefix = std::string("4-bit ") + kind;
      const SchemeResult blocked = run_scheme(find(all, prefix + " block 64"), {a.view}, *kernels_for(Isa::Scalar));
      const SchemeResult channel = run_scheme(find(all, prefix + " channel-wise"), {a.view}, *kernels_for(Isa::Scalar));
      EXPECT_DOUBLE_EQ(blocked.bits_per_weight, channel.bits_per_weight);
      EXPECT_EQ(blocked.error.rel_rmse, channel.error.rel_rmse);
      EXPECT_EQ(blocked.error.max_abs, channel.error.max_abs);
      EXPECT_EQ(blocked.kept_float, 0u);
    }
  });
}

TEST(SchemeSweep, ErrorIsTheTwoPassFigureOverAllTensorsAndNamesTheWorst) {
  Matrix a("a", 16, 128, 3), b("b", 8, 128, 4);
  for (float& x : b.w) x *= x > 0 ? 1.0f : 4.0f;  // skewed: worse under symmetric 3-bit
  const SweepScheme& s = find(sweep_schemes(), "3-bit sym block 32");
  Scheduler sched(3);
  sched.run([&] {
    const SchemeResult r = run_scheme(s, {a.view, b.view}, kernels());
    const QuantizedTensor qa = quantize_tensor(a.view, s.spec, 32), qb = quantize_tensor(b.view, s.spec, 32);
    const ErrorMetrics ea = tensor_error(a.view, qa), eb = tensor_error(b.view, qb);
    EXPECT_EQ(r.worst_tensor, ea.rel_rmse > eb.rel_rmse ? "a" : "b");
    EXPECT_DOUBLE_EQ(r.worst_rel_rmse, std::max(ea.rel_rmse, eb.rel_rmse));
    // Both tensors' sums together: between the two tensors' own figures.
    EXPECT_GT(r.error.rel_rmse, std::min(ea.rel_rmse, eb.rel_rmse));
    EXPECT_LT(r.error.rel_rmse, std::max(ea.rel_rmse, eb.rel_rmse));
    EXPECT_EQ(r.error.count, a.w.size() + b.w.size());
    EXPECT_DOUBLE_EQ(r.error.max_abs, std::max(ea.max_abs, eb.max_abs));
  });
}

TEST(SchemeSweep, RowsAGgufTypeCannotHoldStayFloatExactly) {
  Matrix odd("odd", 4, 48, 5);  // 48 is not a multiple of 32
  Scheduler sched(1);
  sched.run([&] {
    const SchemeResult r = run_scheme(find(sweep_schemes(), "Q4_0"), {odd.view}, kernels());
    EXPECT_EQ(r.kept_float, 1u);
    EXPECT_DOUBLE_EQ(r.bits_per_weight, 32.0);
    EXPECT_EQ(r.error.rel_rmse, 0.0);
  });
}

TEST(SchemeSweep, ParetoFrontKeepsOnlyUndominatedSchemes) {
  auto point = [](const char* name, double bpw, double err) {
    SchemeResult r;
    r.scheme.name = name;
    r.bits_per_weight = bpw;
    r.error.rel_rmse = err;
    return r;
  };
  std::vector<SchemeResult> v = {point("a", 4, 0.1),   point("b", 5, 0.05), point("c", 5, 0.2),
                                 point("d", 4, 0.1),   point("e", 3, NAN),  point("f", 6, 0.05),
                                 point("g", 2.5, 0.7), point("h", 2.5, 0.8)};
  // A scheme that held no tensor (every one kept float, exact) is neither on the front nor
  // pushes others off it, however few bits it is given.
  SchemeResult none = point("i", 1.0, 0.0);
  none.tensors = none.kept_float = 3;
  v.push_back(none);
  mark_pareto(v);
  const std::map<std::string, bool> want = {{"a", true},  {"b", true},  {"c", false}, {"d", true}, {"e", false},
                                            {"f", false}, {"g", true},  {"h", false}, {"i", false}};
  for (const SchemeResult& r : v) EXPECT_EQ(r.pareto, want.at(r.scheme.name)) << r.scheme.name;
}

}  // namespace
}  // namespace wq::cli
