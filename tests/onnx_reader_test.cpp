// The ONNX reader and writer on small models built here: every payload form (raw_data,
// typed fields, external data), which initializers are weights and how they are listed,
// the same codes as the safetensors writer for MatMul, Gemm, Conv and Gather weights,
// and hostile files (truncated protobuf, wrong types, external data missing / outside
// the folder / past the end / overlapping, overflowing shapes): a clean error naming the
// initializer, exit 3, and no output left.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/pipeline.h"
#include "engine/plan.h"
#include "engine/scheduler.h"
#include "engine/stored_tensor.h"
#include "io/model_reader.h"
#include "io/model_writer.h"
#include "io/onnx_reader.h"
#include "io/onnx_support.h"
#include "tests/counting_sink.h"
#include "tests/onnx_support.h"
#include "tests/test_support.h"

namespace wq::test {
namespace {

namespace fs = std::filesystem;

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * float(int((i * 7919) % 97) - 48) / 48.0f;
  return v;
}

// One f32 tensor as a safetensors file (8-byte header length, JSON header, data).
void write_f32_safetensors(const std::string& path, const std::string& name, const std::vector<int64_t>& shape,
                           const std::vector<float>& v) {
  std::string dims;
  for (int64_t d : shape) dims += (dims.empty() ? "" : ",") + std::to_string(d);
  const std::string h = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + dims + "],\"data_offsets\":[0," +
                        std::to_string(v.size() * 4) + "]}}";
  const uint64_t n = h.size();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(h.data(), std::streamsize(h.size()));
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * 4));
}

onnx::TensorProto* add_init(onnx::GraphProto* g, const std::string& name, int type, const std::vector<int64_t>& dims) {
  auto* t = g->add_initializer();
  t->set_name(name);
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
  return t;
}

void add_node(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& in, const std::string& out,
              int64_t trans_b = -1) {
  auto* n = g->add_node();
  n->set_op_type(op);
  for (const auto& s : in) n->add_input(s);
  n->add_output(out);
  if (trans_b >= 0) {
    auto* a = n->add_attribute();
    a->set_name("transB");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(trans_b);
  }
}

// Four weights, one per consumer kind, in four payload forms, and a non-weight constant.
onnx::ModelProto small_model() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("small");
  const std::vector<float> mm = ramp(32 * 64, 0.5f), gemm = ramp(16 * 64, 0.25f), conv = ramp(8 * 4 * 3 * 3, 1.0f),
                           emb = ramp(10 * 64, 2.0f);
  add_init(g, "mm.weight", onnx::TensorProto::FLOAT, {64, 32})->set_raw_data(mm.data(), mm.size() * 4);
  auto* ge = add_init(g, "gemm.weight", onnx::TensorProto::FLOAT, {16, 64});
  for (float f : gemm) ge->add_float_data(f);
  add_init(g, "conv.weight", onnx::TensorProto::FLOAT, {8, 4, 3, 3})->set_raw_data(conv.data(), conv.size() * 4);
  add_init(g, "emb.weight", onnx::TensorProto::FLOAT, {10, 64})->set_raw_data(emb.data(), emb.size() * 4);
  auto* sh = add_init(g, "shape", onnx::TensorProto::INT64, {2});
  sh->add_int64_data(1);
  sh->add_int64_data(64);
  add_node(g, "Gather", {"emb.weight", "ids"}, "x");
  add_node(g, "Reshape", {"x", "shape"}, "x2");
  add_node(g, "MatMul", {"x2", "mm.weight"}, "y1");
  add_node(g, "Gemm", {"x2", "gemm.weight"}, "y2", 1);
  add_node(g, "Conv", {"img", "conv.weight"}, "y3");
  return m;
}

// small_model() with the graph inputs and outputs ONNX's checker asks for (IR < 4: the
// initializers listed among the inputs too).
onnx::ModelProto checkable(onnx::ModelProto m) {
  auto value = [](onnx::ValueInfoProto* v, const std::string& name, int type, const std::vector<int64_t>& dims) {
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(type);
    auto* shape = t->mutable_shape();
    for (int64_t d : dims) {
      if (d < 0) shape->add_dim()->set_dim_param("n");
      else shape->add_dim()->set_dim_value(d);
    }
  };
  auto* g = m.mutable_graph();
  if (m.ir_version() < 4) {
    for (const auto& t : g->initializer()) value(g->add_input(), t.name(), t.data_type(), {t.dims().begin(), t.dims().end()});
  }
  value(g->add_input(), "ids", onnx::TensorProto::INT64, {1});
  value(g->add_input(), "img", onnx::TensorProto::FLOAT, {1, 4, 5, 5});
  for (const std::string name : {"y1", "y2", "y3"}) value(g->add_output(), name, onnx::TensorProto::FLOAT, {-1, -1});
  return m;
}

class OnnxReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    enable_onnx();
    dir_ = scratch_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  // Runs `wquant quantize` on model and expects a clean refusal naming `what`.
  void expect_refused(const onnx::ModelProto& m, const std::string& what, const std::string& problem) {
    save_model(m, dir_ + "/in.onnx");
    expect_refused_file(dir_ + "/in.onnx", what, problem);
  }
  void expect_refused_file(const std::string& in, const std::string& what, const std::string& problem) {
    const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(in) + " " + quote(dir_ + "/out.onnx") + " --bits 4");
    EXPECT_EQ(r.code, 3) << r.out;
    EXPECT_NE(r.out.find(what), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(problem), std::string::npos) << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "one line: " << r.out;
    EXPECT_FALSE(fs::exists(dir_ + "/out.onnx"));
    EXPECT_FALSE(fs::exists(dir_ + "/out.onnx.data"));
    for (const auto& e : fs::directory_iterator(dir_))
      EXPECT_EQ(e.path().filename().string().find("wquant-tmp"), std::string::npos) << e.path();
  }

  // dir_/m.onnx: one MatMul whose weight mm.weight [K, N] is `stored`, in external data
  // (dir_/w.data, after `offset` zero bytes); and dir_/rows.safetensors: the same weight
  // as the quantizer lists it, [N, K] rows (the transpose).
  void save_matmul_in_external_data(std::vector<float> stored, size_t K, size_t N, size_t offset) {
    onnx::ModelProto m;
    m.set_ir_version(8);
    m.add_opset_import()->set_version(17);
    auto* g = m.mutable_graph();
    g->set_name("bands");
    add_init(g, "mm.weight", onnx::TensorProto::FLOAT, {int64_t(K), int64_t(N)});
    add_node(g, "MatMul", {"x", "mm.weight"}, "y");
    {
      std::ofstream f(dir_ + "/w.data", std::ios::binary);
      const std::vector<char> pad(offset, 0);
      f.write(pad.data(), std::streamsize(pad.size()));
      f.write(reinterpret_cast<const char*>(stored.data()), std::streamsize(stored.size() * 4));
    }
    save_model(with_external(m, "mm.weight", "w.data", offset, K * N * 4), dir_ + "/m.onnx");
    std::vector<float> rows(K * N);
    for (size_t n = 0; n < N; ++n)
      for (size_t k = 0; k < K; ++k) rows[n * K + k] = stored[k * N + n];
    write_f32_safetensors(dir_ + "/rows.safetensors", "mm.weight", {int64_t(N), int64_t(K)}, rows);
  }

  // Quantizing dir_/m.onnx and dir_/rows.safetensors (save_matmul_in_external_data) with
  // each of `flags` (the command prefixed by `env`) gives mm.weight the same codes,
  // parameters and error figures.
  void expect_quantized_as_rows(const std::string& env, const std::vector<std::string>& flag_sets) {
    const std::string w = env + quote(WQUANT_BIN);
    for (const std::string& flags : flag_sets) {
      SCOPED_TRACE(flags);
      std::string figures[2];
      for (int i = 0; i < 2; ++i) {
        const std::string in = i == 0 ? "m.onnx" : "rows.safetensors", out = i == 0 ? "q.safetensors" : "q2.safetensors";
        const CmdResult q = run(w + " quantize " + quote(dir_ + "/" + in) + " " + quote(dir_ + "/" + out) + " " + flags + " --force --json");
        ASSERT_EQ(q.code, 0) << q.out;
        const size_t at = q.out.find("\"error\"");
        ASSERT_NE(at, std::string::npos) << q.out;
        figures[i] = q.out.substr(at, q.out.find('}', at) - at);  // the tensor's error figures
      }
      EXPECT_EQ(figures[0], figures[1]);
      std::unique_ptr<ModelReader> a = open_model(dir_ + "/q.safetensors"), b = open_model(dir_ + "/q2.safetensors");
      const QuantizedTensor qa = a->load_quantized(size_t(a->find("mm.weight"))), qb = b->load_quantized(size_t(b->find("mm.weight")));
      EXPECT_TRUE(qa.packed == qb.packed);
      EXPECT_TRUE(qa.scales == qb.scales);
      EXPECT_TRUE(qa.zeros == qb.zeros);
    }
  }

  // The model with mm.weight moved to external data at `location` (offset, length).
  static onnx::ModelProto with_external(onnx::ModelProto m, const std::string& init, const std::string& location,
                                        uint64_t offset, uint64_t length) {
    for (auto& t : *m.mutable_graph()->mutable_initializer()) {
      if (t.name() != init) continue;
      t.clear_raw_data();
      t.clear_float_data();
      t.set_data_location(onnx::TensorProto::EXTERNAL);
      for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
               {"location", location}, {"offset", std::to_string(offset)}, {"length", std::to_string(length)}}) {
        auto* e = t.add_external_data();
        e->set_key(k);
        e->set_value(v);
      }
    }
    return m;
  }

  void write_data(const std::string& path, size_t bytes) {
    std::vector<char> v(bytes, 1);
    std::ofstream(path, std::ios::binary).write(v.data(), std::streamsize(v.size()));
  }

  std::string dir_;
};

TEST_F(OnnxReaderTest, ListsWeightsByConsumerInTheOrientationQuantizedAndReadsEveryPayloadForm) {
  const onnx::ModelProto m = small_model();
  save_model(m, dir_ + "/m.onnx");
  std::unique_ptr<ModelReader> r = open_model(dir_ + "/m.onnx");
  ASSERT_STREQ(r->format(), "onnx");
  auto info = [&](const std::string& n) { return r->tensors().at(size_t(r->find(n))); };
  EXPECT_EQ(info("mm.weight").shape, (std::vector<int64_t>{32, 64}));  // MatMul B [K, N] listed [N, K]
  EXPECT_EQ(info("gemm.weight").shape, (std::vector<int64_t>{16, 64}));  // transB: already [N, K]
  EXPECT_EQ(info("conv.weight").shape, (std::vector<int64_t>{8, 4, 3, 3}));
  for (const char* w : {"mm.weight", "gemm.weight", "conv.weight", "emb.weight"}) EXPECT_EQ(info(w).kind, StoredKind::Float) << w;
  EXPECT_EQ(info("shape").kind, StoredKind::Other);
  // The transposed listing holds the stored tensor's transpose; float_data reads as raw.
  const std::vector<float> mm = read_f32(*r, size_t(r->find("mm.weight")));
  const std::vector<float> stored = ramp(32 * 64, 0.5f);
  for (size_t n = 0; n < 32; ++n)
    for (size_t k = 0; k < 64; ++k) ASSERT_EQ(mm[n * 64 + k], stored[k * 32 + n]);
  EXPECT_EQ(read_f32(*r, size_t(r->find("gemm.weight"))), ramp(16 * 64, 0.25f));
  size_t n = 0;
  const uint8_t* shape = r->raw(size_t(r->find("shape")), &n);
  ASSERT_EQ(n, 16u);
  int64_t dims[2];
  std::memcpy(dims, shape, 16);
  EXPECT_EQ(dims[0], 1);
  EXPECT_EQ(dims[1], 64);
  // External data gives the same tensors.
  std::vector<float> emb = ramp(10 * 64, 2.0f);
  std::ofstream(dir_ + "/w.data", std::ios::binary).write(reinterpret_cast<const char*>(emb.data()), std::streamsize(emb.size() * 4));
  save_model(with_external(m, "emb.weight", "w.data", 0, emb.size() * 4), dir_ + "/e.onnx");
  std::unique_ptr<ModelReader> e = open_model(dir_ + "/e.onnx");
  EXPECT_EQ(read_f32(*e, size_t(e->find("emb.weight"))), emb);
}

// A MatMul weight is read from its file in bands of stored rows, each transposed into
// its place (io/onnx_reader.cpp): with K = 1000 stored rows of N = 600 floats, several
// bands and a last short one, columns past the last whole 16 (and 8, and 4), from
// external data at an offset. Every element lands where the transpose puts it, bit for
// bit (a NaN payload and a negative zero included), and quantizing it gives the bytes of
// the same matrix given as rows in safetensors.
TEST_F(OnnxReaderTest, MatMulWeightsReadInBandsAreTheExactTranspose) {
  constexpr size_t K = 1000, N = 600, kOffset = 4096;
  std::vector<float> stored = ramp(K * N, 0.75f);
  for (size_t i = 0; i < stored.size(); ++i) stored[i] += float(i % 1013) * 1e-4f;  // every element its own value
  uint32_t nan_payload = 0x7FC01234u;
  std::memcpy(&stored[1], &nan_payload, 4);
  stored[K * N - 2] = -0.0f;
  save_matmul_in_external_data(stored, K, N, kOffset);
  std::unique_ptr<ModelReader> r = open_model(dir_ + "/m.onnx");
  const size_t i = size_t(r->find("mm.weight"));
  ASSERT_EQ(r->tensors()[i].shape, (std::vector<int64_t>{int64_t(N), int64_t(K)}));
  const std::vector<float> listed = read_f32(*r, i);
  ASSERT_EQ(listed.size(), K * N);
  size_t wrong = 0;
  for (size_t n = 0; n < N; ++n)
    for (size_t k = 0; k < K; ++k) wrong += std::memcmp(&listed[n * K + k], &stored[k * N + n], 4) != 0;
  EXPECT_EQ(wrong, 0u);
  // NaN is refused by the quantizers: the quantized comparison uses a finite copy.
  stored[1] = 0.5f;
  save_matmul_in_external_data(stored, K, N, kOffset);
  expect_quantized_as_rows("", {"--bits 4 --block 40", "--bits 3 --block 8 --hqq"});
}

// The band paths end to end: a MatMul weight in external data (K = 1152 stored rows of
// N = 600 floats, at an offset) quantized by RTN and by HQQ's per-block solver, which read
// it by pread in bands of stored rows (blocks of a multiple of 16; bands made small by
// WQUANT_COLUMN_BAND_BYTES, so every row's error sums cross many), gives the codes,
// parameters and error figures of the same matrix given as rows in safetensors.
TEST_F(OnnxReaderTest, MatMulWeightsQuantizedInBandsGiveTheRowPathsBytes) {
  constexpr size_t K = 1152, N = 600, kOffset = 8192;
  std::vector<float> stored(K * N);
  for (size_t i = 0; i < stored.size(); ++i) stored[i] = std::sin(float(i) * 0.37f) * (1.0f + float(i % 977) * 1e-3f);
  save_matmul_in_external_data(stored, K, N, kOffset);
  expect_quantized_as_rows("WQUANT_COLUMN_BAND_BYTES=100000 ",
                           {"--bits 4 --block 32 --asym", "--bits 3 --block 32 --hqq", "--bits 4 --block 64 --hqq"});
  // Rows of 4 KiB and more (an even number of cache lines) are read into the band buffer
  // one line apart more (quantize_columns.cpp band_pitch): the same bytes and figures.
  constexpr size_t K2 = 320, N2 = 1040;  // 4160-byte rows, 65 lines: as they are
  constexpr size_t K3 = 256, N3 = 2048;  // 8 KiB rows: padded
  for (const auto& [k, n] : {std::pair{K2, N2}, std::pair{K3, N3}}) {
    SCOPED_TRACE(std::to_string(n) + " columns");
    std::vector<float> st(k * n);
    for (size_t i = 0; i < st.size(); ++i) st[i] = std::cos(float(i) * 0.11f) * (1.0f + float(i % 331) * 1e-3f);
    save_matmul_in_external_data(st, k, n, kOffset);
    expect_quantized_as_rows("WQUANT_COLUMN_BAND_BYTES=1000000 ",
                             {"--bits 4 --block 64 --asym", "--bits 4 --block 32", "--bits 3 --block 32 --hqq"});
  }
}

// Every MatMul weight reaches the quantizer as stored, to be read in bands of stored rows
// or transposed tile by tile from the mapping, so no copy of it is held (README, "Design"), whatever its size; a
// weight used by Gather is not transposed. The external data is a sparse file: nothing of
// the large weight is read here.
TEST_F(OnnxReaderTest, MatMulWeightsReachTheQuantizerAsStored) {
  constexpr int64_t K = 4096, kSmallN = 64, kLargeN = 8200;  // 1 MiB and 128.1 MiB of f32
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("caps");
  add_init(g, "small.weight", onnx::TensorProto::FLOAT, {K, kSmallN});
  add_init(g, "large.weight", onnx::TensorProto::FLOAT, {K, kLargeN});
  add_init(g, "emb.weight", onnx::TensorProto::FLOAT, {kSmallN, K});
  add_node(g, "MatMul", {"x", "small.weight"}, "y1");
  add_node(g, "MatMul", {"x", "large.weight"}, "y2");
  add_node(g, "Gather", {"emb.weight", "ids"}, "y3");
  const uint64_t small_bytes = uint64_t(K * kSmallN * 4), large_bytes = uint64_t(K * kLargeN * 4);
  std::ofstream(dir_ + "/w.data").close();
  std::filesystem::resize_file(dir_ + "/w.data", 2 * small_bytes + large_bytes);
  m = with_external(m, "small.weight", "w.data", 0, small_bytes);
  m = with_external(m, "large.weight", "w.data", small_bytes, large_bytes);
  m = with_external(m, "emb.weight", "w.data", small_bytes + large_bytes, small_bytes);
  save_model(m, dir_ + "/m.onnx");
  std::unique_ptr<ModelReader> r = open_model(dir_ + "/m.onnx");
  TensorView stored;
  ASSERT_TRUE(r->stored_transposed(size_t(r->find("small.weight")), &stored));
  EXPECT_EQ(stored.shape, (std::vector<int64_t>{kSmallN, K}));  // listed [N, K]; the data as stored
  EXPECT_EQ(stored.nbytes, small_bytes);
  ASSERT_TRUE(r->stored_transposed(size_t(r->find("large.weight")), &stored));
  EXPECT_EQ(stored.shape, (std::vector<int64_t>{kLargeN, K}));
  EXPECT_EQ(stored.nbytes, large_bytes);
  EXPECT_FALSE(r->stored_transposed(size_t(r->find("emb.weight")), &stored));
}

// The ONNX output stores the very codes and scales of the safetensors output, for every
// consumer kind: dequantizing both gives the same floats (symmetric: MatMulNBits and the
// standard-op form store MNN's codes and scales unchanged).
TEST_F(OnnxReaderTest, StoresTheCodesOfTheSafetensorsWriter) {
  save_model(small_model(), dir_ + "/m.onnx");
  for (const std::string flags : {"--bits 4 --block 16", "--bits 3 --block 16 --hqq", "--bits 8", "--bits 5 --asym --fp16"}) {
    SCOPED_TRACE(flags);
    const std::string w = quote(WQUANT_BIN);
    for (const char* out : {"q.onnx", "q.safetensors"}) {
      const CmdResult r = run(w + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(dir_ + "/" + out) + " " + flags + " --force -q");
      ASSERT_EQ(r.code, 0) << r.out;
    }
    for (const char* q : {"q.onnx", "q.safetensors"}) {
      const CmdResult r = run(w + " dequantize " + quote(dir_ + "/" + q) + " " + quote(dir_ + "/" + q + ".d.safetensors") + " --force -q");
      ASSERT_EQ(r.code, 0) << r.out;
    }
    std::unique_ptr<ModelReader> a = open_model(dir_ + "/q.onnx.d.safetensors"), b = open_model(dir_ + "/q.safetensors.d.safetensors");
    for (const char* name : {"mm.weight", "gemm.weight", "conv.weight", "emb.weight"}) {
      const long ia = a->find(name), ib = b->find(name);
      ASSERT_GE(ia, 0);
      ASSERT_GE(ib, 0);
      EXPECT_EQ(a->tensors()[size_t(ia)].shape, b->tensors()[size_t(ib)].shape) << name;
      EXPECT_EQ(read_f32(*a, size_t(ia)), read_f32(*b, size_t(ib))) << name;
    }
  }
}

// A MatMul weight kept float (a skip rule) is written in the graph's own layout: read back,
// it is the input's weight, whether its bytes are copied as stored or converted (--fp16,
// stored as f16 beside a Cast, within f16's rounding). mm.weight is [64, 32], so a
// transposition too many would change its values, not only its shape.
// A weight kept float is read back under its own name, in the listed orientation, also
// when --fp16 stored it as NAME.f16 behind a Cast (an earlier reader listed that pair as
// "mm.weight.f16", stored [K, N]: verify skipped it and dequantize wrote it under that
// name, transposed against the quantized weights).
// --fp16 converts the weights (the initializers MatMul, Gemm, Conv and Gather read); any
// other float initializer (here a 1-D scale a Mul reads, as a norm's) is carried over as
// it is, F32, its bytes unchanged (README: kept float tensors).
TEST_F(OnnxReaderTest, Fp16LeavesInitializersThatAreNotWeightsAsTheyAre) {
  onnx::ModelProto m = small_model();
  const std::vector<float> scale = ramp(64, 3.0f);
  add_init(m.mutable_graph(), "norm.weight", onnx::TensorProto::FLOAT, {64})->set_raw_data(scale.data(), scale.size() * 4);
  add_node(m.mutable_graph(), "Mul", {"x2", "norm.weight"}, "y4");
  save_model(m, dir_ + "/m.onnx");
  const std::string out = dir_ + "/h.onnx";
  const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(out) +
                          " --bits 0 --fp16 -q");
  ASSERT_EQ(r.code, 0) << r.out;
  std::unique_ptr<ModelReader> q = open_model(out);
  const long n = q->find("norm.weight");
  ASSERT_GE(n, 0);
  EXPECT_EQ(q->tensors()[size_t(n)].dtype, DType::F32);
  size_t bytes = 0;
  const uint8_t* data = q->raw(size_t(n), &bytes);
  ASSERT_EQ(bytes, scale.size() * 4);
  EXPECT_EQ(std::memcmp(data, scale.data(), bytes), 0);
  const long w = q->find("mm.weight");
  ASSERT_GE(w, 0);
  EXPECT_EQ(q->tensors()[size_t(w)].dtype, DType::F16);  // (the weights are converted)
}

TEST_F(OnnxReaderTest, KeptFloatMatMulWeightKeepsItsValues) {
  save_model(checkable(small_model()), dir_ + "/m.onnx");
  std::ofstream(dir_ + "/skip.json") << R"({"rules": [{"match": "mm.weight", "skip": true}]})";
  std::unique_ptr<ModelReader> in = open_model(dir_ + "/m.onnx");
  const size_t wi = size_t(in->find("mm.weight"));
  const std::vector<float> want = read_f32(*in, wi);
  for (const std::string extra : {"", " --fp16"}) {
    SCOPED_TRACE(extra);
    const std::string out = dir_ + "/q.onnx";
    const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(out) +
                            " --bits 4 --block 16 --params " + quote(dir_ + "/skip.json") + " --force -q" + extra);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(onnx_checker_error(out), "");
    std::unique_ptr<ModelReader> q = open_model(out);
    const long i = q->find("mm.weight");
    ASSERT_GE(i, 0);
    EXPECT_LT(q->find("mm.weight.f16"), 0);
    const TensorInfo& t = q->tensors()[size_t(i)];
    EXPECT_EQ(t.kind, StoredKind::Float);
    EXPECT_EQ(t.dtype, extra.empty() ? DType::F32 : DType::F16);
    EXPECT_EQ(t.shape, in->tensors()[wi].shape);  // [N, K] = [32, 64], as listed in the input
    const std::vector<float> got = read_f32(*q, size_t(i));
    ASSERT_EQ(got.size(), want.size());
    if (extra.empty()) {
      EXPECT_EQ(got, want);
    } else {
      for (size_t k = 0; k < want.size(); ++k)
        ASSERT_NEAR(got[k], want[k], 1e-3f * std::fabs(want[k]) + 1e-7f) << k;
    }
    // verify compares it (no "not in" warning), and dequantize writes it as f32 under its name.
    const CmdResult v = run(quote(WQUANT_BIN) + " verify " + quote(dir_ + "/m.onnx") + " " + quote(out));
    EXPECT_EQ(v.code, 0) << v.out;
    EXPECT_EQ(v.out.find("not in"), std::string::npos) << v.out;
    EXPECT_NE(v.out.find("mm.weight "), std::string::npos) << v.out;
    const CmdResult d = run(quote(WQUANT_BIN) + " dequantize " + quote(out) + " " + quote(dir_ + "/d.safetensors") + " --force");
    ASSERT_EQ(d.code, 0) << d.out;
    std::unique_ptr<ModelReader> dq = open_model(dir_ + "/d.safetensors");
    const long di = dq->find("mm.weight");
    ASSERT_GE(di, 0);
    EXPECT_EQ(dq->tensors()[size_t(di)].dtype, DType::F32);
    EXPECT_EQ(read_f32(*dq, size_t(di)), got);
  }
}

// A model whose weights an earlier run kept as f16 (--bits 0 --fp16: NAME.f16 + Cast) is
// quantized again like any float model: the Casts give way to the new form, MatMulNBits
// where it applies, and the codes are those of the same f16 values read from a
// safetensors file; kept float again, the pair is written once.
TEST_F(OnnxReaderTest, WeightsKeptAsF16ByAnEarlierRunAreQuantizedAgain) {
  save_model(checkable(small_model()), dir_ + "/m.onnx");
  const std::string w = quote(WQUANT_BIN);
  ASSERT_EQ(run(w + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(dir_ + "/h.onnx") + " --bits 0 --fp16 -q").code, 0);
  ASSERT_EQ(run(w + " dequantize " + quote(dir_ + "/h.onnx") + " " + quote(dir_ + "/h.safetensors") + " --fp16").code, 0);
  for (const std::string flags : {"--bits 4 --block 16", "--bits 3 --block 16 --asym", "--bits 0", "--bits 0 --fp16"}) {
    SCOPED_TRACE(flags);
    const std::string out = dir_ + "/q.onnx";
    const CmdResult r = run(w + " quantize " + quote(dir_ + "/h.onnx") + " " + quote(out) + " " + flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(onnx_checker_error(out), "");
    const onnx::ModelProto m = load_model(out);
    std::map<std::string, int> producers, casts;
    for (const auto& n : m.graph().node()) {
      for (const auto& o : n.output()) ++producers[o];
      if (n.op_type() == "Cast") ++casts[n.input(0)];
    }
    for (const auto& [name, count] : producers) EXPECT_EQ(count, 1) << name << " has more than one producer";
    const bool kept = flags.rfind("--bits 0", 0) == 0;
    for (const std::string name : {"mm.weight", "gemm.weight", "conv.weight", "emb.weight"}) {
      EXPECT_EQ(casts[name + ".f16"], kept ? 1 : 0) << name;
    }
    bool nbits = false;
    for (const auto& n : m.graph().node()) nbits |= n.op_type() == "MatMulNBits";
    EXPECT_EQ(nbits, flags == "--bits 4 --block 16");
    if (kept) continue;
    const CmdResult s = run(w + " quantize " + quote(dir_ + "/h.safetensors") + " " + quote(dir_ + "/q.safetensors") + " " +
                            flags + " --force -q");
    ASSERT_EQ(s.code, 0) << s.out;
    std::unique_ptr<ModelReader> a = open_model(out), b = open_model(dir_ + "/q.safetensors");
    for (const std::string name : {"mm.weight", "gemm.weight", "emb.weight"}) {
      SCOPED_TRACE(name);
      ASSERT_GE(a->find(name), 0);
      ASSERT_GE(b->find(name), 0);
      const QuantizedTensor qa = a->load_quantized(size_t(a->find(name))), qb = b->load_quantized(size_t(b->find(name)));
      EXPECT_TRUE(qa.packed == qb.packed);
      EXPECT_EQ(qa.shape, qb.shape);
    }
  }
}

// IR < 4: every initializer is also a graph input; the ones the output adds are listed
// there too, so ONNX's checker takes the model (it refused "W.qweight in initializer but
// not in graph input").
TEST_F(OnnxReaderTest, Ir3ModelsListTheNewInitializersAmongTheInputs) {
  onnx::ModelProto m = small_model();
  m.set_ir_version(3);
  m.mutable_opset_import(0)->set_version(11);  // (Gemm's C is optional from 11)
  m = checkable(m);
  save_model(m, dir_ + "/ir3.onnx");
  ASSERT_EQ(onnx_checker_error(dir_ + "/ir3.onnx"), "");
  for (const std::string flags : {"--bits 4 --block 16", "--bits 3 --block 16", "--bits 0 --fp16"}) {
    SCOPED_TRACE(flags);
    const std::string out = dir_ + "/q.onnx";
    const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/ir3.onnx") + " " + quote(out) + " " + flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(onnx_checker_error(out), "");
    const onnx::ModelProto q = load_model(out);
    std::set<std::string> inputs;
    for (const auto& v : q.graph().input()) EXPECT_TRUE(inputs.insert(v.name()).second) << v.name() << " listed twice";
    for (const auto& t : q.graph().initializer()) EXPECT_TRUE(inputs.count(t.name())) << t.name();
  }
}

// --dry-run's size is the bytes written, data file included (its name is in every
// external tensor's header, so the size depends on OUT's name).
TEST_F(OnnxReaderTest, PlannedBytesAreTheBytesWritten) {
  save_model(small_model(), dir_ + "/m.onnx");
  for (const std::string extra : {"", " --external-data"}) {
    const std::string out = dir_ + "/a-rather-long-output-name.onnx";
    const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(out) +
                            " --bits 4 --block 16 --hqq --force --json" + extra);
    ASSERT_EQ(r.code, 0) << r.out;
    const size_t at = r.out.find("\"planned_output_bytes\":");
    ASSERT_NE(at, std::string::npos) << r.out;
    const uint64_t planned = std::stoull(r.out.substr(at + 23));
    uint64_t written = fs::file_size(out);
    if (!extra.empty()) written += fs::file_size(out + ".data");
    EXPECT_EQ(planned, written) << extra;
    EXPECT_EQ(fs::exists(out + ".data"), !extra.empty());
  }
}

// External data: every payload on a 64-byte boundary of OUT.onnx.data, and those of 64 KiB
// and more on a 4 KiB one (the codes of a large matrix are written to it straight from
// the quantizer's buffer, engine/output_bytes.h and io/output_file.h write_held). The
// file is the same whichever way it reaches the disk, and its codes and parameters are
// those the same weight gets from a safetensors source.
TEST_F(OnnxReaderTest, ExternalDataPayloadsAreAlignedAndWrittenWhole) {
  const size_t K = 2048, N = 1100;  // packed codes 1.1 MB: a pool buffer of its own mapping
  std::vector<float> stored(K * N);
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  for (float& x : stored) x = dist(rng);
  save_matmul_in_external_data(stored, K, N, 0);
  std::string data[2];
  for (int i = 0; i < 2; ++i) {
    const std::string env = i == 0 ? "WQUANT_OUTPUT_IO=direct " : "WQUANT_OUTPUT_IO=buffered ";
    const CmdResult r = run("env " + env + quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " +
                            quote(dir_ + "/q.onnx") + " --bits 4 --block 32 --asym --external-data --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    std::ifstream f(dir_ + "/q.onnx.data", std::ios::binary);
    data[i].assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  EXPECT_TRUE(data[0] == data[1]) << "direct and buffered output differ";
  const onnx::ModelProto q = load_model(dir_ + "/q.onnx");
  size_t large = 0;
  for (const auto& t : q.graph().initializer()) {
    if (t.data_location() != onnx::TensorProto::EXTERNAL) continue;
    uint64_t offset = 0, length = 0;
    for (const auto& e : t.external_data()) {
      if (e.key() == "offset") offset = std::stoull(e.value());
      if (e.key() == "length") length = std::stoull(e.value());
    }
    EXPECT_EQ(offset % 64, 0u) << t.name();
    if (length >= 65536) {
      EXPECT_EQ(offset % 4096, 0u) << t.name() << " (" << length << " bytes)";
      ++large;
    }
    EXPECT_LE(offset + length, data[0].size()) << t.name();
  }
  EXPECT_GE(large, 3u);  // codes, scales and zero points
  const CmdResult s = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/rows.safetensors") + " " +
                          quote(dir_ + "/rows-q.safetensors") + " --bits 4 --block 32 --asym --force -q");
  ASSERT_EQ(s.code, 0) << s.out;
  std::unique_ptr<ModelReader> a = open_model(dir_ + "/q.onnx"), b = open_model(dir_ + "/rows-q.safetensors");
  const long ia = a->find("mm.weight"), ib = b->find("mm.weight");
  ASSERT_GE(ia, 0);
  ASSERT_GE(ib, 0);
  const QuantizedTensor qa = a->load_quantized(size_t(ia)), qb = b->load_quantized(size_t(ib));
  EXPECT_TRUE(qa.packed == qb.packed);
  EXPECT_TRUE(qa.scales == qb.scales);  // (the zeros are stored as MatMulNBits' z = -min / s)
}

// An embedding read only by Gather: symmetric 4- and 8-bit become GatherBlockQuantized,
// and onnxruntime gathers exactly wquant's dequantized rows; asymmetric takes standard ops.
TEST_F(OnnxReaderTest, GatherOnlyEmbeddingRunsAsGatherBlockQuantized) {
  if (const std::string why = ort_missing(); !why.empty()) GTEST_SKIP() << why;
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("embedding");
  const std::vector<float> emb = ramp(40 * 128, 1.5f);
  add_init(g, "emb.weight", onnx::TensorProto::FLOAT, {40, 128})->set_raw_data(emb.data(), emb.size() * 4);
  add_node(g, "Gather", {"emb.weight", "input_ids"}, "logits");
  auto* in = g->add_input();
  in->set_name("input_ids");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  // Listed among the inputs too, as models of IR < 4 list every initializer: the
  // quantized model must not ask the caller for it.
  auto* as_input = g->add_input();
  as_input->set_name("emb.weight");
  as_input->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  auto* out = g->add_output();
  out->set_name("logits");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  save_model(m, dir_ + "/emb.onnx");
  const std::vector<int64_t> ids = {3, 0, 39, 17, 3};
  for (const auto& [flags, op] : std::vector<std::pair<std::string, std::string>>{
           {"--bits 4 --block 32", "GatherBlockQuantized"}, {"--bits 8 --block 64", "GatherBlockQuantized"},
           {"--bits 4", "GatherBlockQuantized"}, {"--bits 4 --block 32 --asym", "Reshape"}, {"--bits 3 --block 32", "Reshape"}}) {
    SCOPED_TRACE(flags);
    const std::string q = dir_ + "/q.onnx", d = dir_ + "/d.safetensors", w = quote(WQUANT_BIN);
    CmdResult r = run(w + " quantize " + quote(dir_ + "/emb.onnx") + " " + quote(q) + " " + flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    bool found = false;
    const onnx::ModelProto qm = load_model(q);
    for (const auto& n : qm.graph().node()) found |= n.op_type() == op;
    EXPECT_TRUE(found) << op;
    r = run(w + " dequantize " + quote(q) + " " + quote(d) + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    std::unique_ptr<ModelReader> dq = open_model(d);
    const std::vector<float> rows = read_f32(*dq, size_t(dq->find("emb.weight")));
    std::vector<float> want;
    for (int64_t id : ids) want.insert(want.end(), rows.begin() + id * 128, rows.begin() + (id + 1) * 128);
    EXPECT_EQ(ort_logits(q, ids), want);
    EXPECT_NE(want, std::vector<float>(emb.begin(), emb.begin() + long(want.size())));  // it was quantized
  }
}

// Large weights read as rows (an embedding read by Gather, a Gemm weight with transB)
// reach the ONNX writer in row pieces: each piece's codes are written as they come, its
// parameters made in the form's layout and written after the last piece. In every form a
// piece can take (GatherBlockQuantized, the dequant ops with f32 or f16 parameters, opset
// 21's DequantizeLinear with uint8 zero points; MatMul weights, stored transposed, come
// whole as MatMulNBits beside them) the files are byte for byte those written
// from whole tensors, with direct and with buffered output; and a zero point that does
// not fit is named at its row of the tensor, not of the piece.
TEST_F(OnnxReaderTest, RowPiecesGiveTheFilesOfWholeTensorsInEveryForm) {
  constexpr int64_t kVocab = 300, kDim = 256, kOut = 96, kN = 64;
  std::mt19937 rng(11);
  std::student_t_distribution<float> t(4.0f);
  auto values = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = 0.02f * t(rng);
    return v;
  };
  const std::vector<float> emb = values(kVocab * kDim), gemm = values(kOut * kDim), mm = values(kDim * kN);
  auto model = [&](int64_t opset, bool one_signed_row) {
    onnx::ModelProto m;
    m.set_ir_version(8);
    m.add_opset_import()->set_version(opset);
    auto* g = m.mutable_graph();
    g->set_name("pieces");
    std::vector<float> e = emb;
    if (one_signed_row) {  // row 250's first block all positive: its zero point is below 0
      for (int64_t c = 0; c < 32; ++c) e[size_t(250 * kDim + c)] = 0.01f + 0.001f * float(c);
    }
    add_init(g, "emb.weight", onnx::TensorProto::FLOAT, {kVocab, kDim})->set_raw_data(e.data(), e.size() * 4);
    add_init(g, "gemm.weight", onnx::TensorProto::FLOAT, {kOut, kDim})->set_raw_data(gemm.data(), gemm.size() * 4);
    add_init(g, "mm.weight", onnx::TensorProto::FLOAT, {kDim, kN})->set_raw_data(mm.data(), mm.size() * 4);
    add_node(g, "Gather", {"emb.weight", "ids"}, "x");
    add_node(g, "Gemm", {"x", "gemm.weight"}, "y1", 1);
    add_node(g, "MatMul", {"x", "mm.weight"}, "y2");
    save_model(m, dir_ + "/m.onnx");
  };
  struct Case {
    const char* what;
    int bits, block;
    bool asym, fp16, hqq, round_zero;
  };
  auto file = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  for (const char* sub : {"whole", "direct", "buffered", "bad"}) fs::create_directories(dir_ + "/" + sub);
  for (const int64_t opset : {17, 21})
  for (const Case& c : {Case{"4-bit sym", 4, 32, false, false, false, false}, Case{"8-bit sym", 8, 64, false, false, false, false},
                        Case{"4-bit asym", 4, 64, true, false, false, false}, Case{"3-bit asym fp16", 3, 32, true, true, false, false},
                        Case{"2-bit hqq", 2, 16, true, false, true, false},
                        Case{"4-bit hqq, integer zeros", 4, 32, true, false, true, true}}) {
    SCOPED_TRACE(std::string(c.what) + ", opset " + std::to_string(opset));
    PlanOptions o;
    o.defaults.bits = c.bits;
    o.defaults.block = c.block;
    o.defaults.asym = c.asym;
    o.defaults.fp16 = c.fp16;
    o.defaults.hqq = c.hqq;
    o.defaults.hqq_opts.round_zero = c.round_zero;
    if (c.round_zero) o.defaults.hqq_opts.max_steps = 0;  // (the steps move z off the integers)
    o.format = OutputFormat::Onnx;
    auto write = [&](const std::string& out, size_t piece_bytes, bool buffered, bool external = true) {
      auto r = open_model(dir_ + "/m.onnx");
      const std::vector<TensorPlan> plan = make_plan(r->tensors(), o);
      WriterOptions wo;
      wo.external_data = external;
      if (buffered) ::setenv("WQUANT_OUTPUT_IO", "buffered", 1);
      auto w = make_writer(out, OutputFormat::Onnx, plan, *r, wo);
      ::unsetenv("WQUANT_OUTPUT_IO");
      test::CountingSink sink(*w);
      PipelineOptions po;
      po.quantized_piece_bytes = piece_bytes;
      Scheduler sch(2);
      sch.run([&] { run_pipeline(plan, r->tensors(), *r, sink, po); });
      w->commit();
      return sink.pieces;
    };
    model(opset, false);
    EXPECT_EQ(write(dir_ + "/whole/q.onnx", 0, true), 0u);
    // 4 KiB pieces: emb.weight (1 KiB rows) in pieces of 4 rows, gemm.weight too; the
    // MatMul weight, read in bands of stored rows, whole.
    EXPECT_EQ(write(dir_ + "/direct/q.onnx", 4096, false), size_t(kVocab / 4 + kOut / 4));
    write(dir_ + "/buffered/q.onnx", 4096, true);
    const std::string model_file = file(dir_ + "/whole/q.onnx"), data = file(dir_ + "/whole/q.onnx.data");
    ASSERT_FALSE(data.empty());
    for (const char* how : {"direct", "buffered"}) {
      EXPECT_TRUE(file(dir_ + "/" + how + "/q.onnx") == model_file) << how;
      EXPECT_TRUE(file(dir_ + "/" + how + "/q.onnx.data") == data) << how;
    }
    // Payloads inside the model file (no --external-data): the pieces' codes go there.
    write(dir_ + "/whole/e.onnx", 0, true, false);
    write(dir_ + "/direct/e.onnx", 4096, false, false);
    EXPECT_FALSE(fs::exists(dir_ + "/whole/e.onnx.data"));
    EXPECT_GT(file(dir_ + "/whole/e.onnx").size(), data.size());
    EXPECT_TRUE(file(dir_ + "/direct/e.onnx") == file(dir_ + "/whole/e.onnx")) << "embedded payloads";
    // The forms this case was to cover are there.
    std::set<std::string> ops;
    const onnx::ModelProto written = load_model(dir_ + "/whole/q.onnx");
    for (const auto& n : written.graph().node()) ops.insert(n.op_type());
    EXPECT_EQ(ops.count("GatherBlockQuantized"), size_t(!c.asym && c.bits != 3));
    EXPECT_EQ(ops.count("MatMulNBits"), size_t(c.bits != 3));
    EXPECT_EQ(ops.count("DequantizeLinear"), size_t(opset >= 21 && (!c.asym || c.round_zero)));
    if (c.round_zero && opset >= 21) {
      model(opset, true);
      std::string errors[2];
      for (size_t i = 0; i < 2; ++i) {
        try {
          write(dir_ + "/bad/q.onnx", i == 0 ? 0 : 4096, false);
        } catch (const Error& e) {
          errors[i] = e.what();
        }
        EXPECT_NE(errors[i].find("emb.weight"), std::string::npos) << errors[i];
        EXPECT_NE(errors[i].find("of block 0 in row 250 "), std::string::npos) << errors[i];
      }
      EXPECT_EQ(errors[0], errors[1]);
      EXPECT_FALSE(fs::exists(dir_ + "/bad/q.onnx"));
    }
  }
}

TEST_F(OnnxReaderTest, TruncatedProtobufIsRefused) {
  save_model(small_model(), dir_ + "/full.onnx");
  std::ifstream f(dir_ + "/full.onnx", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  std::ofstream(dir_ + "/cut.onnx", std::ios::binary).write(bytes.data(), std::streamsize(bytes.size() * 3 / 5));
  expect_refused_file(dir_ + "/cut.onnx", "cut.onnx", "truncated");
}

TEST_F(OnnxReaderTest, WrongTypesAreRefused) {
  onnx::ModelProto m = small_model();
  m.mutable_graph()->mutable_initializer(0)->mutable_raw_data()->resize(100);
  expect_refused(m, "mm.weight", "raw_data has 100 bytes");
  m = small_model();
  m.mutable_graph()->mutable_initializer(0)->set_data_type(99);
  expect_refused(m, "mm.weight", "data type 99");
  m = small_model();
  auto* t = m.mutable_graph()->mutable_initializer(1);  // gemm.weight: floats in int64_data
  t->clear_float_data();
  for (int i = 0; i < 16 * 64; ++i) t->add_int64_data(i);
  expect_refused(m, "gemm.weight", "does not hold F32");
  m = small_model();
  m.mutable_graph()->mutable_initializer(1)->add_float_data(1.0f);
  expect_refused(m, "gemm.weight", "elements, the shape says");
}

// A NaN in a MatMul weight is named where the file holds it: the initializer is stored
// [K, N] and quantized as its transpose, so "row 5, column 1" alone (the listing's
// coordinates) would point at the wrong element of the file.
TEST_F(OnnxReaderTest, NonFiniteWeightsAreNamedAtTheirStoredPosition) {
  onnx::ModelProto m = small_model();
  std::string* raw = m.mutable_graph()->mutable_initializer(0)->mutable_raw_data();  // mm.weight [64, 32]
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(raw->data() + (1 * 32 + 5) * 4, &nan, 4);
  save_model(m, dir_ + "/nan.onnx");
  for (const std::string flags : {"--bits 4", "--bits 4 --asym", "--hqq", "--hqq --hqq-stop tensor", "--bits 3 --block 32"}) {
    SCOPED_TRACE(flags);
    const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/nan.onnx") + " " + quote(dir_ + "/out.onnx") + " " + flags);
    EXPECT_EQ(r.code, 3) << r.out;
    EXPECT_NE(r.out.find("mm.weight: non-finite weight (NaN or Inf) at [1][5] as stored (row 5, column 1 of the transposed listing)"),
              std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(dir_ + "/out.onnx"));
  }
}

TEST_F(OnnxReaderTest, OverflowingAndNegativeShapesAreRefused) {
  onnx::ModelProto m = small_model();
  auto* t = m.mutable_graph()->mutable_initializer(0);
  t->set_dims(0, int64_t(1) << 40);
  t->set_dims(1, int64_t(1) << 40);
  expect_refused(m, "mm.weight", "overflow");
  m = small_model();
  m.mutable_graph()->mutable_initializer(0)->set_dims(0, -64);
  expect_refused(m, "mm.weight", "negative");
}

TEST_F(OnnxReaderTest, ExternalDataMissingOutsidePastTheEndOrOverlappingIsRefused) {
  const uint64_t len = 32 * 64 * 4;
  expect_refused(with_external(small_model(), "mm.weight", "absent.data", 0, len), "mm.weight", "absent.data");
  expect_refused(with_external(small_model(), "mm.weight", "../w.data", 0, len), "mm.weight", "outside the model's folder");
  expect_refused(with_external(small_model(), "mm.weight", "/etc/hostname", 0, len), "mm.weight", "outside the model's folder");
  write_data(dir_ + "/../outside.data", len);
  fs::create_symlink(dir_ + "/../outside.data", dir_ + "/link.data");
  expect_refused(with_external(small_model(), "mm.weight", "link.data", 0, len), "mm.weight", "resolves outside");
  write_data(dir_ + "/w.data", len + 100);
  expect_refused(with_external(small_model(), "mm.weight", "w.data", 200, len), "mm.weight", "past the end");
  expect_refused(with_external(small_model(), "mm.weight", "w.data", 0, len - 4), "mm.weight", "the shape and type need");
  write_data(dir_ + "/two.data", 2 * len);
  onnx::ModelProto m = with_external(small_model(), "mm.weight", "two.data", 0, len);
  m = with_external(m, "emb.weight", "two.data", len - 64, 10 * 64 * 4);
  expect_refused(m, "weight", "overlaps");
  // A string tensor with external data (ONNX keeps strings inline): no location of it is
  // copied into the output unchecked, outside the folder or not.
  for (const std::string loc : {"../../../etc/shadow", "w.data"}) {
    onnx::ModelProto sm = small_model();
    onnx::TensorProto* st = add_init(sm.mutable_graph(), "labels", onnx::TensorProto::STRING, {4});
    st->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* e = st->add_external_data();
    e->set_key("location");
    e->set_value(loc);
    expect_refused(sm, "labels", "a string tensor with external data");
  }
  // A FIFO as external data, or as the model: refused, never waited on (`timeout`: a
  // regression hangs no longer than that).
  ASSERT_EQ(::mkfifo((dir_ + "/fifo.data").c_str(), 0644), 0);
  save_model(with_external(small_model(), "mm.weight", "fifo.data", 0, len), dir_ + "/in.onnx");
  CmdResult r = run("timeout 20 " + quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/in.onnx") + " " + quote(dir_ + "/f.onnx") + " --bits 4");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("fifo.data: is not a regular file"), std::string::npos) << r.out;
  r = run("timeout 20 " + quote(WQUANT_BIN) + " inspect " + quote(dir_ + "/fifo.data"));
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("is not a regular file"), std::string::npos) << r.out;
}

TEST_F(OnnxReaderTest, NeverReplacesTheInputsExternalData) {
  const std::vector<float> emb = ramp(10 * 64, 2.0f);
  auto make_input = [&] {
    std::ofstream(dir_ + "/in.onnx.data", std::ios::binary)
        .write(reinterpret_cast<const char*>(emb.data()), std::streamsize(emb.size() * 4));
    save_model(with_external(small_model(), "emb.weight", "in.onnx.data", 0, emb.size() * 4), dir_ + "/in.onnx");
  };
  make_input();
  save_model(small_model(), dir_ + "/other.onnx");
  const std::string w = quote(WQUANT_BIN) + " quantize ";
  // OUT the data file itself, or an OUT whose own data file would be it.
  CmdResult r = run(w + quote(dir_ + "/in.onnx") + " " + quote(dir_ + "/in.onnx.data") + " --format wq --force");
  EXPECT_EQ(r.code, 4) << r.out;
  r = run(w + quote(dir_ + "/other.onnx") + " " + quote(dir_ + "/in.onnx") + " --force --external-data");
  EXPECT_EQ(r.code, 0) << r.out;  // other.onnx reads no data file: replacing in.onnx is asked for
  make_input();
  r = run(w + quote(dir_ + "/in.onnx") + " " + quote(dir_ + "/in.onnx") + " --force");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_NE(r.out.find("never overwrites its input"), std::string::npos) << r.out;
  // dequantize, whose OUT is a .safetensors: a data file of that name is an input too.
  fs::copy_file(dir_ + "/in.onnx.data", dir_ + "/w.safetensors");
  save_model(with_external(small_model(), "emb.weight", "w.safetensors", 0, emb.size() * 4), dir_ + "/d.onnx");
  r = run(quote(WQUANT_BIN) + " dequantize " + quote(dir_ + "/d.onnx") + " " + quote(dir_ + "/w.safetensors") + " --force");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_NE(r.out.find("never overwrites its input"), std::string::npos) << r.out;
}

// The names the quantized graph adds (NAME.qweight, NAME.scales, ...) must be new: an
// initializer or node output of that name would be a second definition, which onnxruntime
// refuses (the output was written with exit 0).
TEST_F(OnnxReaderTest, NamesTheQuantizedGraphAddsMustBeNew) {
  onnx::ModelProto m = small_model();
  auto* t = add_init(m.mutable_graph(), "mm.weight.scales", onnx::TensorProto::FLOAT, {32});
  const std::vector<float> v(32, 0.5f);
  t->set_raw_data(v.data(), v.size() * 4);
  save_model(m, dir_ + "/a.onnx");
  CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/a.onnx") + " " + quote(dir_ + "/qa.onnx") + " --bits 4");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("mm.weight.scales: the quantized form of mm.weight needs this name"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ + "/qa.onnx"));
  m = small_model();
  add_node(m.mutable_graph(), "Identity", {"x2"}, "gemm.weight.qweight");
  save_model(m, dir_ + "/b.onnx");
  r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/b.onnx") + " " + quote(dir_ + "/qb.onnx") + " --bits 4");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("gemm.weight.qweight: the quantized form of gemm.weight needs this name"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ + "/qb.onnx"));
}

// A quantized model whose weight's record sits beside an initializer of the same name
// lists two tensors of one name: refused as bad input naming both, by every command (it
// was listed twice, and dequantize failed as a usage error naming its output).
TEST_F(OnnxReaderTest, ARecordBesideAnInitializerOfItsNameIsRefused) {
  save_model(small_model(), dir_ + "/m.onnx");
  CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(dir_ + "/q.onnx") + " --bits 4 --quiet");
  ASSERT_EQ(r.code, 0) << r.out;
  onnx::ModelProto q = load_model(dir_ + "/q.onnx");
  auto* t = add_init(q.mutable_graph(), "mm.weight", onnx::TensorProto::FLOAT, {2});
  const std::vector<float> v(2, 0.5f);
  t->set_raw_data(v.data(), v.size() * 4);
  save_model(q, dir_ + "/bad.onnx");
  for (const std::string& cmd : {"inspect " + quote(dir_ + "/bad.onnx"),
                                "dequantize " + quote(dir_ + "/bad.onnx") + " " + quote(dir_ + "/d.safetensors"),
                                "verify " + quote(dir_ + "/m.onnx") + " " + quote(dir_ + "/bad.onnx")}) {
    r = run(quote(WQUANT_BIN) + " " + cmd);
    EXPECT_EQ(r.code, 3) << cmd << ": " << r.out;
    EXPECT_NE(r.out.find("bad.onnx: mm.weight: both a wquant record (wquant.quant.mm.weight) and an initializer of that name"),
              std::string::npos) << r.out;
  }
  EXPECT_FALSE(fs::exists(dir_ + "/d.safetensors"));
}

// A repeated payload field unpacked (one fixed32 field per float, legal protobuf that
// packed-only parsers miss): read as the packed form is (it was refused).
TEST_F(OnnxReaderTest, UnpackedRepeatedPayloadsAreRead) {
  onnx::ModelProto m = small_model();
  auto* t = add_init(m.mutable_graph(), "tiny", onnx::TensorProto::FLOAT, {2});
  t->add_float_data(1.5f);
  t->add_float_data(-2.25f);
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));
  // Packed: key 0x22 (field 4, length-delimited), length 8, two floats. Unpacked: key 0x25
  // (field 4, fixed32) before each float: the same 10 bytes, so no enclosing length moves.
  float f[2] = {1.5f, -2.25f};
  std::string packed = "\x22\x08", unpacked;
  packed.append(reinterpret_cast<const char*>(f), 8);
  for (float x : f) unpacked += '\x25' + std::string(reinterpret_cast<const char*>(&x), 4);
  const size_t at = bytes.find(packed);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, packed.size(), unpacked);
  std::ofstream(dir_ + "/u.onnx", std::ios::binary) << bytes;
  const CmdResult r = run(quote(WQUANT_BIN) + " dequantize " + quote(dir_ + "/u.onnx") + " " + quote(dir_ + "/d.safetensors"));
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(dir_ + "/d.safetensors", std::ios::binary);
  const std::string d((std::istreambuf_iterator<char>(in)), {});
  uint64_t n = 0;
  std::memcpy(&n, d.data(), 8);
  const nlohmann::json h = nlohmann::json::parse(d.substr(8, n));
  const uint64_t b = h["tiny"]["data_offsets"][0];
  float got[2];
  std::memcpy(got, d.data() + 8 + n + b, 8);
  EXPECT_EQ(got[0], 1.5f);
  EXPECT_EQ(got[1], -2.25f);
}

// The summary's sizes and ratio count OUT.data, and --json lists it among the outputs;
// inspect's "on disk" counts a model's data files.
TEST_F(OnnxReaderTest, SizesCountTheExternalDataFile) {
  save_model(small_model(), dir_ + "/m.onnx");
  const std::string q = dir_ + "/q.onnx";
  const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(q) +
                          " --bits 4 --external-data --json 2>/dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  const uint64_t both = fs::file_size(q) + fs::file_size(q + ".data");
  EXPECT_GT(fs::file_size(q + ".data"), 0u);
  EXPECT_EQ(doc["output_bytes"].get<uint64_t>(), both) << r.out;
  EXPECT_EQ(doc["outputs"].size(), 2u) << r.out;
  const CmdResult i = run(quote(WQUANT_BIN) + " inspect " + quote(q) + " --json");
  ASSERT_EQ(i.code, 0) << i.out;
  EXPECT_EQ(nlohmann::json::parse(i.out)["totals"]["file_bytes"].get<uint64_t>(), both) << i.out;
}

// OUT.data is the writer's to decide: checked and reported only where the layout has
// external data. Without it, an existing OUT.data is neither refused nor counted (a stale
// one from an earlier run was both); --external-data on payloads all under 1 KiB writes
// no empty, unnamed data file; a killed --external-data run's data temporary is removed
// by a later run to OUT without external data too; an OUT.data name past NAME_MAX is
// refused before any work, not at the final rename.
TEST_F(OnnxReaderTest, TheDataFileIsCheckedAndCountedOnlyWhereItIsWritten) {
  save_model(small_model(), dir_ + "/m.onnx");
  const std::string w = quote(WQUANT_BIN), m = quote(dir_ + "/m.onnx"), q = dir_ + "/q.onnx";
  write_data(q + ".data", 100);  // stale
  const CmdResult r = run(w + " quantize " + m + " " + quote(q) + " --bits 4 --json 2>/dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["outputs"].size(), 1u) << r.out;
  EXPECT_EQ(doc["output_bytes"].get<uint64_t>(), fs::file_size(q)) << r.out;
  EXPECT_EQ(fs::file_size(q + ".data"), 100u);  // not ours: left as it was
  // With external data it is OUT's: refused without --force, replaced with it.
  const CmdResult e = run(w + " quantize " + m + " " + quote(dir_ + "/e.onnx") + " --bits 4 --external-data");
  ASSERT_EQ(e.code, 0) << e.out;
  const CmdResult again = run(w + " quantize " + m + " " + quote(q) + " --bits 4 --external-data --force");
  ASSERT_EQ(again.code, 0) << again.out;
  fs::remove(q);
  write_data(q + ".data", 100);
  const CmdResult refused = run(w + " quantize " + m + " " + quote(q) + " --bits 4 --external-data");
  EXPECT_EQ(refused.code, 4) << refused.out;
  EXPECT_NE(refused.out.find("q.onnx.data: already exists"), std::string::npos) << refused.out;
  EXPECT_FALSE(fs::exists(q));
  EXPECT_EQ(fs::file_size(q + ".data"), 100u);
  // Payloads all under 1 KiB: no data file at all.
  onnx::ModelProto tiny;
  tiny.set_ir_version(8);
  tiny.add_opset_import()->set_version(17);
  const std::vector<float> v = ramp(16 * 8, 1.0f);
  add_init(tiny.mutable_graph(), "w", onnx::TensorProto::FLOAT, {16, 8})->set_raw_data(v.data(), v.size() * 4);
  add_node(tiny.mutable_graph(), "MatMul", {"x", "w"}, "y");
  save_model(tiny, dir_ + "/tiny.onnx");
  const CmdResult t = run(w + " quantize " + quote(dir_ + "/tiny.onnx") + " " + quote(dir_ + "/t.onnx") + " --bits 4 --external-data");
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_FALSE(fs::exists(dir_ + "/t.onnx.data"));
  EXPECT_NE(load_model(dir_ + "/t.onnx").graph().initializer_size(), 0);
  // A killed run's data temporary (pid 999999999 exists on no Linux: pid_max <= 2^22).
  const std::string leftover = dir_ + "/.k.onnx.data.wquant-tmp-999999999";
  write_data(leftover, 100);
  const CmdResult k = run(w + " quantize " + m + " " + quote(dir_ + "/k.onnx") + " --bits 4");
  ASSERT_EQ(k.code, 0) << k.out;
  EXPECT_FALSE(fs::exists(leftover));
  // OUT fits NAME_MAX, OUT.data does not.
  const std::string long_out = dir_ + "/" + std::string(255 - 5, 'n') + ".onnx";
  const CmdResult l = run(w + " quantize " + m + " " + quote(long_out) + " --bits 4 --external-data");
  EXPECT_EQ(l.code, 4) << l.out;
  EXPECT_NE(l.out.find("more than this system's 255"), std::string::npos) << l.out;
  EXPECT_FALSE(fs::exists(long_out));
  for (const auto& f : fs::directory_iterator(dir_))
    EXPECT_EQ(f.path().filename().string().find("wquant-tmp"), std::string::npos) << f.path();
}

// OUT taken by another program while the run wrote it: the commit refuses to replace it,
// and the run's own OUT.data, renamed into place just before, is removed (it was left).
TEST_F(OnnxReaderTest, AFailedCommitLeavesNoDataFile) {
  save_model(small_model(), dir_ + "/m.onnx");
  const std::string out = dir_ + "/q.onnx";
  auto r = open_model(dir_ + "/m.onnx");
  PlanOptions o;
  o.defaults.bits = 4;
  o.format = OutputFormat::Onnx;
  const std::vector<TensorPlan> plan = make_plan(r->tensors(), o);
  WriterOptions wo;
  wo.external_data = true;
  auto w = make_writer(out, OutputFormat::Onnx, plan, *r, wo);
  Scheduler sch(1);
  sch.run([&] { run_pipeline(plan, r->tensors(), *r, *w, PipelineOptions{}); });
  std::ofstream(out) << "someone else's";
  EXPECT_THROW(w->commit(), Error);
  EXPECT_FALSE(fs::exists(out + ".data"));
  std::ifstream in(out);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "someone else's");
}

// Ctrl-C right after OUT.data is renamed into place, before the graph is (the test holds
// the run in that window): OUT.data is removed too, nothing is left.
TEST_F(OnnxReaderTest, CtrlCBetweenTheDataFileAndTheGraphLeavesNeither) {
  save_model(small_model(), dir_ + "/m.onnx");
  fs::create_directory(dir_ + "/out");
  const std::string data = dir_ + "/out/q.onnx.data";
  const CmdResult r = run("WQUANT_TEST_RENAME_PAUSE_MS=3000 " + quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " +
                          quote(dir_ + "/out/q.onnx") + " --bits 4 --external-data -q & pid=$!; i=0; while [ ! -e " + quote(data) +
                          " ] && [ $i -lt 6000 ]; do sleep 0.005; i=$((i+1)); done; [ -e " + quote(dir_ + "/out/q.onnx") +
                          " ] && echo 'the graph was there'; kill -INT $pid; wait $pid; echo \"rc=$?\"");
  EXPECT_NE(r.out.find("rc=130"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("the graph was there"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::is_empty(dir_ + "/out")) << "left behind: " << fs::directory_iterator(dir_ + "/out")->path();
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// With --force over an earlier pair: Ctrl-C after the data file is replaced, before the
// graph is, puts the earlier data file back (the earlier graph names it): the pair stays
// as it was, nothing beside it.
TEST_F(OnnxReaderTest, CtrlCBetweenTheDataFileAndTheGraphKeepsTheEarlierPair) {
  save_model(small_model(), dir_ + "/m.onnx");
  fs::create_directory(dir_ + "/out");
  const std::string graph = dir_ + "/out/q.onnx", data = graph + ".data";
  ASSERT_EQ(run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(graph) + " --bits 8 --external-data -q").code, 0);
  const std::string old_graph = read_file(graph), old_data = read_file(data);
  const CmdResult r = run("ino=$(stat -c %i " + quote(data) + "); WQUANT_TEST_RENAME_PAUSE_MS=3000 " + quote(WQUANT_BIN) +
                          " quantize " + quote(dir_ + "/m.onnx") + " " + quote(graph) +
                          " --bits 4 --external-data --force -q & pid=$!; i=0; while [ \"$(stat -c %i " + quote(data) +
                          ")\" = \"$ino\" ] && [ $i -lt 6000 ]; do sleep 0.005; i=$((i+1)); done; [ \"$(stat -c %i " + quote(data) +
                          ")\" != \"$ino\" ] && echo replaced; kill -INT $pid; wait $pid; echo \"rc=$?\"");
  EXPECT_NE(r.out.find("replaced"), std::string::npos) << "the data file was never replaced: " << r.out;
  EXPECT_NE(r.out.find("rc=130"), std::string::npos) << r.out;
  EXPECT_TRUE(read_file(graph) == old_graph);
  EXPECT_TRUE(read_file(data) == old_data);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_ + "/out"), fs::directory_iterator()), 2);
}

// A pair whose second rename fails, or whose data file fills the disk half-way (through
// tests/fault_shim.cpp, preloaded): exit 4 naming the file and the cause in one line, the
// earlier pair --force was replacing as it was, nothing beside it; and where no pair was
// there before, nothing at all. Where the directory's fsync after a rename fails, the
// renames go on: the new pair is in place, and the run fails saying it may not survive a
// crash.
TEST_F(OnnxReaderTest, AFailedRenameSyncOrWriteOfThePairKeepsTheEarlierPair) {
  save_model(small_model(), dir_ + "/m.onnx");
  fs::create_directory(dir_ + "/out");
  const std::string graph = dir_ + "/out/q.onnx", data = graph + ".data";
  const std::string quantize = quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(graph) + " --external-data -q ";
  ASSERT_EQ(run(quantize + "--bits 4").code, 0);
  const std::string new_graph = read_file(graph), new_data = read_file(data);
  ASSERT_EQ(run(quantize + "--bits 8 --force").code, 0);
  const std::string old_graph = read_file(graph), old_data = read_file(data);
  ASSERT_GT(old_data.size(), 1000u);
  // (ASan, in the sanitizer build, must not insist on coming first: the shim does.)
  const char* asan = std::getenv("ASAN_OPTIONS");
  const std::string shim = "LD_PRELOAD=" + quote(WQUANT_FAULT_SHIM) + " ASAN_OPTIONS=" +
                           quote((asan && *asan ? std::string(asan) + ":" : std::string()) + "verify_asan_link_order=0") + " ";
  const std::string eio = std::to_string(EIO);
  struct Case {
    std::string faults, file, says;
    bool placed;  // the new pair in place (else the earlier one, or none)
  };
  const std::string unsynced = "the result's files are in place, but the directory's fsync after this one's rename failed, "
                               "so they may not survive a crash";
  const std::vector<Case> cases = {
      {"WQ_FAULT_DIR_SYNC_ERRNO=" + eio, data, unsynced, true},
      {"WQ_FAULT_DIR_SYNC_ERRNO=" + eio + " WQ_FAULT_DIR_SYNC_AFTER=1", graph, unsynced, true},
      {"WQ_FAULT_RENAME_TO=.onnx WQ_FAULT_RENAME_ERRNO=" + std::to_string(ENOSPC), graph,
       "cannot rename the finished file into place: disk full", false},
      {"WQ_FAULT_DISK_FULL_AFTER=" + std::to_string(old_data.size() / 2), data, "disk full", false},
  };
  for (const bool earlier : {true, false}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(c.faults + (earlier ? " over the earlier pair" : " with no pair before"));
      if (earlier) {
        ASSERT_EQ(run(quantize + "--bits 8 --force").code, 0);
      } else {
        fs::remove(graph);
        fs::remove(data);
      }
      const CmdResult r = run(shim + c.faults + " " + quantize + "--bits 4 --force");
      EXPECT_EQ(r.code, 4) << r.out;
      EXPECT_NE(r.out.find(c.file + ": "), std::string::npos) << r.out;
      EXPECT_NE(r.out.find(c.says), std::string::npos) << r.out;
      EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
      if (c.placed) {
        EXPECT_TRUE(read_file(graph) == new_graph);
        EXPECT_TRUE(read_file(data) == new_data);
        EXPECT_EQ(std::distance(fs::directory_iterator(dir_ + "/out"), fs::directory_iterator()), 2);
      } else if (earlier) {
        EXPECT_TRUE(read_file(graph) == old_graph);
        EXPECT_TRUE(read_file(data) == old_data);
        EXPECT_EQ(std::distance(fs::directory_iterator(dir_ + "/out"), fs::directory_iterator()), 2);
      } else {
        EXPECT_TRUE(fs::is_empty(dir_ + "/out")) << "left: " << fs::directory_iterator(dir_ + "/out")->path();
      }
    }
  }
}

// MatMulNBits only for blocks of 16 to 256 (onnxruntime loads no other; its test with the
// runtime is OnnxRuntimeWide, which needs onnxruntime-node): rows of 512, channel-wise (the
// default) or --block 512, take the standard ops; --block 256 MatMulNBits.
TEST_F(OnnxReaderTest, MatMulNBitsOnlyForBlocksOf16To256) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  const std::vector<float> w = ramp(512 * 8, 0.5f);
  add_init(g, "mm.weight", onnx::TensorProto::FLOAT, {512, 8})->set_raw_data(w.data(), w.size() * 4);
  add_node(g, "MatMul", {"x", "mm.weight"}, "y");
  save_model(m, dir_ + "/wide.onnx");
  for (const auto& [flags, nbits] : std::vector<std::pair<std::string, int>>{{"", 0}, {"--block 512", 0}, {"--bits 8", 0}, {"--block 256", 1}, {"--block 16", 1}}) {
    SCOPED_TRACE(flags);
    const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/wide.onnx") + " " + quote(dir_ + "/q.onnx") + " " + flags + " --force -q");
    ASSERT_EQ(r.code, 0) << r.out;
    const onnx::ModelProto q = load_model(dir_ + "/q.onnx");
    int n = 0;
    for (const auto& node : q.graph().node()) n += node.op_type() == "MatMulNBits";
    EXPECT_EQ(n, nbits);
  }
}

// An ONNX MatMul B is listed [N, K] (blocks along K), the transpose of the stored [K, N]:
// inspect gives both, and dequantize, which writes the listed form, says so.
TEST_F(OnnxReaderTest, TransposedListingIsSaid) {
  save_model(small_model(), dir_ + "/m.onnx");
  const CmdResult i = run(quote(WQUANT_BIN) + " inspect " + quote(dir_ + "/m.onnx") + " --json");
  ASSERT_EQ(i.code, 0) << i.out;
  const nlohmann::json doc = nlohmann::json::parse(i.out.substr(i.out.find('{')));
  size_t transposed = 0;
  for (const auto& t : doc["tensors"]) {
    if (!t.contains("stored_shape")) continue;
    ++transposed;
    EXPECT_EQ(t["stored_shape"][0], t["shape"][1]) << t.dump();
    EXPECT_EQ(t["stored_shape"][1], t["shape"][0]) << t.dump();
  }
  EXPECT_GT(transposed, 0u);
  const CmdResult d = run(quote(WQUANT_BIN) + " dequantize " + quote(dir_ + "/m.onnx") + " " + quote(dir_ + "/d.safetensors"));
  EXPECT_EQ(d.code, 0) << d.out;
  EXPECT_NE(d.out.find(std::to_string(transposed) + " ONNX MatMul weights written as [N, K]"), std::string::npos) << d.out;
}

// OUT names long enough that their temporary names are cut: OUT and OUT.data still get
// temporaries of their own (they shared one, and the run failed after all its work).
TEST_F(OnnxReaderTest, LongOutputNamesKeepTheirOwnTemporaries) {
  save_model(small_model(), dir_ + "/m.onnx");
  const std::string graph = dir_ + "/" + std::string(235, 'a') + ".onnx";
  const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(graph) + " --bits 4 --external-data -q");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(run(quote(WQUANT_BIN) + " inspect " + quote(graph) + " -q").code, 0);
  EXPECT_TRUE(fs::exists(graph + ".data"));
}

// The params file may not be OUT's external data file (written over it before).
TEST_F(OnnxReaderTest, TheParamsFileCannotBeTheDataFile) {
  save_model(small_model(), dir_ + "/m.onnx");
  const std::string graph = dir_ + "/q.onnx";
  const CmdResult r = run(quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/m.onnx") + " " + quote(graph) +
                          " --bits 4 --external-data --params " + quote(graph + ".data"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("where OUT's external data goes"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(graph));
}

// Tensors in node attributes with external data (a Constant's value, a subgraph's
// initializer, as onnx.save_model(..., convert_attribute=True) writes them) are embedded
// in the output: it loads from another folder and does not depend on the input's files,
// which count as inputs (OUT may never be one of them).
TEST_F(OnnxReaderTest, ExternalDataOfAttributeTensorsIsEmbeddedAndProtected) {
  onnx::ModelProto m = small_model();
  auto* g = m.mutable_graph();
  const std::vector<float> c = ramp(32, 3.0f), sub = ramp(8, 1.5f);
  {
    std::ofstream f(dir_ + "/c.bin", std::ios::binary);
    f.write(reinterpret_cast<const char*>(c.data()), std::streamsize(c.size() * 4));
    f.write(reinterpret_cast<const char*>(sub.data()), std::streamsize(sub.size() * 4));
  }
  auto external = [](onnx::TensorProto* t, size_t offset, size_t length) {
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"location", "c.bin"}, {"offset", std::to_string(offset)}, {"length", std::to_string(length)}}) {
      auto* e = t->add_external_data();
      e->set_key(k);
      e->set_value(v);
    }
  };
  auto* constant = g->add_node();
  constant->set_op_type("Constant");
  constant->set_name("const");
  constant->add_output("cval");
  auto* a = constant->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_name("cval");
  a->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
  a->mutable_t()->add_dims(32);
  external(a->mutable_t(), 0, 32 * 4);
  auto* branch = g->add_node();
  branch->set_op_type("If");
  branch->set_name("if");
  branch->add_input("cond");
  branch->add_output("z");
  for (const char* name : {"then_branch", "else_branch"}) {
    auto* b = branch->add_attribute();
    b->set_name(name);
    b->set_type(onnx::AttributeProto::GRAPH);
    auto* sg = b->mutable_g();
    sg->set_name(name);
    auto* t = sg->add_initializer();
    t->set_name(std::string(name) + ".k");
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(8);
    external(t, 32 * 4, 8 * 4);
  }
  fs::create_directories(dir_ + "/out");
  save_model(m, dir_ + "/in.onnx");
  const std::string w = quote(WQUANT_BIN) + " quantize " + quote(dir_ + "/in.onnx") + " ";
  CmdResult r = run(w + quote(dir_ + "/out/q.onnx") + " --bits 4 -q");
  ASSERT_EQ(r.code, 0) << r.out;
  const onnx::ModelProto q = load_model(dir_ + "/out/q.onnx");
  int embedded = 0;
  for (const auto& n : q.graph().node()) {
    for (const auto& at : n.attribute()) {
      std::vector<const onnx::TensorProto*> ts;
      if (at.has_t()) ts.push_back(&at.t());
      if (at.has_g()) for (const auto& t : at.g().initializer()) ts.push_back(&t);
      for (const onnx::TensorProto* t : ts) {
        EXPECT_NE(t->data_location(), onnx::TensorProto::EXTERNAL) << t->name();
        EXPECT_EQ(t->external_data_size(), 0) << t->name();
        const std::vector<float>& want = t->name() == "cval" ? c : sub;
        ASSERT_EQ(t->raw_data().size(), want.size() * 4) << t->name();
        EXPECT_EQ(std::memcmp(t->raw_data().data(), want.data(), want.size() * 4), 0) << t->name();
        ++embedded;
      }
    }
  }
  EXPECT_EQ(embedded, 3);
  // The attribute's data file is an input: never OUT, nor OUT's own data file.
  r = run(w + quote(dir_ + "/c.bin") + " --format onnx --force");
  EXPECT_EQ(r.code, 4) << r.out;
  EXPECT_NE(r.out.find("never overwrites its input"), std::string::npos) << r.out;
  fs::copy_file(dir_ + "/c.bin", dir_ + "/q.onnx.data");
  m.mutable_graph()->mutable_node(m.graph().node_size() - 2)->mutable_attribute(0)->mutable_t()->mutable_external_data(0)->set_value("q.onnx.data");
  save_model(m, dir_ + "/in.onnx");
  r = run(w + quote(dir_ + "/q.onnx") + " --external-data --force");
  EXPECT_EQ(r.code, 4) << r.out;
  // A location outside the folder is refused, naming the node and attribute.
  m.mutable_graph()->mutable_node(m.graph().node_size() - 2)->mutable_attribute(0)->mutable_t()->mutable_external_data(0)->set_value("../c.bin");
  expect_refused(m, "node const, attribute value", "outside the model's folder");
}

}  // namespace
}  // namespace wq::test
