// Integer zero points in ONNX (io/onnx_zero_points.h), on small models built here:
//  - the packing (MatMulNBits' uint8 bitstream, low bits first, each row padded to bytes);
//  - MatMulNBits with packed uint8 zero points (HQQ, --hqq-round-zero, no solver steps),
//    8-bit included;
//  - opset 21's blocked DequantizeLinear for MatMul, Gemm, Conv and Gather weights where
//    the model is at opset 21 and the zero points are integral; the standard-op form at
//    opset 17 and for float zero points;
//  - every form reads back (`dequantize`) as exactly the weights of the safetensors
//    output, onnxruntime computes with exactly them, and hostile zero points or a zero
//    point outside the codes' range give a clean error.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "engine/error.h"
#include "engine/stored_tensor.h"
#include "io/model_reader.h"
#include "io/onnx_support.h"
#include "io/onnx_zero_points.h"
#include "tests/onnx_support.h"
#include "tests/test_support.h"

namespace wq::test {
namespace {

namespace fs = std::filesystem;

std::vector<float> wave(size_t n, float scale, float offset) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = offset + scale * float(int((i * 104729) % 89) - 44) / 44.0f;
  return v;
}

void add_float(onnx::GraphProto* g, const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  t->set_raw_data(v.data(), v.size() * 4);
}

onnx::NodeProto* add_op(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& in, const std::string& out) {
  auto* n = g->add_node();
  n->set_op_type(op);
  for (const auto& s : in) n->add_input(s);
  n->add_output(out);
  return n;
}

void add_value(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* where, const std::string& name, int type) {
  auto* v = where->Add();
  v->set_name(name);
  v->mutable_type()->mutable_tensor_type()->set_elem_type(type);
}

// input_ids [1, T] -> Reshape [T] -> Gather(emb [10, 36]) -> Reshape [T, 4, 3, 3] ->
// Conv(conv [8, 4, 3, 3]) -> Reshape [T, 8] -> Gemm(gemm [64, 8], transB) ->
// MatMul(mm [64, 64]) -> logits [T, 64]: one weight per consumer kind, all quantized, and
// a graph onnxruntime runs. mm_offset shifts mm's weights (all positive: zero points
// below the codes).
onnx::ModelProto model(int64_t opset, float mm_offset = 0.0f) {
  onnx::ModelProto m;
  m.set_ir_version(opset >= 21 ? 10 : 8);
  m.add_opset_import()->set_version(opset);
  auto* g = m.mutable_graph();
  g->set_name("small");
  add_float(g, "emb.weight", {10, 36}, wave(360, 1.0f, 0.0f));
  add_float(g, "conv.weight", {8, 4, 3, 3}, wave(288, 0.5f, 0.05f));
  add_float(g, "gemm.weight", {64, 8}, wave(512, 0.25f, -0.01f));
  add_float(g, "mm.weight", {64, 64}, wave(4096, 0.125f, mm_offset));
  for (const auto& [name, dims] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"ids_shape", {-1}}, {"img_shape", {-1, 4, 3, 3}}, {"flat_shape", {-1, 8}}}) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(int64_t(dims.size()));
    for (int64_t d : dims) t->add_int64_data(d);
  }
  add_op(g, "Reshape", {"input_ids", "ids_shape"}, "input_ids_1d");
  add_op(g, "Gather", {"emb.weight", "input_ids_1d"}, "e");
  add_op(g, "Reshape", {"e", "img_shape"}, "img");
  add_op(g, "Conv", {"img", "conv.weight"}, "c");
  add_op(g, "Reshape", {"c", "flat_shape"}, "f");
  auto* gemm = add_op(g, "Gemm", {"f", "gemm.weight"}, "h");
  auto* a = gemm->add_attribute();
  a->set_name("transB");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(1);
  add_op(g, "MatMul", {"h", "mm.weight"}, "logits");
  add_value(g->mutable_input(), "input_ids", onnx::TensorProto::INT64);
  add_value(g->mutable_output(), "logits", onnx::TensorProto::FLOAT);
  return m;
}

int count_ops(const onnx::ModelProto& m, const std::string& op) {
  int n = 0;
  for (const auto& node : m.graph().node()) n += node.op_type() == op;
  return n;
}

const onnx::TensorProto* find_init(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& t : m.graph().initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

class OnnxZeroPointsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    enable_onnx();
    dir_ = scratch_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  CmdResult wquant(const std::string& args) { return run(quote(WQUANT_BIN) + " " + args); }

  // Quantizes `in` to q.onnx and to q.safetensors with `flags`; dequantizes both; expects
  // the same floats for every weight (the ONNX form reads back as the engine's weights).
  onnx::ModelProto quantize_and_compare(const std::string& in, const std::string& flags) {
    for (const char* out : {"q.onnx", "q.safetensors"}) {
      const CmdResult r = wquant("quantize " + quote(in) + " " + quote(dir_ + "/" + out) + " " + flags + " --force -q");
      EXPECT_EQ(r.code, 0) << r.out;
      const CmdResult d = wquant("dequantize " + quote(dir_ + "/" + out) + " " + quote(dir_ + "/" + out + ".d.safetensors") + " --force -q");
      EXPECT_EQ(d.code, 0) << d.out;
    }
    std::unique_ptr<ModelReader> a = open_model(dir_ + "/q.onnx.d.safetensors"), b = open_model(dir_ + "/q.safetensors.d.safetensors");
    for (const char* name : {"emb.weight", "conv.weight", "mm.weight", "gemm.weight"}) {
      const long ia = a->find(name), ib = b->find(name);
      EXPECT_GE(ia, 0) << name;
      EXPECT_GE(ib, 0) << name;
      if (ia >= 0 && ib >= 0) {
        EXPECT_EQ(read_f32(*a, size_t(ia)), read_f32(*b, size_t(ib))) << name;
      }
    }
    return load_model(dir_ + "/q.onnx");
  }

  // onnxruntime on the quantized model gives what it gives on the float model holding the
  // dequantized weights (q.onnx.d.safetensors, listed [N, K] for MatMul): exactly where
  // the dequantization is folded into constants at load (standard ops, MatMulNBits'
  // f32 path here); within last-bit summation differences where a DequantizeLinear stays
  // in the graph (onnxruntime keeps DQ nodes for its QDQ fusions), because Conv, Gemm and
  // MatMul then take a computed weight rather than a constant one they prepack. That the
  // DequantizeLinear output itself is exact, GatherReturnsExactlyTheDequantizedRows shows.
  void expect_runtime_uses_the_weights(const onnx::ModelProto& float_model, bool exact = true) {
    if (!ort_missing().empty()) return;
    float_graph_with_weights(float_model, dir_ + "/q.onnx.d.safetensors", dir_ + "/dq_float.onnx");
    const std::vector<int64_t> ids = {3, 0, 9, 4};
    const std::vector<float> want = ort_logits(dir_ + "/dq_float.onnx", ids);
    ASSERT_EQ(want.size(), ids.size() * 64);
    const std::vector<float> got = ort_logits(dir_ + "/q.onnx", ids);
    if (exact) EXPECT_EQ(got, want);
    else EXPECT_LE(max_abs_diff(got, want), 1e-5f);  // logits up to ~2
  }

  std::string dir_;
};

TEST(OnnxZeroPointPacking, LowBitsFirstEachRowPaddedToBytes) {
  const std::vector<float> z = {1, 2, 3, 0, 1, /* row 1 */ 3, 3, 0, 0, 2};
  EXPECT_EQ(pack_zero_points(z.data(), 2, 5, 2, "w"), std::string("\x39\x01\x0f\x02", 4));
  const std::vector<float> n = {1, 15, 7, /* row 1 */ 0, 9, 4};
  EXPECT_EQ(pack_zero_points(n.data(), 2, 3, 4, "w"), std::string("\xf1\x07\x90\x04", 4));
  for (int bits = 2; bits <= 8; ++bits)
    for (size_t blocks : {1, 3, 7, 9}) {
      std::vector<float> v(3 * blocks), back(v.size());
      for (size_t i = 0; i < v.size(); ++i) v[i] = float((i * 37 + 5) % (1u << bits));
      const std::string packed = pack_zero_points(v.data(), 3, blocks, bits, "w");
      ASSERT_EQ(packed.size(), 3 * zero_point_row_bytes(blocks, bits));
      unpack_zero_points(reinterpret_cast<const uint8_t*>(packed.data()), 3, blocks, bits, back.data());
      EXPECT_EQ(back, v) << bits << " bits, " << blocks << " blocks";
    }
  // A zero point the weights put off the integers is a fact of the input (exit 3), told
  // under the name the caller gives (the input file's and the tensor's: the writer's).
  for (float bad : {-1.0f, 4.0f, 1.5f, NAN}) {
    const std::vector<float> v = {0, bad};
    try {
      pack_zero_points(v.data(), 1, 2, 2, "in.onnx: w", 7);
      ADD_FAILURE() << bad << " was packed";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Input) << bad;
      EXPECT_EQ(e.message().rfind("in.onnx: w: zero point ", 0), 0u) << e.message();
      EXPECT_NE(e.message().find(" of block 1 in row 7 is not an integer in 0..3"), std::string::npos) << e.message();
    }
  }
}

TEST(OnnxZeroPointPacking, OnlySymmetricAndRoundedUnsolvedHqqAreIntegral) {
  QuantSpec s;
  EXPECT_TRUE(zero_points_are_integral(s));
  s.asym = true;
  EXPECT_FALSE(zero_points_are_integral(s));
  s.hqq = true;
  EXPECT_FALSE(zero_points_are_integral(s));
  s.hqq_opts.round_zero = true;
  EXPECT_FALSE(zero_points_are_integral(s));  // the solver's steps move z to a mean
  s.hqq_opts.max_steps = 0;
  EXPECT_TRUE(zero_points_are_integral(s));
}

TEST_F(OnnxZeroPointsTest, MatMulNBitsTakesPackedUint8ZeroPoints) {
  save_model(model(17), dir_ + "/m.onnx");
  for (int bits : {2, 4, 8}) {
    SCOPED_TRACE(bits);
    const onnx::ModelProto q =
        quantize_and_compare(dir_ + "/m.onnx", "--bits " + std::to_string(bits) + " --block 16 --hqq --hqq-round-zero --hqq-steps 0");
    ASSERT_EQ(count_ops(q, "MatMulNBits"), 1);
    const onnx::TensorProto* z = find_init(q, "mm.weight.zeros");
    ASSERT_NE(z, nullptr);
    EXPECT_EQ(z->data_type(), onnx::TensorProto::UINT8);
    EXPECT_EQ(z->raw_data().size(), 64 * zero_point_row_bytes(4, bits)) << "[N = 64][ceil(4 blocks * bits / 8)]";
    expect_runtime_uses_the_weights(model(17));
  }
  // Solver steps leave float zero points.
  const onnx::ModelProto q = quantize_and_compare(dir_ + "/m.onnx", "--bits 4 --block 16 --hqq --hqq-round-zero");
  EXPECT_EQ(find_init(q, "mm.weight.zeros")->data_type(), onnx::TensorProto::FLOAT);
}

TEST_F(OnnxZeroPointsTest, Opset21TakesBlockedDequantizeLinearWhereZeroPointsAreIntegral) {
  save_model(model(21), dir_ + "/m21.onnx");
  save_model(model(17), dir_ + "/m17.onnx");
  struct Case {
    std::string flags;
    int dql_at_21;
  };
  // Blocks of 4 are too short for MatMulNBits: every weight takes the other path; 4-bit
  // channel-wise mm (K = 64) is MatMulNBits'.
  for (const Case& c : std::vector<Case>{{"--bits 3 --block 4", 4},
                                        {"--bits 4", 3},
                                        {"--bits 5 --block 4 --fp16", 4},
                                        {"--bits 6 --block 4 --hqq --hqq-round-zero --hqq-steps 0", 4},
                                        {"--bits 8 --block 4 --hqq --hqq-round-zero --hqq-steps 0 --fp16", 4},
                                        {"--bits 4 --block 4 --asym", 0},
                                        {"--bits 4 --block 4 --hqq", 0}}) {
    SCOPED_TRACE(c.flags);
    onnx::ModelProto q = quantize_and_compare(dir_ + "/m21.onnx", c.flags);
    EXPECT_EQ(count_ops(q, "DequantizeLinear"), c.dql_at_21);
    EXPECT_EQ(count_ops(q, "Sub") + count_ops(q, "Add") > 0, c.dql_at_21 == 0);
    if (c.dql_at_21) {
      const onnx::TensorProto* z = find_init(q, "gemm.weight.zeros");
      ASSERT_NE(z, nullptr);
      EXPECT_EQ(z->data_type(), onnx::TensorProto::UINT8);
      EXPECT_EQ(find_init(q, "gemm.weight.qweight")->dims_size(), 2);
    }
    expect_runtime_uses_the_weights(model(21), c.dql_at_21 == 0);
    // A model below opset 21 keeps the standard ops (its opset is never raised).
    q = quantize_and_compare(dir_ + "/m17.onnx", c.flags);
    EXPECT_EQ(count_ops(q, "DequantizeLinear"), 0);
    EXPECT_EQ(q.opset_import(0).version(), 17);
    expect_runtime_uses_the_weights(model(17));
  }
}

// An embedding read only by Gather, at opset 21: the runtime's rows are bit for bit
// wquant's dequantized rows, so DequantizeLinear computes exactly (q - z) * s in f32.
TEST_F(OnnxZeroPointsTest, GatherReturnsExactlyTheDequantizedRows) {
  if (const std::string why = ort_missing(); !why.empty()) GTEST_SKIP() << why;
  onnx::ModelProto m = model(21);
  auto* g = m.mutable_graph();
  while (g->node_size() > 2) g->mutable_node()->RemoveLast();  // Reshape ids, Gather
  g->mutable_node(1)->set_output(0, "logits");
  save_model(m, dir_ + "/emb.onnx");
  const std::vector<int64_t> ids = {3, 0, 9, 4, 3};
  for (const std::string flags : {"--bits 3 --block 4", "--bits 5 --fp16", "--bits 8 --block 12",
                                  "--bits 6 --block 4 --hqq --hqq-round-zero --hqq-steps 0",
                                  "--bits 2 --block 6 --hqq --hqq-round-zero --hqq-steps 0 --fp16"}) {
    SCOPED_TRACE(flags);
    const std::string q = dir_ + "/q.onnx", d = dir_ + "/d.safetensors";
    CmdResult r = wquant("quantize " + quote(dir_ + "/emb.onnx") + " " + quote(q) + " " + flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(count_ops(load_model(q), "DequantizeLinear"), 1);
    r = wquant("dequantize " + quote(q) + " " + quote(d) + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    std::unique_ptr<ModelReader> dq = open_model(d);
    const std::vector<float> rows = read_f32(*dq, size_t(dq->find("emb.weight")));
    std::vector<float> want;
    for (int64_t id : ids) want.insert(want.end(), rows.begin() + id * 36, rows.begin() + (id + 1) * 36);
    EXPECT_EQ(ort_logits(q, ids), want);
    const std::vector<float> orig = wave(360, 1.0f, 0.0f);
    EXPECT_NE(rows, orig);  // it was quantized
  }
}

TEST_F(OnnxZeroPointsTest, ZeroPointOutsideTheCodesIsACleanError) {
  save_model(model(17, 1.0f), dir_ + "/m.onnx");  // mm's weights all positive: z < 0
  const CmdResult r = wquant("quantize " + quote(dir_ + "/m.onnx") + " " + quote(dir_ + "/out.onnx") +
                             " --bits 4 --block 16 --hqq --hqq-round-zero --hqq-steps 0 -q");
  EXPECT_EQ(r.code, 3) << r.out;  // a fact of the input's weights, named with the input
  EXPECT_NE(r.out.find(dir_ + "/m.onnx: mm.weight: zero point -"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ + "/out.onnx"));
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find("wquant-tmp"), std::string::npos) << e.path();
}

TEST_F(OnnxZeroPointsTest, HostileIntegerZeroPointsAreRefused) {
  save_model(model(21), dir_ + "/m21.onnx");
  save_model(model(17), dir_ + "/m17.onnx");
  struct Case {
    std::string model, flags, tensor, change, problem;
  };
  for (const Case& c : std::vector<Case>{
           {"m21", "--bits 3 --block 4", "gemm.weight.zeros", "drop a row", "uint8 zero points expected"},
           {"m21", "--bits 3 --block 4", "gemm.weight.zeros", "symmetric zero", "symmetric codes have 4"},
           {"m21", "--bits 3 --block 4", "gemm.weight.zeros", "float type", "uint8 zero points expected"},
           {"m21", "--bits 6 --block 4 --hqq --hqq-round-zero --hqq-steps 0", "conv.weight.zeros", "missing", "no .zeros"},
           {"m17", "--bits 4 --block 16 --hqq --hqq-round-zero --hqq-steps 0", "mm.weight.zeros", "drop a row",
            "uint8 zero points expected"}}) {
    SCOPED_TRACE(c.flags + ": " + c.change);
    const CmdResult r = wquant("quantize " + quote(dir_ + "/" + c.model + ".onnx") + " " + quote(dir_ + "/q.onnx") + " " + c.flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    onnx::ModelProto q = load_model(dir_ + "/q.onnx");
    auto* inits = q.mutable_graph()->mutable_initializer();
    for (int i = 0; i < inits->size(); ++i) {
      onnx::TensorProto& t = *inits->Mutable(i);
      if (t.name() != c.tensor) continue;
      if (c.change == "drop a row") {  // consistent dims, one row (or byte) short
        const size_t row = t.raw_data().size() / size_t(t.dims(0));
        t.set_dims(0, t.dims(0) - 1);
        t.mutable_raw_data()->resize(t.raw_data().size() - row);
      } else if (c.change == "symmetric zero") {
        (*t.mutable_raw_data())[5] = 3;
      } else if (c.change == "float type") {
        t.set_data_type(onnx::TensorProto::FLOAT);
        t.mutable_raw_data()->resize(t.raw_data().size() * 4);
      } else {
        inits->DeleteSubrange(i, 1);
      }
      break;
    }
    save_model(q, dir_ + "/bad.onnx");
    const CmdResult d = wquant("dequantize " + quote(dir_ + "/bad.onnx") + " " + quote(dir_ + "/bad.safetensors") + " --force -q");
    EXPECT_EQ(d.code, 3) << d.out;
    EXPECT_NE(d.out.find(c.tensor.substr(0, c.tensor.find('.'))), std::string::npos) << d.out;
    EXPECT_NE(d.out.find(c.problem), std::string::npos) << d.out;
    EXPECT_FALSE(fs::exists(dir_ + "/bad.safetensors"));
  }
}

}  // namespace
}  // namespace wq::test
