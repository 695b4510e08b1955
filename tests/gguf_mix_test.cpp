// llama-quantize's mixes: per-tensor types, tensor order and whole files, against what
// llama-quantize (llama.cpp c392e5094) wrote for the fixtures of tests/gguf_fixture.h and
// for stories260K (tests/data/llama_quantize_mix_digests.json, which names the commands),
// and the shards of its --keep-split (tests/data/llama_quantize_split_digests.json).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/gguf_mix.h"
#include "engine/pipeline.h"
#include "engine/plan.h"
#include "engine/scheduler.h"
#include "io/gguf_hparams.h"
#include "io/gguf_output.h"
#include "io/gguf_reader.h"
#include "io/gguf_split_reader.h"
#include "io/gguf_format.h"
#include "io/gguf_writer.h"
#include "io/imatrix.h"
#include "kernels/ggml_types.h"
#include "tests/gguf_fixture.h"
#include "io/sha256.h"
#include "tests/test_support.h"

namespace wq {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("wq-mix-" + std::to_string(::getpid()) + "-" + name)).string();
}

// llama-quantize's `IN OUT MIX` (Q8_0: the already-quantized fixture; F16: the half one;
// the whole-file test checks that these are byte for byte what llama-quantize wrote).
void quantize_as(const std::string& in, const std::string& out, const char* mix) {
  auto src = join_gguf_splits(open_gguf(in), in);
  const MixModel model = gguf_mix_model(src->metadata(), in);
  MixOptions o;
  o.mix = *gguf_mix_named(mix);
  PlanOptions po;
  po.format = OutputFormat::Gguf;
  po.gguf_mix = &o;
  po.gguf_model = &model;
  const std::vector<TensorPlan> plan = make_plan(src->tensors(), po);
  GgufOutputKeys keys;
  keys.file_type = o.mix.llama_ftype;
  auto w = make_gguf_writer(out, plan, *src, keys);
  Scheduler s(1);
  s.run([&] { run_pipeline(plan, src->tensors(), *src, *w, PipelineOptions{}); });
  w->commit();
}

// `in` without its general.file_type key (a model llama.cpp's loader then guesses the
// file type of): the key's bytes cut from the header, the tensor data moved to the next
// 32-byte boundary after it (its offsets are relative to that start, so they stand). The
// header's layout comes from wquant's reader: each key as it is encoded, each tensor's
// name and dimension count.
void drop_file_type_key(const std::string& in, const std::string& out) {
  const std::unique_ptr<GgufReader> r = open_gguf(in);
  size_t at = 24, cut_from = 0, cut_to = 0;  // after the magic, version, tensor and key counts
  for (const GgufKV& kv : r->metadata().kvs) {
    const size_t size = 8 + kv.key.size() + 4 + kv.value.size();
    if (kv.key == "general.file_type") cut_from = at, cut_to = at + size;
    at += size;
  }
  ASSERT_GT(cut_to, cut_from) << in << " has no general.file_type";
  for (const TensorInfo& t : r->tensors()) at += 8 + t.name.size() + 4 + 8 * t.shape.size() + 4 + 8;
  std::ifstream f(in, std::ios::binary);
  const std::string b((std::istreambuf_iterator<char>(f)), {});
  std::string h = b.substr(0, cut_from) + b.substr(cut_to, at - cut_to);
  const uint64_t n_kv = r->metadata().kvs.size() - 1;
  std::memcpy(h.data() + 16, &n_kv, 8);
  h.append((32 - h.size() % 32) % 32, '\0');
  std::ofstream(out, std::ios::binary) << h << b.substr((at + 31) / 32 * 32);
}

// The fixtures, written once per process (removed at exit); "" when stories260K is absent.
class Fixtures : public ::testing::Environment {
 public:
  static std::string path(const std::string& which) {
    static std::map<std::string, std::string> paths;
    auto it = paths.find(which);
    if (it != paths.end()) return it->second;
    const std::string stories = test::shared_file("data/models/stories260K/stories260K-f32.gguf");
    std::string p;
    if (!stories.empty()) {
      if (which == "stories") {
        p = stories;
      } else if (which == "split" || which == "split0") {
        // split0: a first shard of keys alone (gguf-split --no-tensor-first-split).
        const std::string prefix = temp_path("fx-" + which);
        const int n = which == "split" ? 3 : 4;
        test::write_gguf_fixture_split(stories, prefix, 20, which == "split0" ? 0 : -1);
        for (int k = 0; k < n; ++k) written().push_back(gguf_split_path(prefix, k, n));
        p = gguf_split_path(prefix, 0, n);
      } else if (which == "192-Q8_0" || which == "192-F16") {
        p = temp_path("fx-" + which + ".gguf");
        quantize_as(path("192"), p, which == "192-F16" ? "F16" : "Q8_0");
        written().push_back(p);
      } else if (which == "192-Q8_0-guess") {
        p = temp_path("fx-192-Q8_0-guess.gguf");
        drop_file_type_key(path("192-Q8_0"), p);
        written().push_back(p);
      } else {
        p = temp_path("fx-" + which + ".gguf");
        if (which == "192") test::write_gguf_fixture(stories, p);
        else test::write_gguf_wide_fixture(stories, p, which == "256" ? test::dense_fixture() : test::moe_fixture());
        written().push_back(p);
      }
    }
    return paths[which] = p;
  }
  void TearDown() override {
    for (const std::string& p : written()) fs::remove(p);
  }

 private:
  static std::vector<std::string>& written() {
    static std::vector<std::string> w;
    return w;
  }
};
const auto* const kFixtures = ::testing::AddGlobalTestEnvironment(new Fixtures);

const json& oracle() {
  static const json doc = [] {
    std::ifstream f(test::test_data_dir() + "/llama_quantize_mix_digests.json");
    return f ? json::parse(f) : json();
  }();
  return doc;
}

// llama-quantize's options of a run as MixOptions; false for one this test does not model.
bool mix_options(const json& run, MixOptions* o) {
  const auto mix = gguf_mix_named(run["mix"].get<std::string>());
  if (!mix) return false;
  o->mix = *mix;
  const std::vector<std::string> opts = run["options"].get<std::vector<std::string>>();
  for (size_t i = 0; i < opts.size(); ++i) {
    const std::string& a = opts[i];
    if (a == "--pure") o->pure = true;
    else if (a == "--leave-output-tensor") o->leave_output = true;
    else if (a == "--output-tensor-type") o->output_type = ggml_type_named(opts.at(++i));
    else if (a == "--token-embedding-type") o->token_embd_type = ggml_type_named(opts.at(++i));
    else if (a == "--imatrix") o->has_imatrix = (++i, true);
    else if (a == "--allow-requantize") continue;  // whether a quantized source may change: not a type choice
    else if (a == "--include-weights" || a == "--exclude-weights") ++i;  // which entries apply: data, not types
    else return false;
  }
  return true;
}

bool uses_imatrix(const json& run) {
  for (const json& a : run["options"]) {
    if (a == "--imatrix") return true;
  }
  return false;
}

std::string run_name(const json& run) {
  std::string s = run["fixture"].get<std::string>() + " " + run["mix"].get<std::string>();
  for (const json& a : run["options"]) s += " " + a.get<std::string>();
  return s;
}

struct Model {
  std::unique_ptr<GgufReader> reader;
  MixModel hparams;
};

Model open_fixture(const std::string& which) {
  Model m;
  const std::string p = Fixtures::path(which);
  m.reader = join_gguf_splits(open_gguf(p), p);
  m.hparams = gguf_mix_model(m.reader->metadata(), p);
  return m;
}

// Per tensor in llama-quantize's order: name and the type it ends up in.
std::vector<std::pair<std::string, std::string>> our_types(const Model& m, const MixOptions& o) {
  const std::vector<TensorInfo>& infos = m.reader->tensors();
  std::vector<TensorInfo> sorted;
  for (size_t i : llama_tensor_order(infos)) sorted.push_back(infos[i]);
  const std::vector<MixChoice> c = choose_mix_types(sorted, m.hparams, o);
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < sorted.size(); ++i) {
    out.emplace_back(sorted[i].name, c[i].quantize ? ggml_type_name(c[i].type) : sorted[i].type_name);
  }
  return out;
}

// The keys llama.cpp's loader requires of every model (and of llama's): a file without one
// is refused, naming the key, as llama-quantize refuses it ("key not found in model"),
// instead of being written to a file llama.cpp would not load.
TEST(GgufMix, KeysLlamaCppRequiresAreRequired) {
  GgufMetadata full;
  full.kvs = {gguf_kv_string("general.architecture", "llama"), gguf_kv_u32("llama.context_length", 2048),
              gguf_kv_u32("llama.embedding_length", 64), gguf_kv_u32("llama.block_count", 2),
              gguf_kv_u32("llama.attention.head_count", 8), gguf_kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f)};
  EXPECT_EQ(gguf_mix_model(full, "m.gguf").n_layer, 2);
  for (const std::string key : {"llama.context_length", "llama.embedding_length", "llama.attention.layer_norm_rms_epsilon"}) {
    for (bool wrong_type : {false, true}) {
      SCOPED_TRACE(key + (wrong_type ? " as a string" : " missing"));
      GgufMetadata m;
      for (const GgufKV& kv : full.kvs) {
        if (kv.key != key) m.kvs.push_back(kv);
        else if (wrong_type) m.kvs.push_back(gguf_kv_string(key, "64"));
      }
      try {
        gguf_mix_model(m, "m.gguf");
        ADD_FAILURE() << "accepted";
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("m.gguf: metadata " + key + ": " + (wrong_type ? "not " : "missing"), 0), 0u) << e.what();
      }
    }
  }
  // Another architecture needs its own two keys, not llama's epsilon.
  GgufMetadata other;
  other.kvs = {gguf_kv_string("general.architecture", "gpt2"), gguf_kv_u32("gpt2.context_length", 1024),
               gguf_kv_u32("gpt2.embedding_length", 64), gguf_kv_u32("gpt2.block_count", 1)};
  EXPECT_EQ(gguf_mix_model(other, "m.gguf").n_layer, 1);
  other.kvs.erase(other.kvs.begin() + 2);
  EXPECT_THROW(gguf_mix_model(other, "m.gguf"), Error);
}

// The keys wquant reads in the type llama.cpp's loader reads them (get_key<uint32_t>: U32
// exactly; get_key_or_arr: also an INT32 array, one value a layer): another type is refused
// as llama-quantize refuses it ("has wrong type", "not a float32, int32 array").
TEST(GgufMix, KeysOfAnotherTypeThanLlamaCppReadsAreRefused) {
  auto model = [](std::vector<GgufKV> extra, const std::string& drop) {
    GgufMetadata m;
    m.kvs = {gguf_kv_string("general.architecture", "llama"), gguf_kv_u32("llama.context_length", 2048),
             gguf_kv_u32("llama.embedding_length", 64), gguf_kv_u32("llama.block_count", 2),
             gguf_kv_u32("llama.attention.head_count", 8), gguf_kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f)};
    std::erase_if(m.kvs, [&](const GgufKV& kv) { return kv.key == drop; });
    m.kvs.insert(m.kvs.end(), extra.begin(), extra.end());
    return m;
  };
  auto refused = [](const GgufMetadata& m, const std::string& what) {
    try {
      gguf_mix_model(m, "m.gguf");
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  refused(model({gguf_kv_i32("llama.block_count", 2)}, "llama.block_count"), "llama.block_count: not a u32");
  refused(model({gguf_kv_i32("llama.context_length", 2048)}, "llama.context_length"), "llama.context_length: not a u32");
  refused(model({gguf_kv_i32_array("llama.context_length", {2048})}, "llama.context_length"),
          "llama.context_length: an array where one u32 is read");
  refused(model({gguf_kv_i32("llama.attention.head_count", 8)}, "llama.attention.head_count"),
          "llama.attention.head_count: not a u32");
  GgufKV u32_array = gguf_kv_i32_array("llama.attention.head_count_kv", {2, 2});
  u32_array.value[0] = uint8_t(GgufValueType::U32);  // the element type: u32, same size
  refused(model({u32_array}, ""), "llama.attention.head_count_kv: an array of other values than int32");
  // What llama.cpp reads: one u32, or an int32 array per layer.
  const MixModel ok = gguf_mix_model(model({gguf_kv_i32_array("llama.attention.head_count_kv", {2, 4})}, ""), "m.gguf");
  EXPECT_EQ(ok.n_head_kv, 2u);
  EXPECT_EQ(ok.n_head, 8u);
}

TEST(GgufMix, TypesAndTensorOrderEqualLlamaQuantizeForEveryRun) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  ASSERT_TRUE(oracle().contains("runs")) << "tests/data/llama_quantize_mix_digests.json is missing";
  size_t checked = 0;
  for (const json& run : oracle()["runs"]) {
    if (run["exit"] != 0) continue;
    MixOptions o;
    ASSERT_TRUE(mix_options(run, &o)) << run_name(run);
    const Model m = open_fixture(run["fixture"]);
    const auto ours = our_types(m, o);
    const json& want = run["tensors"];
    ASSERT_EQ(ours.size(), want.size()) << run_name(run);
    for (size_t i = 0; i < ours.size(); ++i) {
      EXPECT_EQ(ours[i].first, want[i][0].get<std::string>()) << run_name(run) << ": tensor " << i;
      EXPECT_EQ(ours[i].second, want[i][1].get<std::string>()) << run_name(run) << ": " << ours[i].first;
    }
    ++checked;
  }
  EXPECT_GE(checked, 140u);  // 4 fixtures x 19 mixes x with/without imatrix, less the refused, plus options
}

TEST(GgufMix, WhereLlamaQuantizeAbortsTheMixSaysSo) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  size_t checked = 0;
  for (const json& run : oracle()["runs"]) {
    // Q2_K_S: refused up front; an already-quantized input: GgufMix.RequantizingIsRefusedAsLlamaQuantizeRefusesIt
    if (run["exit"] == 0 || run["mix"] == "Q2_K_S" || !run["options"].empty() ||
        run["fixture"].get<std::string>().rfind("192-Q8_0", 0) == 0)
      continue;
    MixOptions o;
    ASSERT_TRUE(mix_options(run, &o));
    const Model m = open_fixture(run["fixture"]);
    std::vector<TensorInfo> sorted;
    for (size_t i : llama_tensor_order(m.reader->tensors())) sorted.push_back(m.reader->tensors()[i]);
    bool unsupported = false;
    for (const MixChoice& c : choose_mix_types(sorted, m.hparams, o)) unsupported |= c.unsupported;
    EXPECT_TRUE(unsupported) << run_name(run) << ": llama-quantize exited " << run["exit"];
    ++checked;
  }
  EXPECT_EQ(checked, 6u);  // stories260K's 172-wide FFN: Q4_0 ... Q8_0 and IQ4_NL have no fallback
}

// The K-quant kernels (branch kquant) bring the quantizers that take an importance matrix.
// The run's --imatrix, read from tests/data, filtered by its --include/--exclude-weights.
Imatrix run_imatrix(const json& run, std::string* as_given) {
  Imatrix m;
  std::vector<std::string> include, exclude;
  const std::vector<std::string> opts = run["options"].get<std::vector<std::string>>();
  for (size_t i = 0; i + 1 < opts.size(); ++i) {
    if (opts[i] == "--imatrix") {
      *as_given = opts[i + 1];
      m = read_imatrix(test::test_data_dir() + "/" + opts[i + 1]);
    }
    if (opts[i] == "--include-weights") include.push_back(opts[i + 1]);
    if (opts[i] == "--exclude-weights") exclude.push_back(opts[i + 1]);
  }
  filter_imatrix(m, include, exclude);
  return m;
}

// A run as `wquant quantize` plans it: the fixture, the plan and llama-quantize's keys.
struct RunPlan {
  Model m;
  std::vector<TensorPlan> plan;
  GgufOutputKeys keys;
};

// Null when the run needs a type wquant has no kernel for. `keep_split`: the tensors in the
// input files' order, as llama-quantize --keep-split takes them.
std::unique_ptr<RunPlan> plan_run(const json& run, bool keep_split) {
  auto r = std::make_unique<RunPlan>();
  MixOptions o;
  EXPECT_TRUE(mix_options(run, &o)) << run_name(run);
  r->m = open_fixture(run["fixture"]);
  const Model& m = r->m;
  const std::vector<size_t> order = keep_split ? gguf_file_order(*m.reader) : llama_tensor_order(m.reader->tensors());
  std::vector<TensorInfo> sorted;
  for (size_t i : order) sorted.push_back(m.reader->tensors()[i]);
  for (const MixChoice& c : choose_mix_types(sorted, m.hparams, o)) {
    if (c.quantize && !ggml_type_is_float(c.type) && !ggml_block_of_gguf(uint32_t(c.type))) return nullptr;
  }
  std::string imatrix_as_given;
  const Imatrix im = run_imatrix(run, &imatrix_as_given);
  PlanOptions po;
  po.format = OutputFormat::Gguf;
  po.gguf_mix = &o;
  po.gguf_model = &m.hparams;
  po.imatrix = &im.entries;
  po.gguf_order = &order;
  for (const json& a : run["options"]) po.allow_requantize |= a == "--allow-requantize";
  r->plan = make_plan(m.reader->tensors(), po);
  r->keys.file_type = o.mix.only_copy ? gguf_copy_file_type(*m.reader, run["fixture"]) : o.mix.llama_ftype;
  r->keys.extra = imatrix_keys(im, imatrix_as_given);
  return r;
}

// Writes made of part of a tensor (row pieces) since the program started: a test that
// asks for pieces checks that some were made.
size_t g_piece_writes = 0;

// The run's plan through the pipeline into w; large tensors reach w in row pieces of
// about piece_bytes (PipelineOptions::row_piece_bytes).
void write_plan(const RunPlan& r, ModelWriter& w, size_t piece_bytes = kRowPieceBytes) {
  struct Counting : TensorSink {
    ModelWriter& to;
    explicit Counting(ModelWriter& w) : to(w) {}
    bool takes_row_pieces() const override { return to.takes_row_pieces(); }
    void write(TensorResult& t) override {
      g_piece_writes += !(t.first_piece && t.last_piece);
      to.write(t);
    }
  } sink(w);
  PipelineOptions o;
  o.row_piece_bytes = piece_bytes;
  Scheduler s(2);
  s.run([&] { run_pipeline(r.plan, r.m.reader->tensors(), *r.m.reader, sink, o); });
  w.commit();
}

// Quantizes a fixture as `wquant quantize` does for the run and compares the whole file
// and every tensor's bytes. Returns false (nothing compared) when the run needs a type
// wquant has no kernel for.
bool same_file_as_llama_quantize(const json& run, size_t piece_bytes = kRowPieceBytes) {
  const std::unique_ptr<RunPlan> r = plan_run(run, false);
  if (!r) return false;
  const std::string out = temp_path("out.gguf");
  write_plan(*r, *make_gguf_writer(out, r->plan, *r->m.reader, r->keys), piece_bytes);
  EXPECT_EQ(sha256_file(out), run["sha256"].get<std::string>()) << run_name(run);
  auto q = open_gguf(out);
  const json& want = run["tensors"];
  EXPECT_EQ(q->tensors().size(), want.size()) << run_name(run);
  for (size_t i = 0; i < q->tensors().size() && i < want.size(); ++i) {
    size_t n;
    const uint8_t* d = q->raw(i, &n);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(test::fnv1a64(d, n)));
    EXPECT_EQ(q->tensors()[i].name, want[i][0].get<std::string>()) << run_name(run);
    EXPECT_EQ(std::string(hex), want[i][2].get<std::string>()) << run_name(run) << ": " << q->tensors()[i].name;
  }
  q.reset();
  fs::remove(out);
  return true;
}

const json& split_oracle() {
  static const json doc = [] {
    std::ifstream f(test::test_data_dir() + "/llama_quantize_split_digests.json");
    return f ? json::parse(f) : json();
  }();
  return doc;
}

// --keep-split: wquant's shards for a run of llama_quantize_split_digests.json against
// llama-quantize's, shard by shard. False (nothing compared) for a type this build lacks.
bool same_shards_as_llama_quantize(const json& run, size_t piece_bytes = kRowPieceBytes) {
  const std::unique_ptr<RunPlan> r = plan_run(run, true);
  if (!r) return false;
  const std::string prefix = temp_path("ks");
  write_plan(*r, *make_gguf_split_writer(prefix, r->plan, *r->m.reader, r->keys), piece_bytes);
  const std::vector<std::string> shards = gguf_split_outputs(prefix, *r->m.reader);
  const json& want = run["shards"];
  EXPECT_EQ(shards.size(), want.size()) << run_name(run);
  for (size_t k = 0; k < shards.size(); ++k) {
    if (k < want.size()) {
      // The name as llama_split_path makes it of llama-quantize's OUT, out.gguf.
      const std::string tail = shards[k].substr(prefix.size());
      EXPECT_EQ("out" + tail, want[k]["file"].get<std::string>()) << run_name(run);
      EXPECT_EQ(sha256_file(shards[k]), want[k]["sha256"].get<std::string>()) << run_name(run) << ": " << shards[k];
    }
    fs::remove(shards[k]);
  }
  return true;
}

TEST(GgufMix, KeepSplitShardsEqualLlamaQuantizes) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  ASSERT_TRUE(split_oracle().contains("runs")) << "tests/data/llama_quantize_split_digests.json is missing";
  const json& want = split_oracle()["fixtures"];
  for (const auto& [which, n] : {std::pair<std::string, int>{"split", 3}, {"split0", 4}}) {
    const std::string first = Fixtures::path(which);
    const std::string prefix = first.substr(0, first.size() - gguf_split_path("", 0, n).size());
    for (int k = 0; k < n; ++k) {
      EXPECT_EQ(sha256_file(gguf_split_path(prefix, k, n)), want[which + " shard " + std::to_string(k + 1)]) << which << k;
    }
  }
  EXPECT_EQ(sha256_file(Fixtures::path("192")), want["192"]);
  size_t compared = 0, split = 0, empty_first = 0, unsplit = 0, with_imatrix = 0;
  const size_t pieces_before = g_piece_writes;
  for (const json& run : split_oracle()["runs"]) {
    ASSERT_EQ(run["exit"], 0) << run_name(run);
    const bool same = same_shards_as_llama_quantize(run, 2048);  // row pieces across shards
    compared += same;
    split += same && run["fixture"] == "split";
    empty_first += same && run["fixture"] == "split0";
    unsplit += same && run["shards"].size() == 1;
    with_imatrix += same && uses_imatrix(run);
  }
  EXPECT_EQ(compared, split_oracle()["runs"].size());
  EXPECT_GT(g_piece_writes - pieces_before, 100u) << "no tensor was written in pieces";
  std::printf("%zu writes of row pieces\n", g_piece_writes - pieces_before);
  EXPECT_EQ(split, 18u);  // 9 mixes, with and without imatrix-192.dat
  EXPECT_EQ(empty_first, 3u);
  EXPECT_EQ(unsplit, 2u);
  EXPECT_GE(with_imatrix, 10u);
}

// The files' order (llama-quantize --keep-split's) is by shard, then by data offset.
TEST(GgufMix, KeepSplitOrderIsTheFilesOrder) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  const Model m = open_fixture("split");
  const std::vector<size_t> order = gguf_file_order(*m.reader);
  ASSERT_EQ(order.size(), m.reader->tensors().size());
  for (size_t k = 1; k < order.size(); ++k) {
    const size_t a = order[k - 1], b = order[k];
    EXPECT_TRUE(m.reader->shard(a) < m.reader->shard(b) ||
                (m.reader->shard(a) == m.reader->shard(b) && m.reader->data_offset(a) < m.reader->data_offset(b)))
        << m.reader->tensors()[a].name << " before " << m.reader->tensors()[b].name;
  }
  EXPECT_EQ(m.reader->shard_count(), 3u);
  EXPECT_EQ(m.reader->shard(order.back()), 2u);
}

TEST(GgufMix, FixturesAreWhatLlamaQuantizeWasRunOn) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  const json& want = oracle()["fixtures"];
  for (const char* f : {"192", "256", "moe", "stories", "192-Q8_0", "192-F16", "192-Q8_0-guess"})
    EXPECT_EQ(sha256_file(Fixtures::path(f)), want[f]) << f;
  const std::string first = Fixtures::path("split");
  const std::string prefix = first.substr(0, first.size() - std::strlen("-00001-of-00003.gguf"));
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(sha256_file(gguf_split_path(prefix, k, 3)), want["split shard " + std::to_string(k + 1)]) << k;
  }
}

TEST(GgufMix, WholeFilesEqualLlamaQuantizeForTheTypesThisBuildWrites) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  size_t compared = 0, with_imatrix = 0, requantized = 0, f32_or_copy = 0;
  for (const json& run : oracle()["runs"]) {
    if (run["exit"] != 0) continue;
    const bool same = same_file_as_llama_quantize(run);
    compared += same;
    with_imatrix += same && uses_imatrix(run);
    requantized += same && run["fixture"] == "192-Q8_0";
    f32_or_copy += same && (run["mix"] == "F32" || run["mix"] == "COPY");
  }
  EXPECT_EQ(requantized, 6u);  // --allow-requantize: Q8_0 to Q4_0, Q5_1, Q8_0 (a copy), F16 and F32; COPY
  // F32 and COPY on every fixture, from f32, f16 and Q8_0, the file type of a COPY from
  // the input's key or (192-Q8_0-guess) guessed as llama.cpp's loader guesses it.
  EXPECT_EQ(f32_or_copy, 25u);
  size_t split = 0;
  for (const json& run : oracle()["runs"]) split += run["fixture"] == "split" && run["exit"] == 0;
  EXPECT_EQ(split, 3u);  // a split input: Q8_0 and F16 compared here, Q4_K_M with the K-quant kernels
  // Q4_0 ... Q8_0 on the 192 fixture, F16 and BF16 everywhere, Q8_0 on the wide ones;
  // F16 and BF16 with an imatrix (its quantize.imatrix.* keys: the data does not use it).
  EXPECT_GE(compared, 25u);
  EXPECT_GE(with_imatrix, 8u);
}

// Every run again with the large tensors in row pieces of 2 KiB (most of these
// fixtures' tensors are then several pieces; a 1.1 B model's embedding is 8 of 32 MiB).
TEST(GgufMix, WholeFilesEqualLlamaQuantizeForTheKMixesAndImatrices) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  size_t compared = 0, runs = 0;
  const size_t pieces_before = g_piece_writes;
  for (const json& run : oracle()["runs"]) {
    if (run["exit"] != 0) continue;
    ++runs;
    compared += same_file_as_llama_quantize(run, 2048);
  }
  EXPECT_EQ(compared, runs);
  EXPECT_GT(g_piece_writes - pieces_before, 1000u) << "no tensor was written in pieces";
  std::printf("%zu writes of row pieces\n", g_piece_writes - pieces_before);
}

TEST(GgufMix, RequantizingIsRefusedAsLlamaQuantizeRefusesIt) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  // llama-quantize: "requantizing from type q8_0 is disabled" for the first tensor it
  // would change, in its order.
  const Model m = open_fixture("192-Q8_0");
  MixOptions o;
  o.mix = *gguf_mix_named("Q4_0");
  PlanOptions po;
  po.format = OutputFormat::Gguf;
  po.gguf_mix = &o;
  po.gguf_model = &m.hparams;
  try {
    make_plan(m.reader->tensors(), po);
    FAIL() << "a Q8_0 model was quantized to Q4_0 without --allow-requantize";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Input);
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_k.weight: requantizing from type Q8_0 to Q4_0 is disabled"),
              std::string::npos)
        << e.what();
  }
  o.mix = *gguf_mix_named("F32");  // dequantizing is requantizing there too (token_embd comes first)
  try {
    make_plan(m.reader->tensors(), po);
    FAIL() << "a Q8_0 model was made F32 without --allow-requantize";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token_embd.weight: requantizing from type Q8_0 to F32 is disabled"),
              std::string::npos)
        << e.what();
  }
  // The same type throughout, or COPY: nothing to requantize, every tensor copied.
  for (const char* mix : {"Q8_0", "COPY"}) {
    o.mix = *gguf_mix_named(mix);
    for (const TensorPlan& p : make_plan(m.reader->tensors(), po)) {
      EXPECT_NE(p.action, TensorAction::Ggml) << mix << " " << p.name;
      EXPECT_FALSE(p.requantize) << mix << " " << p.name;
    }
  }
}

const json& oracle_run(const std::string& fixture, const std::string& mix) {
  for (const json& r : oracle()["runs"]) {
    if (r["fixture"] == fixture && r["mix"] == mix && r["options"].empty()) return r;
  }
  static const json none;
  ADD_FAILURE() << "no run " << fixture << " " << mix;
  return none;
}

TEST(GgufMix, TensorTypePatternsOverrideTheMixAsLaterLlamaQuantizeDoes) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  // --tensor-type (llama.cpp after c392e5094): the first pattern found in the name decides,
  // even where its type is the mix's own choice; other tensors keep llama-quantize's choice.
  const Model m = open_fixture("256");
  const json& want = oracle_run("256", "Q4_K_M")["tensors"];
  MixOptions o;
  o.mix = *gguf_mix_named("Q4_K_M");
  o.tensor_types = {{"attn", GgmlType::Q4_K}, {"attn_v", GgmlType::Q8_0}, {"ffn_(up|gate)", GgmlType::Q5_K}};
  auto ours = our_types(m, o);
  ASSERT_EQ(ours.size(), want.size());
  size_t attn_v = 0, mix_q6 = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    const std::string& name = ours[i].first;
    const std::string mix_choice = want[i][1];
    if (name.find("attn_") != std::string::npos && name.find("norm") == std::string::npos) {
      // "attn" first: Q4_K, also where the mix chose Q6_K for attn_v ("attn_v" never applies).
      EXPECT_EQ(ours[i].second, "Q4_K") << name;
      if (name.find("attn_v") != std::string::npos) {
        ++attn_v;
        if (mix_choice == "Q6_K") ++mix_q6;
      }
    } else if (name.find("ffn_up") != std::string::npos || name.find("ffn_gate") != std::string::npos) {
      EXPECT_EQ(ours[i].second, "Q5_K") << name;
    } else {
      EXPECT_EQ(ours[i].second, mix_choice) << name;
    }
  }
  EXPECT_GT(attn_v, 0u);
  EXPECT_GT(mix_q6, 0u);  // the case that tells "first match" from "first differing match"
  // A first pattern asking for the mix's own choice keeps it where a later, wider one would
  // change it: every attn_v Q6_K (the mix gives some Q4_K, some Q6_K), the rest of attn Q4_0.
  o.tensor_types = {{"attn_v", GgmlType::Q6_K}, {"attn", GgmlType::Q4_0}};
  ours = our_types(m, o);
  for (size_t i = 0; i < ours.size(); ++i) {
    const std::string& name = ours[i].first;
    if (name.find("attn_v") != std::string::npos) {
      EXPECT_EQ(ours[i].second, "Q6_K") << name;
    } else if (name.find("attn_") != std::string::npos && name.find("norm") == std::string::npos) {
      EXPECT_EQ(ours[i].second, "Q4_0") << name;
    }
  }
  o.tensor_types = {{"attn_v(", GgmlType::Q8_0}};
  EXPECT_THROW(our_types(m, o), Error);
}

TEST(GgufMix, ExplicitEmbeddingAndOutputTypesWinOverTensorTypePatterns) {
  WQ_REQUIRE_SHARED(stories, "data/models/stories260K/stories260K-f32.gguf");
  // --token-embedding-type / --output-tensor-type are applied after --tensor-type (as
  // llama-quantize applies them): a pattern's type that does not fit the 192-wide rows
  // must not leave the tensor unquantized when the explicit type fits.
  const Model m = open_fixture("192");
  const std::vector<TensorInfo>& infos = m.reader->tensors();
  MixOptions o;
  o.mix = *gguf_mix_named("Q4_K_M");
  o.tensor_types = {{"token_embd", GgmlType::Q4_K}};
  o.token_embd_type = GgmlType::Q8_0;
  const std::vector<MixChoice> c = choose_mix_types(infos, m.hparams, o);
  bool seen = false;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].name != "token_embd.weight") continue;
    seen = true;
    EXPECT_TRUE(c[i].quantize);
    EXPECT_FALSE(c[i].unsupported) << c[i].note;
    EXPECT_EQ(std::string(ggml_type_name(c[i].type)), "Q8_0");
  }
  EXPECT_TRUE(seen);
  // An explicit type whose blocks do not fit has no fallback: llama-quantize fails on it
  // (c392e5094, this fixture, --token-embedding-type q6_k, Q4_K_M: "ggml_validate_row_data:
  // invalid size 26624 for type q6_K", exit 1); the tensor is unsupported (kept float).
  o.tensor_types.clear();
  o.token_embd_type = GgmlType::Q6_K;
  const std::vector<MixChoice> f = choose_mix_types(infos, m.hparams, o);
  for (size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].name != "token_embd.weight") continue;
    EXPECT_FALSE(f[i].fallback);
    EXPECT_TRUE(f[i].unsupported);
    EXPECT_EQ(std::string(ggml_type_name(f[i].type)), "Q6_K");
  }
}

TEST(GgufMix, NamesAsLlamaQuantizeTakesThem) {
  // QUANT_OPTIONS of tools/quantize/quantize.cpp: names case-insensitive, three aliases,
  // and the file type's number.
  EXPECT_EQ(std::string(gguf_mix_named("q4_k_m")->name), "Q4_K_M");
  EXPECT_EQ(std::string(gguf_mix_named("Q4_K")->name), "Q4_K_M");
  EXPECT_EQ(std::string(gguf_mix_named("Q3_K")->name), "Q3_K_M");
  EXPECT_EQ(std::string(gguf_mix_named("Q5_K")->name), "Q5_K_M");
  EXPECT_EQ(std::string(gguf_mix_named("15")->name), "Q4_K_M");
  EXPECT_EQ(std::string(gguf_mix_named("7")->name), "Q8_0");
  EXPECT_EQ(gguf_mix_named("Q4_K_M")->llama_ftype, 15u);
  EXPECT_EQ(gguf_mix_named("Q2_K_S")->llama_ftype, 21u);
  EXPECT_EQ(gguf_mix_named("BF16")->llama_ftype, 32u);
  // F32 and COPY share file type 0; the number is F32's (COPY comes after it there).
  EXPECT_EQ(std::string(gguf_mix_named("0")->name), "F32");
  EXPECT_FALSE(gguf_mix_named("0")->only_copy);
  EXPECT_TRUE(gguf_mix_named("copy")->only_copy);
  EXPECT_FALSE(gguf_mix_named("Q4_K_X"));
  EXPECT_FALSE(gguf_mix_named("IQ2_XXS"));  // a mix wquant does not write
  EXPECT_FALSE(gguf_mix_named("99"));
  EXPECT_EQ(ggml_type_named("q6_k"), GgmlType::Q6_K);
  EXPECT_FALSE(ggml_type_named("Q4_K_M"));  // a mix, not a type
}

TEST(GgufMix, TensorOrderIsByLayerNumberThenName) {
  // llama_model_loader's weight_name_comparer: blk.10 after blk.9, the rest (layer -1) first.
  std::vector<TensorInfo> t(5);
  t[0].name = "blk.10.attn_q.weight";
  t[1].name = "blk.9.ffn_up.weight";
  t[2].name = "token_embd.weight";
  t[3].name = "blk.9.attn_k.weight";
  t[4].name = "output_norm.weight";
  EXPECT_EQ(llama_tensor_order(t), (std::vector<size_t>{4, 2, 3, 1, 0}));
}

TEST(GgufMix, WhatLlamaQuantizeLeavesAlone) {
  auto info = [](const char* name, std::vector<int64_t> shape) {
    TensorInfo t;
    t.name = name;
    t.shape = std::move(shape);
    return t;
  };
  EXPECT_TRUE(llama_quantizes(info("blk.0.attn_q.weight", {64, 64}), false));
  EXPECT_FALSE(llama_quantizes(info("blk.0.attn_norm.weight", {64}), false));
  EXPECT_FALSE(llama_quantizes(info("blk.0.attn_q.bias", {64, 64}), false));       // does not end in "weight"
  EXPECT_FALSE(llama_quantizes(info("blk.0.attn_q.weight", {1, 64}), false));      // ggml_n_dims 1
  EXPECT_FALSE(llama_quantizes(info("blk.0.ffn_gate_inp.weight", {8, 64}), false));
  EXPECT_FALSE(llama_quantizes(info("blk.0.attn_k_norm.weight", {8, 64}), false));
  EXPECT_FALSE(llama_quantizes(info("blk.0.ssm_conv1d.weight", {8, 64}), false));
  EXPECT_FALSE(llama_quantizes(info("position_embd.weight", {8, 64}), false));
  EXPECT_TRUE(llama_quantizes(info("output.weight", {8, 64}), false));
  EXPECT_FALSE(llama_quantizes(info("output.weight", {8, 64}), true));  // --leave-output-tensor
  EXPECT_TRUE(llama_quantizes(info("blk.0.ffn_down_exps.weight", {8, 64, 256}), false));
  // llama.cpp's test, name.rfind("weight") == name.size() - 6, holds for any name of 5
  // characters (size() - 6 wraps to npos, rfind's "none"), and for no other short one.
  EXPECT_TRUE(llama_quantizes(info("abcde", {8, 64}), false));
  EXPECT_FALSE(llama_quantizes(info("abcd", {8, 64}), false));
  EXPECT_FALSE(llama_quantizes(info("abcdef", {8, 64}), false));
}

TEST(GgufMix, AttentionTensorsThatDoNotMatchTheLayersAreRefused) {
  std::vector<TensorInfo> t(1);
  t[0].name = "blk.0.attn_v.weight";
  t[0].shape = {256, 256};
  MixModel m;
  m.arch = "llama";
  m.n_layer = 2;
  m.n_attn_layer = 2;
  MixOptions o;
  o.mix = *gguf_mix_named("Q4_K_M");
  try {
    choose_mix_types(t, m, o);
    FAIL() << "one attn_v for two attention layers was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 attention value tensors"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace wq
