// Readers: safetensors (single and sharded) and GGUF, on the real stories260K files and
// on hand-made broken files. Every broken file must give an Error naming the problem,
// never a crash (this suite also runs under ASan and UBSan).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "io/gguf_format.h"
#include "io/gguf_reader.h"
#include "io/model_reader.h"
#include "io/safetensors_reader.h"
#include "io/scratch_pool.h"
#include "engine/transpose.h"
#include "tests/test_support.h"

namespace wq {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("wq-io-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// A safetensors file from a header and a data blob.
std::vector<uint8_t> safetensors_bytes(const nlohmann::json& header, const std::vector<uint8_t>& data) {
  const std::string h = header.dump();
  const uint64_t n = h.size();
  std::vector<uint8_t> b(8 + h.size() + data.size());
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, h.data(), h.size());
  if (!data.empty()) std::memcpy(b.data() + 8 + h.size(), data.data(), data.size());
  return b;
}

// Two f32 tensors a [2,3] and b [4], and an i64 tensor c [2].
std::vector<uint8_t> good_safetensors() {
  nlohmann::json h;
  h["b"] = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {24, 40}}};
  h["a"] = {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}};
  h["c"] = {{"dtype", "I64"}, {"shape", {2}}, {"data_offsets", {40, 56}}};
  h["__metadata__"] = {{"format", "pt"}};
  std::vector<uint8_t> data(56);
  for (int i = 0; i < 10; ++i) {
    const float v = float(i) * 0.5f;
    std::memcpy(data.data() + 4 * i, &v, 4);
  }
  return safetensors_bytes(h, data);
}

void expect_error(const std::string& path, const std::string& fragment) {
  try {
    auto r = open_model(path);
    // Lazy problems surface when the data is touched.
    for (size_t i = 0; i < r->tensors().size(); ++i) {
      size_t n;
      r->raw(i, &n);
    }
    FAIL() << "no error for " << path << " (expected '" << fragment << "')";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(fragment), std::string::npos) << e.message();
  }
}

TEST(SafetensorsReader, ReadsTensorsInOffsetOrderWithKinds) {
  TempDir d;
  write_bytes(d.file("m.safetensors"), good_safetensors());
  auto r = open_model(d.file("m.safetensors"));
  EXPECT_STREQ(r->format(), "safetensors");
  ASSERT_EQ(r->tensors().size(), 3u);
  EXPECT_EQ(r->tensors()[0].name, "a");
  EXPECT_EQ(r->tensors()[1].name, "b");
  EXPECT_EQ(r->tensors()[2].kind, StoredKind::Other);
  EXPECT_EQ(r->tensors()[0].shape, (std::vector<int64_t>{2, 3}));
  const TensorView v = r->view(1);
  ASSERT_EQ(v.nbytes, 16u);
  EXPECT_EQ(static_cast<const float*>(v.data)[3], 4.5f);
  EXPECT_THROW(r->view(2), Error);  // not a float tensor
  const std::vector<float> a = test::read_f32(*r, 0);
  EXPECT_EQ(a[5], 2.5f);
}

TEST(SafetensorsReader, BrokenFilesGiveErrorsNamingTheProblem) {
  TempDir d;
  const std::vector<uint8_t> good = good_safetensors();
  // Truncated at every length: an error, never a crash.
  for (size_t cut = 0; cut < good.size(); ++cut) {
    const std::string p = d.file("cut.safetensors");
    write_bytes(p, std::vector<uint8_t>(good.begin(), good.begin() + long(cut)));
    EXPECT_THROW(
        {
          auto r = open_safetensors(p);
          for (size_t i = 0; i < r->tensors().size(); ++i) {
            size_t n;
            r->raw(i, &n);
          }
        },
        Error)
        << "cut at " << cut;
  }
  auto with = [&](const std::string& name, nlohmann::json h, size_t data_bytes) {
    const std::string p = d.file(name);
    write_bytes(p, safetensors_bytes(h, std::vector<uint8_t>(data_bytes)));
    return p;
  };
  nlohmann::json h;
  h["a"] = {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}};
  h["b"] = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {16, 32}}};
  expect_error(with("overlap.safetensors", h, 32), "overlap");
  h["b"]["data_offsets"] = {24, 4000};
  h["b"]["shape"] = {994};
  expect_error(with("past.safetensors", h, 40), "past the end");
  h["b"] = {{"dtype", "Q9_9"}, {"shape", {4}}, {"data_offsets", {24, 40}}};
  expect_error(with("dtype.safetensors", h, 40), "unknown dtype Q9_9");
  h["b"] = {{"dtype", "F32"}, {"shape", {4, 4}}, {"data_offsets", {24, 40}}};
  expect_error(with("size.safetensors", h, 40), "bytes of data");
  h["b"] = {{"dtype", "F32"}, {"shape", {uint64_t(1) << 62, uint64_t(1) << 62}}, {"data_offsets", {24, 40}}};
  expect_error(with("absurd.safetensors", h, 40), "overflow");
  h["b"] = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {40, 24}}};
  expect_error(with("reversed.safetensors", h, 40), "is after end");
  // A header length of 2^63.
  std::vector<uint8_t> huge = good;
  const uint64_t n = uint64_t(1) << 63;
  std::memcpy(huge.data(), &n, 8);
  write_bytes(d.file("huge.safetensors"), huge);
  expect_error(d.file("huge.safetensors"), "");
  EXPECT_THROW(open_safetensors(d.file("huge.safetensors")), Error);
  // Not JSON.
  std::vector<uint8_t> garbage = good;
  garbage[8] = '{';
  garbage[9] = '{';
  write_bytes(d.file("json.safetensors"), garbage);
  expect_error(d.file("json.safetensors"), "JSON");
  expect_error(d.file("missing.safetensors"), "cannot open");
}

TEST(SafetensorsReader, ShardedCheckpointThroughItsIndex) {
  TempDir d;
  nlohmann::json h1, h2;
  h1["x"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}};
  h2["y"] = {{"dtype", "F16"}, {"shape", {2, 2}}, {"data_offsets", {0, 8}}};
  write_bytes(d.file("model-00001-of-00002.safetensors"), safetensors_bytes(h1, std::vector<uint8_t>(8)));
  write_bytes(d.file("model-00002-of-00002.safetensors"), safetensors_bytes(h2, std::vector<uint8_t>(8)));
  nlohmann::json idx;
  idx["weight_map"] = {{"x", "model-00001-of-00002.safetensors"}, {"y", "model-00002-of-00002.safetensors"}};
  std::ofstream(d.file("model.safetensors.index.json")) << idx.dump();
  auto r = open_model(d.file("model.safetensors.index.json"));
  ASSERT_EQ(r->tensors().size(), 2u);
  EXPECT_EQ(r->tensors()[0].name, "x");
  EXPECT_EQ(r->tensors()[1].dtype, DType::F16);
  EXPECT_EQ(r->view(1).nbytes, 8u);
  // A directory opens through its index too.
  EXPECT_EQ(open_model(d.file("")).get()->tensors().size(), 2u);
  // A missing shard is named.
  fs::remove(d.file("model-00002-of-00002.safetensors"));
  expect_error(d.file("model.safetensors.index.json"), "shard model-00002-of-00002.safetensors is missing");
}

// Issue 11 item 9: an index that omits a tensor or a shard, or names a tensor that is not
// in its shard, would load another model than the files hold.
TEST(SafetensorsReader, IndexMustListEveryTensorOfEveryShardAndNothingElse) {
  TempDir d;
  nlohmann::json h1, h2;
  h1["x"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}};
  h1["z"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 16}}};
  h2["y"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}};
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  write_bytes(d.file(s1), safetensors_bytes(h1, std::vector<uint8_t>(16)));
  write_bytes(d.file(s2), safetensors_bytes(h2, std::vector<uint8_t>(8)));
  const std::string index = d.file("model.safetensors.index.json");
  auto write_index = [&](const nlohmann::json& wm) {
    nlohmann::json idx;
    idx["weight_map"] = wm;
    std::ofstream(index, std::ios::trunc) << idx.dump();
  };
  write_index({{"x", s1}, {"z", s1}, {"y", s2}});
  EXPECT_EQ(open_model(index)->tensors().size(), 3u);
  write_index({{"x", s1}, {"y", s2}});  // z omitted
  expect_error(index, "z: is in shard " + s1 + " but not in the index");
  write_index({{"x", s1}, {"z", s1}});  // the second shard omitted
  expect_error(index, "shard " + s2 + " (2 of 2) has no tensor in the weight_map");
  write_index({{"x", s1}, {"z", s2}, {"y", s2}});
  expect_error(index, "z: the index puts it in " + s2 + ", but it is in " + s1);
  write_index({{"x", s1}, {"z", s1}, {"y", s2}, {"w", s2}});
  expect_error(index, "w: the index lists it in " + s2 + ", which does not hold it");
}

// Issue 11 items 8/10: JSON keeps the last of two equal keys, silently; a reader must not.
TEST(SafetensorsReader, DuplicateKeysEmptyNamesAndUnknownFormatVersionAreRefused) {
  TempDir d;
  auto raw = [&](const std::string& name, const std::string& header, size_t data) {
    std::vector<uint8_t> b(8 + header.size() + data);
    const uint64_t n = header.size();
    std::memcpy(b.data(), &n, 8);
    std::memcpy(b.data() + 8, header.data(), header.size());
    write_bytes(d.file(name), b);
    return d.file(name);
  };
  const std::string t = R"("dtype":"F32","shape":[2],"data_offsets")";
  expect_error(raw("dup.safetensors", "{\"a\":{" + t + ":[0,8]},\"a\":{" + t + ":[8,16]}}", 16),
               "a: the tensor appears twice");
  expect_error(raw("meta.safetensors",
                   "{\"__metadata__\":{\"k\":\"1\"},\"a\":{" + t + ":[0,8]},\"__metadata__\":{\"k\":\"2\"}}", 8),
               "__metadata__ appears twice");
  expect_error(raw("metakey.safetensors", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"},\"a\":{" + t + ":[0,8]}}", 8),
               "k appears twice");
  expect_error(raw("empty.safetensors", "{\"\":{" + t + ":[0,8]}}", 8), "empty name");
  expect_error(raw("nul.safetensors", "{\"a\\u0000b\":{" + t + ":[0,8]}}", 8), "NUL");
  expect_error(raw("v2.safetensors", "{\"__metadata__\":{\"wquant.format_version\":\"2\"},\"a\":{" + t + ":[0,8]}}", 8),
               "wquant.format_version \"2\" is not supported");
}

// Issue 11 item 16: a zero-element tensor may have no data pointer; dequantize must not
// pass it to memcpy (UBSan: null pointer passed as argument 2).
TEST(SafetensorsReader, ZeroElementTensorsDequantizeToNothing) {
  TempDir d;
  nlohmann::json h;
  h["e"] = {{"dtype", "F32"}, {"shape", {0, 4}}, {"data_offsets", {0, 0}}};
  const std::string p = d.file("zero.safetensors");
  write_bytes(p, safetensors_bytes(h, {}));
  auto r = open_model(p);
  ASSERT_EQ(r->tensors().size(), 1u);
  EXPECT_TRUE(test::read_f32(*r, 0).empty());
}

TEST(SafetensorsReader, Stories260K) {
  WQ_REQUIRE_SHARED(path, "data/models/stories260K/stories260K.safetensors");
  auto r = open_model(path);
  EXPECT_EQ(r->tensors().size(), 47u);
  size_t params = 0;
  for (const TensorInfo& t : r->tensors()) {
    EXPECT_EQ(t.kind, StoredKind::Float) << t.name;
    params += checked_numel(t.name, t.shape);
  }
  EXPECT_EQ(params, 260032u);
  const long wq = r->find("layers.0.attention.wq.weight");
  ASSERT_GE(wq, 0);
  EXPECT_EQ(r->tensors()[size_t(wq)].shape, (std::vector<int64_t>{64, 64}));
}

// GGUF -------------------------------------------------------------------------------

struct GgufBuilder {
  std::vector<uint8_t> b;
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof v);
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
};

// A GGUF v3 file: 3 KVs (u32, string, array of strings), tensors t0 f32 [2, 32] and
// t1 f16 [8].
std::vector<uint8_t> good_gguf() {
  GgufBuilder g;
  g.put<uint32_t>(kGgufMagic);
  g.put<uint32_t>(3);
  g.put<uint64_t>(2);
  g.put<uint64_t>(3);
  g.str("general.architecture");
  g.put<uint32_t>(8);
  g.str("llama");
  g.str("llama.block_count");
  g.put<uint32_t>(4);
  g.put<uint32_t>(5);
  g.str("tokenizer.ggml.tokens");
  g.put<uint32_t>(9);
  g.put<uint32_t>(8);
  g.put<uint64_t>(2);
  g.str("a");
  g.str("bc");
  g.str("t0");
  g.put<uint32_t>(2);
  g.put<uint64_t>(32);
  g.put<uint64_t>(2);
  g.put<uint32_t>(0);
  g.put<uint64_t>(0);
  g.str("t1");
  g.put<uint32_t>(1);
  g.put<uint64_t>(8);
  g.put<uint32_t>(1);
  g.put<uint64_t>(256);
  while (g.b.size() % 32) g.b.push_back(0);
  for (int i = 0; i < 64; ++i) g.put<float>(float(i));
  for (int i = 0; i < 8; ++i) g.put<uint16_t>(0x3c00);  // 1.0 in f16
  while (g.b.size() % 32) g.b.push_back(0);
  return g.b;
}

TEST(GgufReader, ReadsMetadataAndTensors) {
  TempDir d;
  write_bytes(d.file("m.gguf"), good_gguf());
  auto r = open_gguf(d.file("m.gguf"));
  ASSERT_EQ(r->metadata().kvs.size(), 3u);
  EXPECT_EQ(r->metadata().kvs[2].key, "tokenizer.ggml.tokens");
  ASSERT_EQ(r->tensors().size(), 2u);
  EXPECT_EQ(r->tensors()[0].shape, (std::vector<int64_t>{2, 32}));  // ne reversed
  EXPECT_EQ(r->tensors()[1].dtype, DType::F16);
  EXPECT_EQ(static_cast<const float*>(r->view(0).data)[33], 33.0f);
  EXPECT_EQ(test::read_f32(*r, 1)[7], 1.0f);
}

TEST(GgufReader, BrokenFilesGiveErrorsNamingTheProblem) {
  TempDir d;
  const std::vector<uint8_t> good = good_gguf();
  // The last 16 bytes are padding after t1's data: a file cut there is still whole.
  for (size_t cut = 0; cut < good.size() - 16; ++cut) {
    const std::string p = d.file("cut.gguf");
    write_bytes(p, std::vector<uint8_t>(good.begin(), good.begin() + long(cut)));
    EXPECT_THROW(open_model(p), Error) << "cut at " << cut;
  }
  auto patched = [&](const std::string& name, size_t at, const void* v, size_t n) {
    std::vector<uint8_t> b = good;
    std::memcpy(b.data() + at, v, n);
    const std::string p = d.file(name);
    write_bytes(p, b);
    return p;
  };
  const uint64_t huge = uint64_t(1) << 63;
  expect_error(patched("tcount.gguf", 8, &huge, 8), "tensor count");
  expect_error(patched("kvcount.gguf", 16, &huge, 8), "metadata count");
  expect_error(patched("strlen.gguf", 24, &huge, 8), "past the end");
  const uint32_t bad_type = 77;
  expect_error(patched("kvtype.gguf", 24 + 8 + 20, &bad_type, 4), "unknown value type 77");
  // Offsets of the t0 tensor info: after the three KVs.
  const size_t kv_end = 24 + (8 + 20 + 4 + 8 + 5) + (8 + 17 + 4 + 4) + (8 + 21 + 4 + 4 + 8 + 9 + 10);
  const size_t t0 = kv_end + 8 + 2;
  const uint32_t dims9 = 9;
  expect_error(patched("ndims.gguf", t0, &dims9, 4), "9 dimensions");
  const uint32_t ggml_bad = 99;
  expect_error(patched("ggmltype.gguf", t0 + 4 + 16, &ggml_bad, 4), "unknown ggml type 99");
  const uint64_t far = uint64_t(1) << 40;
  expect_error(patched("offset.gguf", t0 + 4 + 16 + 4, &far, 8), "past the end");
  const uint64_t overlapping = 64;  // t1 at 64 overlaps t0's [0, 256)
  const size_t t1 = t0 + 4 + 16 + 4 + 8 + 8 + 2;
  expect_error(patched("overlap.gguf", t1 + 4 + 8 + 4, &overlapping, 8), "overlap");
  const uint64_t misaligned = 260;
  expect_error(patched("align.gguf", t1 + 4 + 8 + 4, &misaligned, 8), "not aligned");
}

// A GGUF v3 file with u32 keys `keys` and f32 [32] tensors named `names`.
std::vector<uint8_t> gguf_with(const std::vector<std::string>& keys, const std::vector<std::string>& names) {
  GgufBuilder g;
  g.put<uint32_t>(kGgufMagic);
  g.put<uint32_t>(3);
  g.put<uint64_t>(names.size());
  g.put<uint64_t>(keys.size());
  for (const std::string& k : keys) {
    g.str(k);
    g.put<uint32_t>(4);
    g.put<uint32_t>(1);
  }
  for (size_t i = 0; i < names.size(); ++i) {
    g.str(names[i]);
    g.put<uint32_t>(1);
    g.put<uint64_t>(32);
    g.put<uint32_t>(0);
    g.put<uint64_t>(i * 128);
  }
  while (g.b.size() % 32) g.b.push_back(0);
  for (size_t i = 0; i < names.size() * 32; ++i) g.put<float>(float(i));
  return g.b;
}

// Issue 11 item 8/10: two tensors (or keys) of one name lose one of them in any reader
// that looks names up; a NUL in a name makes two names one for C code.
TEST(GgufReader, DuplicateNamesKeysNulAndEmptyNamesAreRefused) {
  TempDir d;
  const std::string ok = d.file("ok.gguf");
  write_bytes(ok, gguf_with({"general.a", "general.b"}, {"x", "y"}));
  EXPECT_EQ(open_model(ok)->tensors().size(), 2u);
  write_bytes(d.file("dup.gguf"), gguf_with({"general.a"}, {"x", "x"}));
  expect_error(d.file("dup.gguf"), "x: two tensors have this name");
  write_bytes(d.file("nul.gguf"), gguf_with({"general.a"}, {"x", std::string("x\0y", 3)}));
  expect_error(d.file("nul.gguf"), "NUL");
  write_bytes(d.file("empty.gguf"), gguf_with({"general.a"}, {"x", ""}));
  expect_error(d.file("empty.gguf"), "empty name");
  write_bytes(d.file("dupkey.gguf"), gguf_with({"general.a", "general.a"}, {"x"}));
  expect_error(d.file("dupkey.gguf"), "metadata key general.a appears twice");
}

TEST(GgufReader, Stories260K) {
  WQ_REQUIRE_SHARED(path, "data/models/stories260K/stories260K-f32.gguf");
  auto r = open_gguf(path);
  const GgufKV* arch = r->metadata().find("general.architecture");
  ASSERT_NE(arch, nullptr);
  EXPECT_EQ(std::string(arch->value.begin() + 8, arch->value.end()), "llama");
  size_t params = 0;
  for (const TensorInfo& t : r->tensors()) params += checked_numel(t.name, t.shape);
  EXPECT_EQ(params, 260032u);
  // The GGUF and the safetensors hold the same weights.
  WQ_REQUIRE_SHARED(st_path, "data/models/stories260K/stories260K.safetensors");
  auto st = open_model(st_path);
  const std::vector<float> a = test::read_f32(*r, size_t(r->find("token_embd.weight")));
  const std::vector<float> b = test::read_f32(*st, size_t(st->find("tok_embeddings.weight")));
  EXPECT_EQ(a, b);
}

TEST(ModelReader, UnknownContentIsAnError) {
  TempDir d;
  write_bytes(d.file("x.bin"), {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  expect_error(d.file("x.bin"), "unrecognised content");
  write_bytes(d.file("empty.safetensors"), {});
  expect_error(d.file("empty.safetensors"), "");
}

// transpose_2d moves bits: against the element-by-element definition, for 2- and 4-byte
// elements, at sizes that leave tails in both the 256-wide macro tiles and the 4 x 4 /
// 8 x 8 register tiles, from a misaligned source, with NaN payloads and signed zeros.
TEST(Transpose2d, EqualsTheDefinitionAtEveryTailAndAlignment) {
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return state;
  };
  for (size_t es : {size_t(2), size_t(4)}) {
    for (size_t rows : {1, 3, 4, 7, 8, 9, 17, 255, 256, 257, 300}) {
      for (size_t cols : {1, 2, 5, 8, 15, 16, 33, 256, 261}) {
        std::vector<uint8_t> src(rows * cols * es + 1);
        for (auto& b : src) b = uint8_t(next());
        if (es == 4) {  // a NaN with payload and a negative zero among the random bits
          const uint32_t nan = 0x7FA00001u, nzero = 0x80000000u;
          std::memcpy(&src[1], &nan, 4);
          if (rows * cols > 1) std::memcpy(&src[1 + 4 * (rows * cols - 1)], &nzero, 4);
        }
        const uint8_t* s = src.data() + 1;  // misaligned, as an embedded raw_data can be
        std::vector<uint8_t> want(rows * cols * es), got(rows * cols * es, 0xAB);
        for (size_t r = 0; r < rows; ++r)
          for (size_t c = 0; c < cols; ++c) std::memcpy(&want[(c * rows + r) * es], s + (r * cols + c) * es, es);
        transpose_2d(s, rows, cols, es, got.data());
        ASSERT_EQ(got, want) << "elem " << es << " rows " << rows << " cols " << cols;
      }
    }
  }
}

// transpose_block of a column slice of a wider matrix (a quantizer tile of a MatMul
// weight, engine/row_source.cpp): against the definition, for slices up to the narrow
// walk's 1 KiB a row (prefetching a step of rows ahead) and wider, with row counts around
// the step, from a misaligned source.
TEST(TransposeBlock, ColumnSlicesEqualTheDefinition) {
  uint64_t state = 0x2545F4914F6CDD1Dull;
  auto next = [&] {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return state;
  };
  for (size_t es : {size_t(2), size_t(4)}) {
    for (size_t rows : {1, 127, 128, 129, 255, 256, 300, 513}) {
      for (size_t cols : {1, 16, 33, 256, 300, 512, 520}) {
        const size_t ld = cols + 37, c0 = 5;  // the slice [c0, c0 + cols) of rows ld wide
        std::vector<uint8_t> src((rows * ld + c0) * es + 1);
        for (auto& b : src) b = uint8_t(next());
        const uint8_t* s = src.data() + 1;
        std::vector<uint8_t> want(rows * cols * es), got(rows * cols * es, 0xAB);
        for (size_t r = 0; r < rows; ++r)
          for (size_t c = 0; c < cols; ++c) std::memcpy(&want[(c * rows + r) * es], s + (r * ld + c0 + c) * es, es);
        transpose_block(s + c0 * es, ld, rows, cols, es, got.data());
        ASSERT_EQ(got, want) << "elem " << es << " rows " << rows << " cols " << cols;
      }
    }
  }
}

TEST(ScratchPool, BuffersAreWritableAlignedAndReusedWithinTheBudget) {
  for (size_t n : {size_t(0), size_t(1), size_t(4096), size_t(3) << 20}) {
    ScratchBytes b = ScratchBytes::make(n);
    EXPECT_EQ(b.size, n);
    if (n == 0) continue;
    ASSERT_NE(b.data(), nullptr);
    std::memset(b.data(), 0x5A, n);
    EXPECT_EQ(b.data()[n - 1], 0x5A);
    if (n >= (size_t(2) << 20)) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % (size_t(2) << 20), 0u);
    }
  }
  const size_t MiB = size_t(1) << 20;
  ScratchPool pool(10 * MiB);
  ScratchBytes a = pool.take(4 * MiB);
  const uint8_t* pa = a.data();
  pool.give(std::move(a));
  EXPECT_EQ(pool.kept_bytes(), 4 * MiB);
  ScratchBytes again = pool.take(3 * MiB);  // fits: the same memory comes back
  EXPECT_EQ(again.data(), pa);
  EXPECT_EQ(again.size, 3 * MiB);
  EXPECT_EQ(pool.kept_bytes(), 0u);
  pool.give(std::move(again));
  ScratchBytes small = pool.take(64 * 1024);  // far smaller: not pinned to a 4 MiB buffer
  EXPECT_NE(small.data(), pa);
  ScratchBytes big = pool.take(6 * MiB), big2 = pool.take(6 * MiB);
  const uint8_t* pb2 = big2.data();
  pool.give(std::move(big));
  pool.give(std::move(big2));  // 4 + 6 + 6 MiB: over the budget, the smallest go first
  EXPECT_EQ(pool.kept_bytes(), 6 * MiB);
  ScratchBytes kept = pool.take(5 * MiB), fresh = pool.take(5 * MiB);
  EXPECT_EQ(kept.data(), pb2);        // a 6 MiB buffer came back (of two equal, the later kept) ...
  EXPECT_EQ(pool.kept_bytes(), 0u);  // ... and it was the only one kept
  EXPECT_NE(fresh.data(), kept.data());
  pool.give(ScratchBytes::make(11 * MiB));  // larger than the whole budget: not kept
  EXPECT_LE(pool.kept_bytes(), 10 * MiB);
}

}  // namespace
}  // namespace wq
