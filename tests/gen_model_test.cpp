// The synthetic model generator (bench/synthetic_model.h): its GGUF must be one that
// llama.cpp runs. Checked through wquant's own GGUF reader: 1-D norms in f32 whatever the
// matrices' dtype (llama.cpp's CPU backend asserts src1->type == GGML_TYPE_F32 for the norm
// multiply), and a llama SentencePiece vocabulary with the 256 byte tokens its byte
// fallback needs, laid out as in stories260K-f32.gguf (llama.cpp's own converter output).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "bench/synthetic_model.h"
#include "io/gguf_format.h"
#include "io/gguf_reader.h"
#include "io/model_reader.h"
#include "tests/test_support.h"

namespace wq {
namespace {

namespace fs = std::filesystem;

// Decoders for the value bytes of a GGUF key (after its type field).
struct Cursor {
  const std::vector<uint8_t>& b;
  size_t pos = 0;
  template <typename T>
  T get() {
    T v{};
    EXPECT_LE(pos + sizeof(T), b.size());
    if (pos + sizeof(T) <= b.size()) std::memcpy(&v, b.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str() {
    const uint64_t n = get<uint64_t>();
    std::string s;
    if (pos + n <= b.size()) s.assign(reinterpret_cast<const char*>(b.data() + pos), n);
    pos += n;
    return s;
  }
};

const GgufKV& kv(const GgufMetadata& m, const std::string& key) {
  const GgufKV* p = m.find(key);
  static const GgufKV none;
  EXPECT_NE(p, nullptr) << "no key " << key;
  return p ? *p : none;
}

std::string kv_string(const GgufMetadata& m, const std::string& key) {
  const GgufKV& k = kv(m, key);
  EXPECT_EQ(k.type, uint32_t(GgufValueType::String)) << key;
  return Cursor{k.value}.str();
}

uint32_t kv_u32(const GgufMetadata& m, const std::string& key) {
  const GgufKV& k = kv(m, key);
  EXPECT_EQ(k.type, uint32_t(GgufValueType::U32)) << key;
  return Cursor{k.value}.get<uint32_t>();
}

// An array key: its element type and raw cursor positioned at the first element.
Cursor kv_array(const GgufMetadata& m, const std::string& key, uint32_t elem_type, uint64_t* n) {
  const GgufKV& k = kv(m, key);
  EXPECT_EQ(k.type, uint32_t(GgufValueType::Array)) << key;
  Cursor c{k.value};
  EXPECT_EQ(c.get<uint32_t>(), elem_type) << key;
  *n = c.get<uint64_t>();
  return c;
}

// A 2-layer model of the real shape classes, small enough for a unit test.
SyntheticConfig tiny(DType dt) {
  SyntheticConfig c;
  c.layers = 2;
  c.dim = 64;
  c.ffn = 128;
  c.heads = 4;
  c.kv_heads = 2;
  c.vocab = 600;
  c.context = 128;
  c.dtype = dt;
  return c;
}

class GenModel : public ::testing::TestWithParam<DType> {
 protected:
  test::ScratchDir scratch_{"wquant-gen"};
  const std::string& dir_ = scratch_.path();
};

TEST_P(GenModel, GgufNormsAreF32AndMatricesHaveTheAskedDtype) {
  const DType dt = GetParam();
  const std::string out = dir_ + "/m.gguf";
  write_synthetic_model(out, OutputFormat::Gguf, tiny(dt));
  const std::unique_ptr<GgufReader> r = open_gguf(out);
  const uint32_t want = dt == DType::F32 ? kGgmlF32 : dt == DType::F16 ? kGgmlF16 : kGgmlBF16;
  size_t norms = 0, matrices = 0;
  for (size_t i = 0; i < r->tensors().size(); ++i) {
    const TensorInfo& t = r->tensors()[i];
    if (t.shape.size() == 1) {
      ++norms;
      EXPECT_NE(t.name.find("norm"), std::string::npos) << t.name;
      EXPECT_EQ(r->ggml_type(i), uint32_t(kGgmlF32)) << t.name;
      EXPECT_EQ(t.dtype, DType::F32) << t.name;
    } else {
      ++matrices;
      EXPECT_EQ(r->ggml_type(i), want) << t.name;
    }
  }
  EXPECT_EQ(norms, 2u * 2 + 1);  // attn_norm, ffn_norm per layer, output_norm
  EXPECT_EQ(matrices, 2u * 7 + 2);
  EXPECT_EQ(kv_u32(r->metadata(), "general.file_type"), dt == DType::F32 ? 0u : dt == DType::F16 ? 1u : 32u);
}

TEST_P(GenModel, SafetensorsKeepsEveryTensorInTheAskedDtype) {
  const DType dt = GetParam();
  const std::string out = dir_ + "/m.safetensors";
  write_synthetic_model(out, OutputFormat::Safetensors, tiny(dt));
  const std::unique_ptr<ModelReader> r = open_model(out);
  for (const TensorInfo& t : r->tensors()) EXPECT_EQ(t.dtype, dt) << t.name;
}

// A Hugging Face style sharded checkpoint: numbered shards and an index, read back
// through the index with every tensor (HF names, the asked dtype) byte-identical to the
// single-file model of the same config.
TEST_P(GenModel, ShardedSafetensorsReadBackThroughTheIndex) {
  const DType dt = GetParam();
  SyntheticConfig c = tiny(dt);
  c.shard_bytes = 40000;  // several shards of this tiny model; the embedding alone is larger
  const std::string index = dir_ + "/model.safetensors.index.json", single = dir_ + "/single.safetensors";
  const uint64_t params = write_synthetic_model(index, OutputFormat::Safetensors, c);
  EXPECT_EQ(write_synthetic_model(single, OutputFormat::Safetensors, c), params);
  std::vector<std::string> shards;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("model-", 0) == 0) shards.push_back(n);
  }
  std::sort(shards.begin(), shards.end());
  ASSERT_GE(shards.size(), 3u);
  for (size_t k = 0; k < shards.size(); ++k) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    EXPECT_EQ(shards[k], want);
  }
  const std::unique_ptr<ModelReader> sharded = open_model(index), one = open_model(single);
  ASSERT_EQ(sharded->tensors().size(), one->tensors().size());
  uint64_t total = 0;
  for (size_t i = 0; i < one->tensors().size(); ++i) {
    const TensorInfo& t = one->tensors()[i];
    EXPECT_EQ(t.name.rfind("model.", 0) == 0 || t.name == "lm_head.weight", true) << t.name;
    const long found = sharded->find(t.name);
    ASSERT_GE(found, 0) << t.name;
    const size_t j = size_t(found);
    EXPECT_EQ(sharded->tensors()[j].dtype, dt) << t.name;
    size_t na = 0, nb = 0;
    const uint8_t* a = sharded->raw(j, &na);
    const uint8_t* b = one->raw(i, &nb);
    ASSERT_EQ(na, nb) << t.name;
    EXPECT_EQ(std::memcmp(a, b, na), 0) << t.name;
    total += na;
  }
  std::ifstream f(index);
  const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  EXPECT_NE(text.find("\"total_size\": " + std::to_string(total)), std::string::npos) << text.substr(0, 200);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GenModel, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(dtype_name(i.param)); });

TEST(GenModelVocab, LlamaSentencePieceVocabularyWithByteTokens) {
  SyntheticConfig c = tiny(DType::F32);
  c.layers = 1;
  c.vocab = 1000;
  const test::ScratchDir dir("wquant-gen");
  const std::string out = dir.path() + "/v.gguf";
  write_synthetic_model(out, OutputFormat::Gguf, c);
  const std::unique_ptr<GgufReader> r = open_gguf(out);
  const GgufMetadata& m = r->metadata();
  EXPECT_EQ(kv_string(m, "general.architecture"), "llama");
  EXPECT_EQ(kv_string(m, "tokenizer.ggml.model"), "llama");
  EXPECT_EQ(kv_u32(m, "tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(kv_u32(m, "tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(kv_u32(m, "tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_EQ(kv_u32(m, "llama.embedding_length"), 64u);
  EXPECT_EQ(kv_u32(m, "llama.attention.head_count_kv"), 2u);

  uint64_t n = 0;
  Cursor tok = kv_array(m, "tokenizer.ggml.tokens", uint32_t(GgufValueType::String), &n);
  ASSERT_EQ(n, 1000u);
  std::vector<std::string> tokens;
  for (uint64_t i = 0; i < n; ++i) tokens.push_back(tok.str());
  Cursor ty = kv_array(m, "tokenizer.ggml.token_type", uint32_t(GgufValueType::I32), &n);
  ASSERT_EQ(n, 1000u);
  std::vector<int32_t> types;
  for (uint64_t i = 0; i < n; ++i) types.push_back(ty.get<int32_t>());
  Cursor sc = kv_array(m, "tokenizer.ggml.scores", uint32_t(GgufValueType::F32), &n);
  ASSERT_EQ(n, 1000u);
  std::vector<float> scores;
  for (uint64_t i = 0; i < n; ++i) scores.push_back(sc.get<float>());

  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(types[0], 2);  // UNKNOWN
  EXPECT_EQ(types[1], 3);  // CONTROL
  EXPECT_EQ(types[2], 3);
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    EXPECT_EQ(tokens[size_t(3 + b)], hex);
    EXPECT_EQ(types[size_t(3 + b)], 6) << hex;  // BYTE
  }
  const std::string space = "\xe2\x96\x81";
  size_t with_space = 0;
  for (size_t i = 259; i < tokens.size(); ++i) {
    EXPECT_EQ(types[i], 1) << tokens[i];  // NORMAL
    EXPECT_FALSE(tokens[i].empty());
    with_space += tokens[i].rfind(space, 0) == 0;
    if (i > 259) {
      EXPECT_LT(scores[i], scores[i - 1]) << "scores fall with the piece's rank";
    }
  }
  EXPECT_GT(with_space, 100u);
  // Every lowercase letter and its spaced form is a piece, so plain text needs no bytes.
  const std::set<std::string> all(tokens.begin(), tokens.end());
  EXPECT_EQ(all.size(), tokens.size()) << "pieces must be distinct";
  for (char ch = 'a'; ch <= 'z'; ++ch) {
    EXPECT_TRUE(all.count(std::string(1, ch)) && all.count(space + std::string(1, ch))) << ch;
  }
}

}  // namespace
}  // namespace wq
