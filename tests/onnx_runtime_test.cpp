// ONNX end to end with a real runtime: wq_gen_onnx writes stories260K (../shared) as a
// float ONNX graph, wquant quantizes it, onnxruntime (tests/ort, node) runs both.
//  - the float graph agrees with llama.cpp's logits (tests/data/onnx/README.md);
//  - every variant runs, and its logits equal those of the float graph holding wquant's
//    own dequantized weights (`wquant dequantize` of the quantized model): the runtime
//    computes with exactly the weights wquant says it stored;
//  - KL divergence of each variant against float on a fixed 35-token sequence (printed
//    as the README's table);
//  - greedy text of 4-bit HQQ block 32; MNN spellings give the native flags' bytes;
//    external data in and out;
//  - integral zero points: packed uint8 in MatMulNBits (8-bit included), and opset 21's
//    blocked DequantizeLinear for a graph written at opset 21 (bit-exact: the runtime
//    computes (q - z) * s in f32 as wquant does), the opset-17 graph keeping standard ops.
// Skips, saying why, without ../shared or without node/onnxruntime-node.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/stored_tensor.h"
#include "io/gguf_reader.h"
#include "io/model_reader.h"
#include "io/onnx_support.h"
#include "tests/onnx_support.h"
#include "tests/test_support.h"

namespace wq::test {
namespace {

namespace fs = std::filesystem;

const std::vector<int64_t> kIds = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401,
                                   396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432};
constexpr size_t kVocab = 512;
// onnxruntime's float graph against llama.cpp (largest difference seen 0.0131).
constexpr float kLlamaTolerance = 0.03f;
// A quantized model against the float graph holding its dequantized weights: the same
// weights, other kernels (MatMulNBits' blocked f32 accumulation, constant-folded
// standard ops), so only summation order differs (largest difference seen: 3e-5).
constexpr float kDequantTolerance = 2e-4f;

std::string wquant() { return quote(WQUANT_BIN); }

bool file_bytes_equal(const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  const std::string sa((std::istreambuf_iterator<char>(fa)), {}), sb((std::istreambuf_iterator<char>(fb)), {});
  return !sa.empty() && sa == sb;
}

class OnnxRuntime : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    enable_onnx();
    if (stories_gguf().empty() || !ort_missing().empty()) return;
    // One directory per process: ctest runs these tests as parallel processes.
    dir_ = scratch_dir("onnx_runtime." + std::to_string(::getpid()));
    fs::create_directories(dir_ + "/ext");
    const std::string gen = quote(WQ_GEN_ONNX_BIN) + " ";
    const CmdResult a = run(gen + quote(stories_gguf()) + " " + quote(dir_ + "/float.onnx"));
    const CmdResult b = run(gen + "--external-data " + quote(stories_gguf()) + " " + quote(dir_ + "/ext/float.onnx"));
    if (a.code != 0 || b.code != 0) {
      setup_error_ = a.out + b.out;
      return;
    }
    float_logits_ = ort_logits(dir_ + "/float.onnx", kIds);
  }

  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void SetUp() override {
    if (stories_gguf().empty()) GTEST_SKIP() << "../shared/data/models/stories260K is absent";
    if (const std::string why = ort_missing(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    ASSERT_EQ(float_logits_.size(), kIds.size() * kVocab);
  }

  // The suite's float graph (`base` in its directory) with every weight of `dequantized`.
  static std::string float_with_weights(const std::string& dequantized, const std::string& out,
                                       const std::string& base = "float.onnx") {
    return float_graph_with_weights(load_model(dir_ + "/" + base), dequantized, out);
  }

  struct Variant {
    std::string label, flags;
    bool expect_matmulnbits;
  };

  static int count_ops(const std::string& model, const std::string& op) {
    const onnx::ModelProto m = load_model(model);
    int n = 0;
    for (const auto& node : m.graph().node()) n += node.op_type() == op;
    return n;
  }

  static inline std::string dir_, setup_error_;
  static inline std::vector<float> float_logits_;
};

TEST_F(OnnxRuntime, FloatGraphMatchesLlamaCpp) {
  std::ifstream f(test_data_dir() + "/onnx/stories260K_llamacpp_logits.f32", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), {});
  std::vector<float> ref(bytes.size() / 4);
  std::memcpy(ref.data(), bytes.data(), ref.size() * 4);
  ASSERT_EQ(ref.size(), kIds.size() * kVocab);
  EXPECT_LE(max_abs_diff(float_logits_, ref), kLlamaTolerance);
  // A valid model by ONNX's own checker, not only one onnxruntime runs.
  EXPECT_EQ(onnx_checker_error(dir_ + "/float.onnx"), "");
  EXPECT_EQ(onnx_checker_error(dir_ + "/ext/float.onnx"), "");
  // The external-data model is the same model.
  EXPECT_EQ(ort_logits(dir_ + "/ext/float.onnx", kIds), float_logits_);
}

TEST_F(OnnxRuntime, EveryVariantRunsAndComputesWithWquantsWeights) {
  std::vector<Variant> vs;
  for (int bits : {2, 4, 8})
    for (int block : {32, 64, 128})
      for (const char* scheme : {"sym", "asym", "hqq"}) {
        const std::string s = scheme;
        const std::string flags = "--bits " + std::to_string(bits) + " --block " + std::to_string(block) +
                                  (s == "asym" ? " --asym" : s == "hqq" ? " --hqq" : "");
        // onnxruntime's CPU MatMulNBits has no 8-bit zero points: those take standard ops.
        vs.push_back({std::to_string(bits) + "-bit " + s + " block " + std::to_string(block), flags, bits != 8 || s == "sym"});
      }
  for (int bits : {3, 5, 6})
    for (const char* scheme : {"sym", "hqq"}) {
      const std::string s = scheme;
      vs.push_back({std::to_string(bits) + "-bit " + s + " block 32",
                    "--bits " + std::to_string(bits) + " --block 32" + (s == "hqq" ? " --hqq" : ""), false});
    }
  vs.push_back({"4-bit sym channel-wise", "--bits 4", true});
  vs.push_back({"4-bit asym channel-wise", "--bits 4 --asym", true});
  vs.push_back({"4-bit asym block 32 --fp16", "--bits 4 --block 32 --asym --fp16", true});
  vs.push_back({"4-bit hqq block 32 --fp16", "--bits 4 --block 32 --hqq --fp16", true});
  vs.push_back({"5-bit asym block 32 --fp16", "--bits 5 --block 32 --asym --fp16", false});
  std::printf("| variant | MatMulNBits nodes | dequantized nodes | KL vs float | max |quant - dequantized float| |\n|---|---|---|---|---|\n");
  for (const Variant& v : vs) {
    SCOPED_TRACE(v.label);
    const std::string q = dir_ + "/q.onnx", d = dir_ + "/d.safetensors";
    const CmdResult r = run(wquant() + " quantize " + quote(dir_ + "/float.onnx") + " " + quote(q) + " " + v.flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(onnx_checker_error(q), "");  // ONNX's own checker too, not only onnxruntime
    const int nbits = count_ops(q, "MatMulNBits"), dq = count_ops(q, "Reshape") - count_ops(dir_ + "/float.onnx", "Reshape");
    if (v.expect_matmulnbits) EXPECT_GT(nbits, 0);
    else EXPECT_EQ(nbits, 0);
    EXPECT_GT(dq, 0);  // the tied embedding (Gather + Gemm) always goes the standard-op way
    const std::vector<float> ql = ort_logits(q, kIds);
    const CmdResult dr = run(wquant() + " dequantize " + quote(q) + " " + quote(d) + " --force -q");
    ASSERT_EQ(dr.code, 0) << dr.out;
    const std::vector<float> dl = ort_logits(float_with_weights(d, dir_ + "/dq_float.onnx"), kIds);
    const float diff = max_abs_diff(ql, dl);
    EXPECT_LE(diff, kDequantTolerance);
    const double kl = mean_kl(float_logits_, ql, kVocab);
    EXPECT_TRUE(std::isfinite(kl));
    std::printf("| %s | %d | %d | %.5f | %.2g |\n", v.label.c_str(), nbits, dq, kl, double(diff));
  }
}

// The vocabulary's pieces (tokenizer.ggml.tokens) for printing generated text.
std::vector<std::string> vocabulary(const std::string& gguf) {
  std::unique_ptr<GgufReader> r = open_gguf(gguf);
  const GgufKV* kv = r->metadata().find("tokenizer.ggml.tokens");
  std::vector<std::string> out;
  if (!kv) return out;
  const std::vector<uint8_t>& v = kv->value;
  uint64_t n = 0;
  std::memcpy(&n, v.data() + 4, 8);  // element type, count, then (length, bytes) each
  size_t at = 12;
  for (uint64_t i = 0; i < n && at + 8 <= v.size(); ++i) {
    uint64_t len = 0;
    std::memcpy(&len, v.data() + at, 8);
    out.emplace_back(reinterpret_cast<const char*>(v.data() + at + 8), size_t(len));
    at += 8 + size_t(len);
  }
  return out;
}

std::string detokenize(const std::vector<std::string>& vocab, const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) {
    if (id < 3 || size_t(id) >= vocab.size()) continue;  // <unk>, <s>, </s>
    std::string p = vocab[size_t(id)];
    if (p == "<0x0A>") p = "\n";
    for (size_t at; (at = p.find("\xE2\x96\x81")) != std::string::npos;) p.replace(at, 3, 1, ' ');
    s += p;
  }
  return s;
}

TEST_F(OnnxRuntime, GreedyTextOf4BitHqqBlock32) {
  const std::string q = dir_ + "/hqq4.onnx";
  const CmdResult r = run(wquant() + " quantize " + quote(dir_ + "/float.onnx") + " " + quote(q) + " --bits 4 --block 32 --hqq --force -q");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<int64_t> prompt(kIds.begin(), kIds.begin() + 5);  // <s> Once upon a time
  const std::vector<int64_t> fl = ort_greedy(dir_ + "/float.onnx", prompt, 30);
  const std::vector<int64_t> qt = ort_greedy(q, prompt, 30);
  ASSERT_EQ(qt.size(), prompt.size() + 30);
  // The float graph continues exactly as llama.cpp does (kIds is llama.cpp's greedy run).
  EXPECT_EQ(std::vector<int64_t>(fl.begin(), fl.begin() + long(kIds.size())), kIds);
  const std::vector<std::string> vocab = vocabulary(stories_gguf());
  std::printf("float:           %s\n4-bit HQQ b32:   %s\n", detokenize(vocab, fl).c_str(), detokenize(vocab, qt).c_str());
  size_t same = 0;
  while (same < qt.size() && qt[same] == fl[same]) ++same;
  std::printf("first %zu of %zu ids agree with float\n", same, qt.size());
  EXPECT_GT(same, prompt.size());  // at least the first generated token
}

TEST_F(OnnxRuntime, MnnSpellingsGiveTheNativeFlagsBytes) {
  const std::string in = quote(dir_ + "/float.onnx");
  const CmdResult a = run(wquant() + " --modelFile " + in + " --MNNModel " + quote(dir_ + "/mnn.onnx") +
                    " -f ONNX --weightQuantBits 4 --weightQuantAsymmetric 1 --weightQuantBlock 32 --force -q");
  const CmdResult b = run(wquant() + " quantize " + in + " " + quote(dir_ + "/native.onnx") + " --bits 4 --asym --block 32 --force -q");
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_TRUE(file_bytes_equal(dir_ + "/mnn.onnx", dir_ + "/native.onnx"));
}

TEST_F(OnnxRuntime, ExternalDataInAndOut) {
  const std::string flags = " --bits 4 --block 32 --hqq --force -q";
  const CmdResult a = run(wquant() + " quantize " + quote(dir_ + "/float.onnx") + " " + quote(dir_ + "/emb.onnx") + flags);
  const CmdResult b = run(wquant() + " quantize " + quote(dir_ + "/ext/float.onnx") + " " + quote(dir_ + "/ext/q.onnx") + flags +
                    " --external-data");
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  ASSERT_TRUE(fs::exists(dir_ + "/ext/q.onnx.data"));
  EXPECT_GT(fs::file_size(dir_ + "/ext/q.onnx.data"), fs::file_size(dir_ + "/ext/q.onnx"));
  EXPECT_EQ(ort_logits(dir_ + "/ext/q.onnx", kIds), ort_logits(dir_ + "/emb.onnx", kIds));
  // The same weights whichever way they were stored: verify compares them.
  const CmdResult v = run(wquant() + " verify " + quote(dir_ + "/emb.onnx") + " " + quote(dir_ + "/ext/q.onnx") + " --json -q");
  ASSERT_EQ(v.code, 0) << v.out;
  const nlohmann::json j = nlohmann::json::parse(v.out);
  ASSERT_EQ(j.at("tensors").size(), 36u);  // every quantized weight (stories260K: 5 x 7 + the embedding)
  for (const auto& t : j.at("tensors")) EXPECT_EQ(t.at("max_abs").get<double>(), 0.0) << t.at("name");
}

// HQQ with --hqq-round-zero and no solver steps has integer zero points: MatMulNBits
// takes them packed in uint8, at 8 bits too (float ones it refuses at 8 bits).
TEST_F(OnnxRuntime, IntegralZeroPointsArePackedForMatMulNBits) {
  for (int bits : {2, 4, 8})
    for (int block : {32, 64}) {
      const std::string label = std::to_string(bits) + "-bit block " + std::to_string(block);
      SCOPED_TRACE(label);
      const std::string q = dir_ + "/zp.onnx", d = dir_ + "/zp.safetensors";
      const CmdResult r = run(wquant() + " quantize " + quote(dir_ + "/float.onnx") + " " + quote(q) + " --bits " + std::to_string(bits) +
                              " --block " + std::to_string(block) + " --hqq --hqq-round-zero --hqq-steps 0 --force -q");
      ASSERT_EQ(r.code, 0) << r.out;
      // Every MatMul weight but ffn_down (5 layers x 6): its rows of 172 fall back to one
      // block of 172, not a power of two.
      EXPECT_EQ(count_ops(q, "MatMulNBits"), 30);
      const onnx::ModelProto m = load_model(q);
      int uint8_zeros = 0;
      for (const auto& t : m.graph().initializer())
        uint8_zeros += t.name().size() > 6 && t.name().rfind(".zeros") == t.name().size() - 6 && t.data_type() == onnx::TensorProto::UINT8;
      EXPECT_EQ(uint8_zeros, 30);
      const std::vector<float> ql = ort_logits(q, kIds);
      const CmdResult dr = run(wquant() + " dequantize " + quote(q) + " " + quote(d) + " --force -q");
      ASSERT_EQ(dr.code, 0) << dr.out;
      const float diff = max_abs_diff(ql, ort_logits(float_with_weights(d, dir_ + "/dq_float.onnx"), kIds));
      EXPECT_LE(diff, kDequantTolerance);
      std::printf("| %s HQQ round-zero, 0 steps (uint8 zero points) | KL %.5f | max diff %.2g |\n", label.c_str(),
                  mean_kl(float_logits_, ql, kVocab), double(diff));
    }
}

// The graph written at opset 21: weights with integral zero points that MatMulNBits does
// not take go through one blocked DequantizeLinear each; the runtime's logits are bit for
// bit those of the float graph holding wquant's dequantized weights. The opset-17 graph
// with the same flags keeps the standard ops.
TEST_F(OnnxRuntime, Opset21UsesBlockedDequantizeLinear) {
  const CmdResult g = run(quote(WQ_GEN_ONNX_BIN) + " --opset 21 " + quote(stories_gguf()) + " " + quote(dir_ + "/float21.onnx"));
  ASSERT_EQ(g.code, 0) << g.out;
  EXPECT_EQ(load_model(dir_ + "/float21.onnx").opset_import(0).version(), 21);
  EXPECT_LE(max_abs_diff(ort_logits(dir_ + "/float21.onnx", kIds), float_logits_), 1e-5f);
  struct Case {
    std::string flags;
    int dql, nbits;
  };
  for (const Case& c : std::vector<Case>{{"--bits 3 --block 32", 36, 0},
                                        // ffn_down (rows of 172) and the tied embedding (Gather + Gemm)
                                        {"--bits 4 --block 32", 6, 30},
                                        {"--bits 5 --block 32 --fp16", 36, 0},
                                        {"--bits 6 --block 32 --hqq --hqq-round-zero --hqq-steps 0", 36, 0},
                                        {"--bits 8 --block 32 --hqq --hqq-round-zero --hqq-steps 0", 6, 30},
                                        {"--bits 3 --block 32 --asym", 0, 0}}) {
    SCOPED_TRACE(c.flags);
    const std::string q = dir_ + "/q21.onnx", d = dir_ + "/q21.safetensors";
    CmdResult r = run(wquant() + " quantize " + quote(dir_ + "/float21.onnx") + " " + quote(q) + " " + c.flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(count_ops(q, "DequantizeLinear"), c.dql);
    EXPECT_EQ(count_ops(q, "MatMulNBits"), c.nbits);
    const std::vector<float> ql = ort_logits(q, kIds);
    r = run(wquant() + " dequantize " + quote(q) + " " + quote(d) + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    const std::vector<float> dl = ort_logits(float_with_weights(d, dir_ + "/dq_float21.onnx", "float21.onnx"), kIds);
    if (c.nbits == 0 && c.dql > 0) EXPECT_EQ(ql, dl);
    else EXPECT_LE(max_abs_diff(ql, dl), kDequantTolerance);
    std::printf("| opset 21 %s | DequantizeLinear %d | KL %.5f |\n", c.flags.c_str(), c.dql, mean_kl(float_logits_, ql, kVocab));
    // verify reads the form back as the weights of the same quantization at opset 17.
    r = run(wquant() + " quantize " + quote(dir_ + "/float.onnx") + " " + quote(dir_ + "/q17.onnx") + " " + c.flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(count_ops(dir_ + "/q17.onnx", "DequantizeLinear"), 0);
    const CmdResult v = run(wquant() + " verify " + quote(dir_ + "/q17.onnx") + " " + quote(q) + " --json -q");
    ASSERT_EQ(v.code, 0) << v.out;
    const nlohmann::json j = nlohmann::json::parse(v.out);
    ASSERT_EQ(j.at("tensors").size(), 36u);
    for (const auto& t : j.at("tensors")) EXPECT_EQ(t.at("max_abs").get<double>(), 0.0) << t.at("name");
  }
}

// A token-ids -> logits graph whose MatMul has rows of `k` (Gather of a [37, k] embedding,
// then MatMul by a [k, 24] weight), at opset 17: the shape of a real model's layers that
// stories260K (rows of 64 and 172) does not reach.
onnx::ModelProto wide_matmul_model(int64_t k) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("wide");
  auto init = [&](const std::string& name, const std::vector<int64_t>& dims, float step) {
    onnx::TensorProto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    size_t n = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      n *= size_t(d);
    }
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = std::sin(float(i) * step) * (0.5f + 0.5f * std::cos(float(i) * 0.013f));
    t->set_raw_data(v.data(), v.size() * 4);
  };
  init("emb", {37, k}, 0.37f);
  init("w", {k, 24}, 0.11f);
  auto node = [&](const std::string& op, const std::vector<std::string>& in, const std::string& out) {
    onnx::NodeProto* n = g->add_node();
    n->set_op_type(op);
    for (const std::string& i : in) n->add_input(i);
    n->add_output(out);
  };
  node("Gather", {"emb", "input_ids"}, "e");
  node("MatMul", {"e", "w"}, "logits");
  onnx::ValueInfoProto* in = g->add_input();
  in->set_name("input_ids");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  in->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(1);
  in->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_param("T");
  onnx::ValueInfoProto* out = g->add_output();
  out->set_name("logits");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return m;
}

// onnxruntime's MatMulNBits takes blocks of 16 to 256 only: a wider block (channel-wise,
// the default, on rows of 512 or more, as every real LLM has; or --block 512) takes the
// standard ops, and every variant loads and computes with wquant's dequantized weights
// (onnxruntime refused the model wquant wrote with exit 0: "Only block sizes 16, 32, 64,
// 128, and 256 are supported", review I).
TEST(OnnxRuntimeWide, BlocksBeyondMatMulNBitsRangeTakeStandardOps) {
  if (const std::string why = ort_missing(); !why.empty()) GTEST_SKIP() << why;
  enable_onnx();
  const std::string dir = scratch_dir("onnx_runtime_wide." + std::to_string(::getpid()));
  const std::string model = dir + "/wide.onnx";
  save_model(wide_matmul_model(512), model);
  const std::vector<int64_t> ids = {1, 5, 9, 36, 0, 17};
  struct Case {
    std::string flags;
    bool nbits;
  };
  for (const Case& c : std::vector<Case>{{"", false},
                                         {"--bits 8", false},
                                         {"--bits 2 --asym", false},
                                         {"--block 512 --hqq", false},
                                         {"--block 256", true},
                                         {"--block 256 --hqq", true}}) {
    SCOPED_TRACE(c.flags.empty() ? "default flags" : c.flags);
    const std::string q = dir + "/q.onnx", d = dir + "/d.safetensors";
    CmdResult r = run(wquant() + " quantize " + quote(model) + " " + quote(q) + " " + c.flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    const onnx::ModelProto written = load_model(q);
    int nbits = 0;
    for (const auto& n : written.graph().node()) nbits += n.op_type() == "MatMulNBits";
    EXPECT_EQ(nbits, c.nbits ? 1 : 0);
    const std::vector<float> ql = ort_logits(q, ids);
    ASSERT_EQ(ql.size(), ids.size() * 24);
    // The float graph holding wquant's dequantized weights (w listed [24, 512], the graph's [512, 24]).
    r = run(wquant() + " dequantize " + quote(q) + " " + quote(d) + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    for (const char* name : {"emb", "w"}) ASSERT_GE(open_model(d)->find(name), 0) << name;
    EXPECT_LE(max_abs_diff(ql, ort_logits(float_graph_with_weights(load_model(model), d, dir + "/dq.onnx"), ids)), kDequantTolerance);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace wq::test
