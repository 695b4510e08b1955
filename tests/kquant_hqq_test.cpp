// HQQ on the K-quants with a minimum (engine/ggml_kquant_hqq.h): against llama.cpp's own
// blocks (the plain kernels, which match llama-quantize byte for byte), sub-block by
// sub-block, under every ISA and thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "engine/error.h"
#include "engine/ggml_quantize.h"
#include "engine/scheduler.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_kquant_reference.h"
#include "kernels/ggml_row_reference.h"
#include "tests/test_support.h"

namespace wq {
namespace {

constexpr size_t kRows = 48, kCols = 1024;

// Heavy-tailed rows (a Laplace body, a few large outliers, some all-positive
// sub-blocks) with per-row spread, as LLM weight rows are.
std::vector<float> weights() {
  std::mt19937 rng(1234);
  std::exponential_distribution<float> ex(1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> v(kRows * kCols);
  for (size_t r = 0; r < kRows; ++r) {
    const float scale = 0.01f * (1.0f + float(r % 7));
    for (size_t c = 0; c < kCols; ++c) {
      float x = ex(rng) * (u(rng) < 0.5f ? -1.0f : 1.0f) * scale;
      if (u(rng) < 0.002f) x *= 12.0f;
      if ((c / 32) % 11 == 3) x = std::fabs(x) + scale;  // a sub-block with a large minimum
      v[r * kCols + c] = x;
    }
  }
  return v;
}

std::vector<float> importance() {
  std::mt19937 rng(99);
  std::gamma_distribution<float> g(0.7f, 1.0f);
  std::vector<float> q(kCols);
  for (float& x : q) x = g(rng);
  return q;
}

QuantSpec spec(bool hqq) {
  QuantSpec s;
  s.hqq = hqq;
  s.asym = hqq;
  return s;
}

struct Case {
  GgmlBlock t;
  size_t sub;  // weights per sub-block
};
const Case kCases[] = {{GgmlBlock::Q2_K, 16}, {GgmlBlock::Q4_K, 32}, {GgmlBlock::Q5_K, 32}};

// The scale and min of sub-block j of a block at p (ggml-quants.c's layouts).
void scale_min(GgmlBlock t, const uint8_t* p, int j, uint8_t* sc, uint8_t* m) {
  if (t == GgmlBlock::Q2_K) {
    const auto* b = reinterpret_cast<const BlockQ2_K*>(p);
    *sc = b->scales[j] & 0xF;
    *m = uint8_t(b->scales[j] >> 4);
  } else {
    ref::get_scale_min_k4(j, reinterpret_cast<const BlockQ4_K*>(p)->scales, sc, m);  // Q5_K: same head
  }
}

std::vector<float> dequant(GgmlBlock t, const std::vector<uint8_t>& blocks) {
  std::vector<float> out(kRows * kCols);
  const size_t rb = ggml_row_bytes(t, kCols);
  for (size_t r = 0; r < kRows; ++r) kernels_for(Isa::Scalar)->dequantize_ggml[int(t)](blocks.data() + r * rb, out.data() + r * kCols, kCols);
  return out;
}

class KquantHqq : public ::testing::TestWithParam<Isa> {};

TEST_P(KquantHqq, NoSubBlockEndsWorseThanLlamaCppsAndTheTensorGains) {
  WQ_REQUIRE_ISA(GetParam());
  const Kernels* k = kernels_for(GetParam());
  const std::vector<float> v = weights(), qw = importance();
  const TensorView w{"blk.0.ffn_up.weight", {int64_t(kRows), int64_t(kCols)}, DType::F32, v.data(), v.size() * 4};
  for (const Case& c : kCases) {
    for (const bool with_imatrix : {false, true}) {
      const float* im = with_imatrix ? qw.data() : nullptr;
      const std::string what = std::string(ggml_block_name(c.t)) + (with_imatrix ? " imatrix" : "");
      std::vector<uint8_t> plain, hqq;
      quantize_ggml_tensor(w, c.t, spec(false), plain, kernels_for(Isa::Scalar), im);
      quantize_ggml_tensor(w, c.t, spec(true), hqq, k, im);
      ASSERT_EQ(plain.size(), hqq.size());
      const std::vector<float> a = dequant(c.t, plain), b = dequant(c.t, hqq);
      const size_t bb = ggml_traits(c.t).bytes, nsub = 256 / c.sub;
      size_t changed = 0;
      double ea_all = 0, eb_all = 0;
      for (size_t blk = 0; blk < plain.size() / bb; ++blk) {
        const uint8_t* pa = plain.data() + blk * bb;
        const uint8_t* pb = hqq.data() + blk * bb;
        // d and dmin are llama.cpp's.
        ASSERT_EQ(0, std::memcmp(pa + ggml_traits(c.t).d_offset, pb + ggml_traits(c.t).d_offset, 2)) << what;
        ASSERT_EQ(0, std::memcmp(pa + ggml_traits(c.t).m_offset, pb + ggml_traits(c.t).m_offset, 2)) << what;
        for (size_t j = 0; j < nsub; ++j) {
          uint8_t sa, ma, sb, mb;
          scale_min(c.t, pa, int(j), &sa, &ma);
          scale_min(c.t, pb, int(j), &sb, &mb);
          ASSERT_EQ(sa, sb) << what << " block " << blk << " sub-block " << j;  // only the minimum moves
          changed += ma != mb;
          const size_t at = blk * 256 + j * c.sub;
          double ea = 0, eb = 0;
          for (size_t l = 0; l < c.sub; ++l) {
            const float da = v[at + l] - a[at + l], db = v[at + l] - b[at + l];
            const double wt = im ? double(im[(at + l) % kCols]) : 1.0;
            ea += wt * double(da) * double(da);
            eb += wt * double(db) * double(db);
          }
          EXPECT_LE(eb, ea) << what << " block " << blk << " sub-block " << j;
          if (ma == mb) {
            EXPECT_EQ(eb, ea) << what << ": an unchanged minimum must keep llama.cpp's codes";
          }
          ea_all += ea;
          eb_all += eb;
        }
      }
      std::printf("%s: %zu of %zu sub-blocks refined, squared error %.6g -> %.6g (%.2f%%)\n", what.c_str(), changed,
                  plain.size() / bb * nsub, ea_all, eb_all, 100.0 * (eb_all / ea_all - 1));
      EXPECT_GT(changed, plain.size() / bb * nsub / 50) << what;
      EXPECT_LT(eb_all, ea_all * 0.995) << what;
    }
  }
}

TEST_P(KquantHqq, BytesDoNotDependOnIsaOrThreads) {
  WQ_REQUIRE_ISA(GetParam());
  const std::vector<float> v = weights(), qw = importance();
  const TensorView w{"blk.0.ffn_up.weight", {int64_t(kRows), int64_t(kCols)}, DType::F32, v.data(), v.size() * 4};
  for (const Case& c : kCases) {
    for (const float* im : {static_cast<const float*>(nullptr), qw.data()}) {
      std::vector<uint8_t> ref_bytes, got;
      Scheduler one(1), three(3);
      one.run([&] { quantize_ggml_tensor(w, c.t, spec(true), ref_bytes, kernels_for(Isa::Scalar), im); });
      three.run([&] { quantize_ggml_tensor(w, c.t, spec(true), got, kernels_for(GetParam()), im); });
      EXPECT_EQ(ref_bytes, got) << ggml_block_name(c.t) << (im ? " imatrix" : "");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, KquantHqq, ::testing::ValuesIn(test::all_isas()), test::isa_param_name);

TEST(KquantHqqOptions, TensorStopRoundedZerosAndTypesWithoutMinimumAreRefused) {
  const std::vector<float> v = weights();
  const TensorView w{"blk.3.attn_q.weight", {int64_t(kRows), int64_t(kCols)}, DType::F32, v.data(), v.size() * 4};
  std::vector<uint8_t> out;
  auto message = [&](GgmlBlock t, QuantSpec s) {
    try {
      quantize_ggml_tensor(w, t, s, out);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  QuantSpec s = spec(true);
  s.hqq_opts.stop = HqqStop::Tensor;
  EXPECT_NE(message(GgmlBlock::Q4_K, s).find("blk.3.attn_q.weight: Q4_K refines"), std::string::npos) << message(GgmlBlock::Q4_K, s);
  s = spec(true);
  s.hqq_opts.round_zero = true;
  EXPECT_NE(message(GgmlBlock::Q2_K, s).find("--hqq-round-zero"), std::string::npos);
  const std::string q6 = message(GgmlBlock::Q6_K, spec(true));
  EXPECT_NE(q6.find("blk.3.attn_q.weight"), std::string::npos) << q6;
  EXPECT_NE(q6.find("Q6_K"), std::string::npos) << q6;
  // Zero steps: the solver returns its start, which is llama.cpp's own minimum.
  s = spec(true);
  s.hqq_opts.max_steps = 0;
  std::vector<uint8_t> plain, zero_steps;
  quantize_ggml_tensor(w, GgmlBlock::Q4_K, spec(false), plain);
  quantize_ggml_tensor(w, GgmlBlock::Q4_K, s, zero_steps);
  EXPECT_EQ(plain, zero_steps);
}

}  // namespace
}  // namespace wq
