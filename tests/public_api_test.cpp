// The public API's GGUF conversions (include/wquant/wquant.h convert() with gguf_type, an
// importance matrix and llama-quantize's other options): the bytes `wquant quantize`
// writes for the same input and options, llama-quantize's own where
// tests/data/llama_quantize_mix_digests.json has the run, and every refusal as a
// wquant::Error of the right kind naming what is wrong, with no output left behind.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>
#include <wquant/wquant.h>

#include "tests/gguf_fixture.h"
#include "io/sha256.h"
#include "tests/test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kStoriesGguf = "data/models/stories260K/stories260K-f32.gguf";

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// `wquant ARGS...` (through the cross build's emulator); its exit code.
int run_wquant(const std::vector<std::string>& args) {
  std::string cmd;
  if (std::string(WQUANT_BIN_LAUNCHER).size()) cmd = std::string(WQUANT_BIN_LAUNCHER) + " ";
  cmd += std::string("'") + WQUANT_BIN + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// llama-quantize's sha256 for the 256-wide fixture, mix and options.
std::string oracle_sha256(const std::string& mix, const std::vector<std::string>& options) {
  std::ifstream f(wq::test::test_data_dir() + "/llama_quantize_mix_digests.json");
  const json doc = json::parse(f);
  for (const json& r : doc["runs"]) {
    if (r["fixture"] == "256" && r["mix"] == mix && r["options"] == json(options)) return r["sha256"];
  }
  ADD_FAILURE() << "no llama-quantize run 256 " << mix;
  return "";
}

class PublicApiGguf : public ::testing::Test {
 protected:
  void SetUp() override {
    stories_ = wq::test::shared_file(kStoriesGguf);
    if (stories_.empty()) GTEST_SKIP() << "shared file " << kStoriesGguf << " is absent (../shared is not beside this checkout)";
    dir_ = std::make_unique<wq::test::ScratchDir>("wquant-api");
    fx256_ = path("fx-256.gguf");
    wq::test::write_gguf_wide_fixture(stories_, fx256_, wq::test::dense_fixture());
  }
  std::string path(const std::string& name) const { return dir_->path() + "/" + name; }

  // Converts fx256 through the API and through the program with the same options; the
  // two files must be the same bytes. Returns the API's file.
  std::string both(const std::string& name, const wquant::ConvertOptions& o, const std::vector<std::string>& flags) {
    const std::string api = path(name + "-api.gguf"), cli = path(name + "-cli.gguf");
    const wquant::ConvertResult r = wquant::convert(fx256_, api, o);
    EXPECT_GT(r.quantized, 0u) << name;
    std::vector<std::string> args = {"quantize", fx256_, cli, "-q"};
    args.insert(args.end(), flags.begin(), flags.end());
    EXPECT_EQ(run_wquant(args), 0) << name;
    EXPECT_TRUE(read_bytes(api) == read_bytes(cli)) << name << ": the API's file differs from wquant quantize's";
    return api;
  }
  // The type of every quantized tensor of a GGUF, by name.
  static std::vector<std::pair<std::string, std::string>> types(const std::string& file) {
    std::vector<std::pair<std::string, std::string>> v;
    const wquant::Model m = wquant::Model::open(file);
    for (const wquant::TensorInfo& t : m.tensors()) v.emplace_back(t.name, t.type);
    return v;
  }
  // Expects convert(IN, OUT, o) to throw `kind` with `part` in its message, OUT not written.
  void refused(const std::string& in, const wquant::ConvertOptions& o, wquant::Error::Kind kind, const std::string& part) {
    const std::string out = path("refused.gguf");
    try {
      wquant::convert(in, out, o);
      ADD_FAILURE() << "accepted; expected an error with '" << part << "'";
    } catch (const wquant::Error& e) {
      EXPECT_EQ(int(e.kind()), int(kind)) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(out));
  }

  std::string stories_, fx256_;
  std::unique_ptr<wq::test::ScratchDir> dir_;
};

// Q4_K (llama-quantize's alias of Q4_K_M) with --pure: every quantized tensor Q4_K, and
// the file llama-quantize writes.
TEST_F(PublicApiGguf, Q4KPureIsTheProgramsAndLlamaQuantizesFile) {
  wquant::ConvertOptions o;
  o.gguf_type = "Q4_K";
  o.pure = true;
  const std::string f = both("q4k", o, {"--type", "Q4_K", "--pure"});
  EXPECT_EQ(wq::sha256_file(f), oracle_sha256("Q4_K_M", {"--pure"}));
  size_t q4k = 0;
  for (const auto& [name, type] : types(f)) {
    if (type != "F32") {
      EXPECT_EQ(type, "Q4_K") << name;
      ++q4k;
    }
  }
  EXPECT_GT(q4k, 50u);
}

// hqq with a mix: the program's --hqq file (the Q4_K tensors' minima refined).
TEST_F(PublicApiGguf, HqqWithAMixIsTheProgramsFile) {
  wquant::ConvertOptions o;
  o.gguf_type = "Q4_K_M";
  o.quant.hqq = true;
  const std::string f = both("q4km-hqq", o, {"--type", "Q4_K_M", "--hqq"});
  EXPECT_NE(wq::sha256_file(f), oracle_sha256("Q4_K_M", {}));
}

// A mix name: Q4_K_M's per-tensor choices (Q6_K where the mix bumps a tensor).
TEST_F(PublicApiGguf, MixNameIsTheProgramsAndLlamaQuantizesFile) {
  wquant::ConvertOptions o;
  o.gguf_type = "q4_k_m";
  const std::string f = both("q4km", o, {"--type", "Q4_K_M"});
  EXPECT_EQ(wq::sha256_file(f), oracle_sha256("Q4_K_M", {}));
  bool q6k = false, q4k = false;
  for (const auto& [name, type] : types(f)) {
    q6k |= type == "Q6_K";
    q4k |= type == "Q4_K";
  }
  EXPECT_TRUE(q6k && q4k);
  // The output and token-embedding types, as llama-quantize's options set them.
  o.gguf_type = "Q3_K_M";
  o.output_tensor_type = "f16";
  o.token_embedding_type = "q4_0";
  const std::string g = both("q3km", o, {"Q3_K_M", "--output-tensor-type", "f16", "--token-embedding-type", "q4_0"});
  EXPECT_EQ(wq::sha256_file(g), oracle_sha256("Q3_K_M", {"--output-tensor-type", "f16", "--token-embedding-type", "q4_0"}));
}

// tensor_types (--tensor-type): the program's file, and the rules applied in order (the
// first pattern found in a name sets its type).
TEST_F(PublicApiGguf, TensorTypesAreTheProgramsFile) {
  wquant::ConvertOptions o;
  o.gguf_type = "Q4_K_M";
  o.tensor_types = {"ATTN_V=q8_0", "ffn_(up|gate)=Q5_K"};
  const std::string f = both("q4km-tt", o, {"--type", "Q4_K_M", "--tensor-type", "ATTN_V=q8_0", "--tensor-type",
                                            "ffn_(up|gate)=Q5_K"});
  size_t attn_v = 0, up_gate = 0;
  for (const auto& [name, type] : types(f)) {
    if (name.find("attn_v") != std::string::npos) {
      EXPECT_EQ(type, "Q8_0") << name;
      ++attn_v;
    }
    if (name.find("ffn_up") != std::string::npos || name.find("ffn_gate") != std::string::npos) {
      EXPECT_EQ(type, "Q5_K") << name;
      ++up_gate;
    }
  }
  EXPECT_GT(attn_v, 0u);
  EXPECT_GT(up_gate, 0u);
}

// An importance matrix (with a filter), and Q2_K_S, which needs one; a legacy type from bits.
TEST_F(PublicApiGguf, ImatrixAndLegacyTypesAreTheProgramsFiles) {
  const std::string im = wq::test::test_data_dir() + "/imatrix-256.dat";
  wquant::ConvertOptions o;
  o.gguf_type = "IQ4_XS";
  o.imatrix = im;
  o.exclude_weights = {"ffn_down", "attn_q"};
  const std::string a = both("iq4xs", o, {"IQ4_XS", "--imatrix", im, "--exclude-weights", "ffn_down", "--exclude-weights", "attn_q"});
  wquant::ConvertOptions plain;
  plain.gguf_type = "IQ4_XS";
  wquant::convert(fx256_, path("iq4xs-plain.gguf"), plain);
  EXPECT_FALSE(read_bytes(a) == read_bytes(path("iq4xs-plain.gguf"))) << "the importance matrix changed nothing";
  o = wquant::ConvertOptions();
  o.gguf_type = "Q2_K_S";
  o.imatrix = im;
  both("q2ks", o, {"Q2_K_S", "--imatrix", im});
  o = wquant::ConvertOptions();
  o.quant.bits = 5;
  o.quant.asym = true;
  const std::string l = both("q51", o, {"--type", "Q5_1"});
  EXPECT_EQ(wq::sha256_file(l), oracle_sha256("Q5_1", {}));
}

TEST_F(PublicApiGguf, BadGgufOptionsAreRefusedNamingTheOption) {
  using K = wquant::Error::Kind;
  const std::string im = wq::test::test_data_dir() + "/imatrix-256.dat";
  wquant::ConvertOptions o;
  o.gguf_type = "Q4_K_X";
  refused(fx256_, o, K::Usage, "gguf_type: expected one of Q4_0");
  o.gguf_type = "Q2_K_S";
  refused(fx256_, o, K::Usage, "Q2_K_S needs an importance matrix");
  o.imatrix = im;
  o.include_weights = {"no-such-tensor"};
  refused(fx256_, o, K::Usage, "Q2_K_S needs an importance matrix (an imatrix file with entries left");
  o.exclude_weights = {"attn"};
  refused(fx256_, o, K::Usage, "cannot be used together");
  o = wquant::ConvertOptions();
  o.exclude_weights = {"attn"};
  refused(fx256_, o, K::Usage, "exclude_weights selects imatrix entries");
  o = wquant::ConvertOptions();
  o.gguf_type = "Q4_K_M";
  o.quant.asym = true;
  refused(fx256_, o, K::Usage, "gguf_type Q4_K_M sets every tensor's type");
  o.quant.asym = false;
  o.quant.hqq = true;
  o.gguf_type = "Q3_K_M";  // its own type stores no minimum: nothing for HQQ to refine
  refused(fx256_, o, K::Usage, "--hqq with GGUF needs a mix whose type has a minimum");
  o.gguf_type = "Q8_0";
  o.quant.hqq = false;
  o.quant.asym = true;
  refused(fx256_, o, K::Usage, "gguf_type Q8_0 is symmetric");
  o = wquant::ConvertOptions();
  o.quant.bits = 3;
  refused(fx256_, o, K::Usage, "no GGUF block type for 3-bit");
  o = wquant::ConvertOptions();
  o.output_tensor_type = "Q9_K";
  refused(fx256_, o, K::Usage, "output_tensor_type: expected a ggml type");
  o = wquant::ConvertOptions();
  o.token_embedding_type = "int4";
  refused(fx256_, o, K::Usage, "token_embedding_type: expected a ggml type");
  o = wquant::ConvertOptions();
  o.tensor_types = {"attn_v"};
  refused(fx256_, o, K::Usage, "tensor_types: expected PATTERN=TYPE");
  o.tensor_types = {"attn_v=q9_9"};
  refused(fx256_, o, K::Usage, "tensor_types: expected a ggml type");
  o.tensor_types = {"attn_v(=q8_0"};
  refused(fx256_, o, K::Usage, "attn_v(");
  // llama-quantize's options need a GGUF output, and a GGUF output a GGUF input.
  o = wquant::ConvertOptions();
  o.gguf_type = "Q4_K_M";
  o.format = "wq";
  refused(fx256_, o, K::Usage, "apply to GGUF output only");
  const std::string st = wq::test::shared_file("data/models/stories260K/stories260K.safetensors");
  if (!st.empty()) refused(st, wquant::ConvertOptions(), K::Usage, "GGUF output needs a GGUF input");
  // Bad importance matrices: absent, truncated, of the wrong model (an entry whose size
  // does not fit its tensor), each naming the file or the tensor.
  o = wquant::ConvertOptions();
  o.gguf_type = "Q4_K_M";
  o.imatrix = path("absent.dat");
  refused(fx256_, o, K::Input, path("absent.dat"));
  const std::string bytes = read_bytes(im);
  std::ofstream(path("cut.dat"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  o.imatrix = path("cut.dat");
  refused(fx256_, o, K::Input, path("cut.dat") + ": entry ");
  o.imatrix = wq::test::test_data_dir() + "/imatrix-stories.dat";
  refused(fx256_, o, K::Input, ": the imatrix has ");
}

}  // namespace
