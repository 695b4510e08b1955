// Importance matrices: llama-imatrix's files read as llama-quantize reads them (counts
// below are what llama-quantize c392e5094 printed for the same files), the GGUF form, and
// hostile files refused with one line naming the file and the entry.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "engine/plan.h"
#include "io/gguf_format.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "io/imatrix.h"
#include "tests/test_support.h"

namespace wq {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("wq-imatrix-" + std::to_string(::getpid()) + "-" + name)).string();
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::string error_of(const std::string& path) {
  try {
    read_imatrix(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// A .dat as llama-imatrix writes it.
struct Dat {
  std::vector<uint8_t> b;
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof v);
  }
  void entry(const std::string& name, int32_t ncall, const std::vector<float>& v) {
    put<int32_t>(int32_t(name.size()));
    b.insert(b.end(), name.begin(), name.end());
    put<int32_t>(ncall);
    put<int32_t>(int32_t(v.size()));
    for (float x : v) put<float>(x);
  }
  void tail(int32_t chunks, const std::string& dataset) {
    put<int32_t>(chunks);
    put<int32_t>(int32_t(dataset.size()));
    b.insert(b.end(), dataset.begin(), dataset.end());
  }
};

TEST(Imatrix, LlamaImatrixFilesReadAsLlamaQuantizeReadsThem) {
  // "loaded N importance matrix entries from imatrix-F.dat computed on 6 chunks" and
  // "imatrix dataset='imatrix_corpus.txt'", llama-quantize's own report of these files.
  const std::pair<const char*, size_t> files[] = {{"imatrix-192.dat", 35}, {"imatrix-256.dat", 56},
                                                  {"imatrix-moe.dat", 32}, {"imatrix-stories.dat", 35}};
  for (const auto& [file, entries] : files) {
    const Imatrix m = read_imatrix(test::test_data_dir() + "/" + file);
    EXPECT_EQ(m.entries.size(), entries) << file;
    EXPECT_EQ(m.chunks, 6) << file;
    ASSERT_EQ(m.datasets.size(), 1u) << file;
    EXPECT_EQ(m.datasets[0], "imatrix_corpus.txt") << file;
  }
  // MoE experts: one row of ne0 values per expert (8 x 256 for ffn_down_exps' 256 inputs).
  const Imatrix moe = read_imatrix(test::test_data_dir() + "/imatrix-moe.dat");
  ASSERT_TRUE(moe.entries.count("blk.0.ffn_down_exps.weight"));
  EXPECT_EQ(moe.entries.at("blk.0.ffn_down_exps.weight").size(), 8u * 256u);
  // --exclude-weights ffn_down --exclude-weights attn_q left llama-quantize 40 of 56.
  Imatrix m = read_imatrix(test::test_data_dir() + "/imatrix-256.dat");
  filter_imatrix(m, {}, {"ffn_down", "attn_q"});
  EXPECT_EQ(m.entries.size(), 40u);
  filter_imatrix(m, {"attn_v", "ffn_up"}, {});
  EXPECT_EQ(m.entries.size(), 16u);  // 8 layers x 2
}

TEST(Imatrix, DatValuesAreDividedByTheCallCount) {
  Dat d;
  d.put<int32_t>(2);
  d.entry("a.weight", 4, {2.0f, 6.0f});
  d.entry("b.weight", 0, {3.0f});  // no calls: kept as they are
  d.tail(3, "text.txt");
  const std::string p = temp_path("calls.dat");
  write_bytes(p, d.b);
  const Imatrix m = read_imatrix(p);
  EXPECT_EQ(m.entries.at("a.weight"), (std::vector<float>{0.5f, 1.5f}));
  EXPECT_EQ(m.entries.at("b.weight"), (std::vector<float>{3.0f}));
  EXPECT_EQ(m.chunks, 3);
  const std::vector<GgufKV> keys = imatrix_keys(m, std::string(200, 'x'));
  ASSERT_EQ(keys.size(), 4u);
  EXPECT_EQ(keys[0].key, "quantize.imatrix.file");
  EXPECT_EQ(keys[0].value.size(), 8u + 127u);  // llama-quantize keeps 127 bytes of the path
  EXPECT_EQ(keys[1].key, "quantize.imatrix.dataset");
  EXPECT_EQ(keys[2].key, "quantize.imatrix.entries_count");
  EXPECT_EQ(keys[2].type, uint32_t(GgufValueType::I32));
  EXPECT_EQ(keys[3].key, "quantize.imatrix.chunks_count");
  fs::remove(p);
}

TEST(Imatrix, HostileDatFilesAreRefusedNamingFileAndEntry) {
  Dat good;
  good.put<int32_t>(1);
  good.entry("blk.0.attn_q.weight", 2, {1.0f, 2.0f, 3.0f});
  good.tail(1, "d.txt");
  const std::string p = temp_path("bad.dat");
  // Every truncation is an error, never a crash (the 4-byte prefix with no tail is the
  // only other valid file: entries without the chunk/dataset tail).
  const size_t no_tail = good.b.size() - 4 - 4 - 5;
  for (size_t n = 0; n < good.b.size(); ++n) {
    if (n == no_tail) continue;
    write_bytes(p, std::vector<uint8_t>(good.b.begin(), good.b.begin() + long(n)));
    const std::string e = error_of(p);
    EXPECT_NE(e.find(p), std::string::npos) << n << ": " << e;
    EXPECT_NE(e, "no error") << n;
  }
  auto dat_error = [&](const Dat& d) {
    write_bytes(p, d.b);
    return error_of(p);
  };
  Dat none;
  none.put<int32_t>(0);
  EXPECT_NE(dat_error(none).find("no entries"), std::string::npos);
  Dat nan;
  nan.put<int32_t>(1);
  nan.entry("blk.1.ffn_up.weight", 1, {1.0f, std::nanf("")});
  EXPECT_NE(dat_error(nan).find("entry blk.1.ffn_up.weight: value 1 is not finite"), std::string::npos) << dat_error(nan);
  Dat twice;
  twice.put<int32_t>(2);
  twice.entry("x.weight", 1, {1.0f});
  twice.entry("x.weight", 1, {1.0f});
  EXPECT_NE(dat_error(twice).find("entry x.weight: appears twice"), std::string::npos);
  Dat huge;
  huge.put<int32_t>(1);
  huge.put<int32_t>(8);
  huge.b.insert(huge.b.end(), {'y', '.', 'w', 'e', 'i', 'g', 'h', 't'});
  huge.put<int32_t>(1);
  huge.put<int32_t>(0x7fffffff);
  EXPECT_NE(dat_error(huge).find("entry y.weight: value count 2147483647 is out of range"), std::string::npos);
  Dat name;
  name.put<int32_t>(1);
  name.put<int32_t>(-5);
  EXPECT_NE(dat_error(name).find("entry 1 of 1: name length -5"), std::string::npos);
  Dat empty;  // (llama-quantize files it under "", which no tensor is named)
  empty.put<int32_t>(1);
  empty.entry("", 1, {1.0f});
  EXPECT_NE(dat_error(empty).find("entry 1 of 1: name length 0"), std::string::npos) << dat_error(empty);
  Dat nul;  // a name that a NUL ends at once (read as a C string: "") is empty too
  nul.put<int32_t>(1);
  nul.entry(std::string("\0abc", 4), 1, {1.0f});
  EXPECT_NE(dat_error(nul).find("entry 1 of 1: the name is empty (its first byte is a NUL)"), std::string::npos) << dat_error(nul);
  Dat garbage = good;
  garbage.put<int32_t>(7);
  EXPECT_NE(dat_error(garbage).find("bytes after the dataset name"), std::string::npos);
  EXPECT_NE(error_of(temp_path("absent.dat")).find("cannot open"), std::string::npos);
  fs::remove(p);
}

// A GGUF imatrix (<name>.in_sum2 + <name>.counts, imatrix.* keys), written here through
// wquant's GGUF writer from the sums and call counts of a .dat.
void write_gguf_imatrix(const std::string& path, const std::vector<std::pair<std::string, std::vector<float>>>& sums,
                        const std::vector<std::vector<float>>& counts, bool with_counts = true, bool with_keys = true) {
  GgufMetadata meta;
  meta.kvs.push_back(gguf_kv_string("general.type", "imatrix"));
  if (with_keys) {
    meta.kvs.push_back(gguf_kv_string_array("imatrix.datasets", {"corpus.txt"}));
    meta.kvs.push_back(gguf_kv_u32("imatrix.chunk_count", 6));
    meta.kvs.push_back(gguf_kv_u32("imatrix.chunk_size", 512));
  }
  std::vector<TensorInfo> infos;
  std::vector<std::vector<float>> data;
  for (size_t i = 0; i < sums.size(); ++i) {
    const int64_t rows = int64_t(counts[i].size());
    const int64_t ne0 = int64_t(sums[i].second.size()) / rows;
    infos.push_back({sums[i].first + ".in_sum2", rows == 1 ? std::vector<int64_t>{ne0} : std::vector<int64_t>{rows, ne0},
                     StoredKind::Float, DType::F32, "F32", sums[i].second.size() * 4});
    data.push_back(sums[i].second);
    if (with_counts) {
      infos.push_back({sums[i].first + ".counts", {rows}, StoredKind::Float, DType::F32, "F32", counts[i].size() * 4});
      data.push_back(counts[i]);
    }
  }
  std::vector<TensorPlan> plan;
  for (size_t i = 0; i < infos.size(); ++i) plan.push_back(test::keep_float_entry(i, infos[i]));
  auto w = make_gguf_writer(path, plan, infos, meta, std::vector<uint32_t>(infos.size(), 0));
  for (size_t i = 0; i < plan.size(); ++i) {
    TensorResult r;
    r.plan = &plan[i];
    r.bytes.resize(data[i].size() * 4);
    std::memcpy(r.bytes.data(), data[i].data(), r.bytes.size());
    w->write(r);
  }
  w->commit();
}

TEST(Imatrix, GgufImatrixDividesEachMatrixByItsCount) {
  const std::string p = temp_path("im.gguf");
  // Two experts of 2 values: the second never got input (count 0): its columns weigh 1.
  write_gguf_imatrix(p, {{"blk.0.ffn_up_exps.weight", {2, 4, 6, 8}}, {"blk.0.attn_q.weight", {9, 3}}}, {{2, 0}, {3}});
  const Imatrix m = read_imatrix(p);
  EXPECT_EQ(m.entries.at("blk.0.ffn_up_exps.weight"), (std::vector<float>{1, 2, 1, 1}));
  EXPECT_EQ(m.entries.at("blk.0.attn_q.weight"), (std::vector<float>{3, 1}));
  EXPECT_EQ(m.chunks, 6);
  EXPECT_EQ(m.datasets, std::vector<std::string>{"corpus.txt"});
  // The same matrices from a .dat with the same sums and call counts read the same.
  Dat d;
  d.put<int32_t>(1);
  d.entry("blk.0.attn_q.weight", 3, {9, 3});
  d.tail(6, "corpus.txt");
  const std::string dp = temp_path("im.dat");
  write_bytes(dp, d.b);
  EXPECT_EQ(read_imatrix(dp).entries.at("blk.0.attn_q.weight"), m.entries.at("blk.0.attn_q.weight"));

  write_gguf_imatrix(p, {{"blk.0.attn_q.weight", {9, 3}}}, {{3}}, /*with_counts=*/false);
  EXPECT_NE(error_of(p).find("entry blk.0.attn_q.weight: in_sum2 without counts"), std::string::npos) << error_of(p);
  write_gguf_imatrix(p, {{"blk.0.attn_q.weight", {9, 3}}}, {{3}}, true, /*with_keys=*/false);
  EXPECT_NE(error_of(p).find("imatrix metadata imatrix.datasets is missing"), std::string::npos) << error_of(p);
  write_gguf_imatrix(p, {{"blk.0.attn_q.weight", {9, INFINITY}}}, {{3}});
  EXPECT_NE(error_of(p).find("entry blk.0.attn_q.weight: value 1 is not finite"), std::string::npos) << error_of(p);
  write_gguf_imatrix(p, {{"", {9, 3}}}, {{3}});  // tensors ".in_sum2" and ".counts"
  EXPECT_NE(error_of(p).find("the entry has no name"), std::string::npos) << error_of(p);
  fs::remove(p);
  fs::remove(dp);
}

TEST(Imatrix, PlanUsesEntriesAsLlamaQuantizeDoes) {
  TensorInfo q{"blk.0.attn_q.weight", {64, 64}, StoredKind::Float, DType::F32, "F32", 64 * 64 * 4};
  TensorInfo emb{"token_embd.weight", {32, 64}, StoredKind::Float, DType::F32, "F32", 32 * 64 * 4};
  PlanOptions po;
  po.format = OutputFormat::Gguf;
  po.ggml = GgmlBlock::Q8_0;
  std::map<std::string, std::vector<float>> im = {{"blk.0.attn_q.weight", std::vector<float>(64, 1.0f)},
                                                  {"token_embd.weight", std::vector<float>(3, 1.0f)}};
  po.imatrix = &im;
  const std::vector<TensorPlan> plan = make_plan({q, emb}, po);
  ASSERT_EQ(plan.size(), 2u);
  // token_embd.weight's entry of the wrong size is ignored, as llama-quantize ignores it.
  EXPECT_EQ(plan[0].name, "token_embd.weight");
  EXPECT_FALSE(plan[0].imatrix);
  ASSERT_TRUE(plan[1].imatrix);
  EXPECT_EQ(plan[1].imatrix->size(), 64u);
  // Any other tensor's is an error naming it.
  im["blk.0.attn_q.weight"].resize(32);
  try {
    make_plan({q, emb}, po);
    FAIL() << "a 32-value entry for a 64-wide tensor was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q.weight: the imatrix has 32 values"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace wq
