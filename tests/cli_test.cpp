// The wquant program, run as a user runs it: the built binary (WQUANT_BIN) in a child
// process, its stdout, stderr and exit code captured. Every command and flag, the
// MNNConvert spellings, params files, and bad input of every kind.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/metrics.h"
#include "io/gguf_reader.h"
#include "io/model_reader.h"
#include "tests/gguf_fixture.h"
#include "io/sha256.h"
#include "tests/test_support.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kStoriesSt = "data/models/stories260K/stories260K.safetensors";
const char* const kStoriesGguf = "data/models/stories260K/stories260K-f32.gguf";

struct Result {
  int code = -1;
  std::string out, err;
};

std::string describe(const std::vector<std::string>& args, const Result& r) {
  std::string s = "wquant";
  for (const std::string& a : args) s += " " + a;
  return s + "\n  exit " + std::to_string(r.code) + "\n  stdout: " + r.out.substr(0, 4000) + "\n  stderr: " +
         r.err.substr(0, 4000);
}

// Environment of the child: ours, with `set` applied ("" value: removed).
std::vector<std::string> child_env(const std::map<std::string, std::string>& set) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (!set.count(key)) env.push_back(kv);
  }
  for (const auto& [k, v] : set) {
    if (!v.empty()) env.push_back(k + "=" + v);
  }
  return env;
}

struct Child {
  pid_t pid = -1;
  int out_fd = -1, err_fd = -1;
};

// Starts WQUANT_BIN with args; stdout and stderr are pipes unless stderr_fd is given
// (a terminal, for the progress test).
Child spawn(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {},
            int stderr_fd = -1) {
  int out[2], err[2] = {-1, -1};
  EXPECT_EQ(pipe(out), 0);
  if (stderr_fd < 0) {
    EXPECT_EQ(pipe(err), 0);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, stderr_fd >= 0 ? stderr_fd : err[1], 2);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  if (stderr_fd < 0) posix_spawn_file_actions_addclose(&fa, err[0]);
  // A cross build runs the binary through its emulator (WQUANT_BIN_LAUNCHER, else "").
  std::vector<std::string> argv_s;
  if (std::strlen(WQUANT_BIN_LAUNCHER) > 0) argv_s.push_back(WQUANT_BIN_LAUNCHER);
  argv_s.push_back(WQUANT_BIN);
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s = child_env(env);
  std::vector<char*> envp;
  for (std::string& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  Child c;
  const int rc = posix_spawnp(&c.pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0) << "cannot start " << WQUANT_BIN << ": " << std::strerror(rc);
  close(out[1]);
  if (stderr_fd < 0) close(err[1]);
  c.out_fd = out[0];
  c.err_fd = stderr_fd < 0 ? err[0] : -1;
  return c;
}

// Reads both pipes to their end (poll, so neither can fill and block the child), then
// reaps the child. A child killed by signal s gives 128 + s, as a shell reports it.
Result finish(Child c) {
  Result r;
  std::vector<pollfd> fds;
  fds.push_back({c.out_fd, POLLIN, 0});
  if (c.err_fd >= 0) fds.push_back({c.err_fd, POLLIN, 0});
  size_t open = fds.size();
  char buf[65536];
  while (open > 0) {
    if (poll(fds.data(), fds.size(), -1) < 0) break;
    for (pollfd& p : fds) {
      if (p.fd < 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = read(p.fd, buf, sizeof buf);
      if (n <= 0) {
        close(p.fd);
        p.fd = -1;
        --open;
      } else {
        (p.fd == c.out_fd ? r.out : r.err).append(buf, size_t(n));
      }
    }
  }
  int status = 0;
  waitpid(c.pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
  return r;
}

Result run(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
  return finish(spawn(args, env));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

size_t count_of(const std::string& s, const std::string& part) {
  size_t n = 0;
  for (size_t p = s.find(part); p != std::string::npos; p = s.find(part, p + 1)) ++n;
  return n;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "wquant-cli-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // An earlier --keep-split run's three shards in out/ (Q8_0 of the split 192 fixture,
  // m-0000K-of-00003.gguf): their paths, and their bytes in `before`.
  std::vector<std::string> earlier_shards(const std::string& stories, std::vector<std::string>* before) {
    wq::test::write_gguf_fixture_split(stories, path("m"), 20);
    fs::create_directory(path("out"));
    const std::vector<std::string> shards = {path("out/q-00001-of-00003.gguf"), path("out/q-00002-of-00003.gguf"),
                                             path("out/q-00003-of-00003.gguf")};
    expect(0, {"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q8_0", "-q"});
    for (const std::string& f : shards) before->push_back(read_bytes(f));
    return shards;
  }

  // Runs and expects `code`, printing everything when it differs.
  Result expect(int code, const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
    Result r = run(args, env);
    EXPECT_EQ(r.code, code) << describe(args, r);
    return r;
  }

  json json_of(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
    const Result r = expect(0, args, env);
    try {
      return json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "stdout is not JSON (" << e.what() << "): " << describe(args, r);
      return json::object();
    }
  }

  json inspect(const std::string& file) { return json_of({"inspect", file, "--json"}); }

  static const json& tensor(const json& inspected, const std::string& name) {
    static const json none = json::object();
    for (const json& t : inspected["tensors"]) {
      if (t["name"] == name) return t;
    }
    ADD_FAILURE() << "no tensor " << name;
    return none;
  }

  std::vector<std::string> listing() const {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(dir_)) v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
  }

  std::string dir_;
};

// --- help, version ---------------------------------------------------------------------

TEST_F(Cli, VersionAndHelp) {
  Result r = expect(0, {"--version"});
  EXPECT_TRUE(contains(r.out, "wquant 0.")) << r.out;
  EXPECT_TRUE(contains(r.out, "scalar")) << r.out;
  for (const std::vector<std::string>& a : {std::vector<std::string>{"help"}, {"--help"}}) {
    r = expect(0, a);
    for (const char* part : {"quantize", "inspect", "verify", "dequantize", "bench", "Exit codes", "130", "WQUANT_ISA"}) {
      EXPECT_TRUE(contains(r.out, part)) << part << "\n" << r.out;
    }
  }
  for (const std::vector<std::string>& a : {std::vector<std::string>{"help", "quantize"}, {"quantize", "--help"}}) {
    r = expect(0, a);
    for (const char* part : {"--modelFile", "--MNNModel", "--weightQuantBits", "--weightQuantAsymmetric",
                             "--weightQuantBlock", "--compressionParamsFile", "--hqq", "--fp16", "--dry-run", "--force",
                             "--json", "--isa", "--threads", "--type", "--format", "SYMMETRIC", "' true'", "\"algo\"",
                             "\"rules\"", "does not exist", "Exit codes"}) {
      EXPECT_TRUE(contains(r.out, part)) << part << "\n" << r.out;
    }
  }
  for (const char* cmd : {"inspect", "verify", "dequantize", "bench"}) {
    r = expect(0, {"help", cmd});
    EXPECT_TRUE(contains(r.out, cmd)) << r.out;
  }
  r = expect(2, {"help", "nope"});
  EXPECT_TRUE(contains(r.err, "wquant: error: ")) << r.err;
}

TEST_F(Cli, HelpSaysMnnConvertWarnsWhenItTurnsHqqOff) {
  // MNNConvert prints "Warning, MNN Convert only support Hqq with weight asymmetric quant!
  // Disable Hqq currently" (tools/converter/source/common/cli.cpp): not silent.
  const Result r = expect(0, {"help", "quantize"});
  EXPECT_FALSE(contains(r.out, "silently")) << r.out;
  EXPECT_TRUE(contains(r.out, "turns --hqq off with a warning")) << r.out;
}

TEST_F(Cli, NoCommandAndUnknownCommandAreUsageErrors) {
  Result r = expect(2, {});
  EXPECT_TRUE(contains(r.err, "wquant: error: no command")) << r.err;
  r = expect(2, {"quantise", "a", "b"});
  EXPECT_TRUE(contains(r.err, "unknown command 'quantise'")) << r.err;
}

// --- quantize to each format, inspect, verify, dequantize -------------------------------

TEST_F(Cli, QuantizeSafetensorsToWqThenInspectVerifyDequantize) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string out = path("q.wq");
  Result r = expect(0, {"quantize", src, out, "--bits", "4", "--block", "32"});
  EXPECT_TRUE(fs::exists(out));
  for (const char* part : {"ratio", "isa ", "threads", "worst tensors by relative RMSE"}) {
    EXPECT_TRUE(contains(r.out, part)) << part << "\n" << r.out;
  }
  // A pipe gets no progress line.
  EXPECT_FALSE(contains(r.err, "\r")) << r.err;

  const json in = inspect(out);
  EXPECT_EQ(in["format"], "wq");
  EXPECT_EQ(in["tensors"].size(), 47u);
  const json& wq = tensor(in, "layers.0.attention.wq.weight");
  EXPECT_EQ(wq["kind"], "quantized");
  EXPECT_EQ(wq["shape"], json::array({64, 64}));
  EXPECT_EQ(wq["quantization"]["bits"], 4);
  EXPECT_EQ(wq["quantization"]["block"], 32);
  EXPECT_EQ(wq["quantization"]["asym"], false);
  // 172 columns: block 32 does not divide, channel-wise instead.
  EXPECT_EQ(tensor(in, "layers.0.feed_forward.w2.weight")["quantization"]["channel_wise"], true);
  EXPECT_EQ(tensor(in, "layers.0.attention_norm.weight")["kind"], "float");
  EXPECT_GT(in["totals"]["quantized"]["tensors"], 30);

  r = expect(0, {"inspect", out});
  EXPECT_TRUE(contains(r.out, "layers.0.attention.wq.weight")) << r.out;
  EXPECT_TRUE(contains(r.out, "4-bit sym block 32")) << r.out;
  EXPECT_TRUE(contains(r.out, "totals:")) << r.out;

  const json v = json_of({"verify", src, out, "--json"});
  EXPECT_EQ(v["summary"]["tensors_compared"], 47);
  EXPECT_GT(v["summary"]["rel_rmse"].get<double>(), 0.0);
  EXPECT_LT(v["summary"]["rel_rmse"].get<double>(), 0.2);
  ASSERT_FALSE(v["tensors"].empty());
  for (size_t i = 1; i < v["tensors"].size(); ++i) {
    EXPECT_GE(v["tensors"][i - 1]["rel_rmse"].get<double>(), v["tensors"][i]["rel_rmse"].get<double>()) << "worst first";
  }
  EXPECT_TRUE(v["only_in_float"].empty());
  r = expect(0, {"verify", src, out});
  EXPECT_TRUE(contains(r.out, "summary: 47 tensors compared")) << r.out;
  r = expect(0, {"verify", src, out, "--top", "3"});
  EXPECT_TRUE(contains(r.out, "(44 more")) << r.out;

  // dequantize: float safetensors whose error against the source is the .wq's error.
  const std::string deq = path("deq.safetensors");
  expect(0, {"dequantize", out, deq});
  const json d = inspect(deq);
  EXPECT_EQ(d["format"], "safetensors");
  EXPECT_EQ(tensor(d, "layers.0.attention.wq.weight")["type"], "F32");
  const json v2 = json_of({"verify", src, deq, "--json"});
  EXPECT_DOUBLE_EQ(v2["summary"]["rel_rmse"].get<double>(), v["summary"]["rel_rmse"].get<double>());
  const std::string deq16 = path("deq16.safetensors");
  expect(0, {"dequantize", out, deq16, "--fp16"});
  EXPECT_EQ(tensor(inspect(deq16), "layers.0.attention.wq.weight")["type"], "F16");
  const std::string deqbf = path("deqbf.safetensors");
  expect(0, {"dequantize", out, deqbf, "--bf16"});
  EXPECT_EQ(tensor(inspect(deqbf), "layers.0.attention.wq.weight")["type"], "BF16");
  r = expect(2, {"dequantize", out, path("deq.wq")});
  EXPECT_TRUE(contains(r.err, "safetensors")) << r.err;
  r = expect(4, {"dequantize", out, deq});
  EXPECT_TRUE(contains(r.err, "--force")) << r.err;
  expect(0, {"dequantize", out, deq, "--force", "--quiet"});
}

TEST_F(Cli, QuantizeToSafetensorsOutput) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string out = path("q.safetensors");
  expect(0, {"quantize", src, out, "--bits", "3", "--asym", "--fp16", "--quiet"});
  const json in = inspect(out);
  EXPECT_EQ(in["format"], "safetensors");
  const json& t = tensor(in, "layers.2.attention.wk.weight");
  EXPECT_EQ(t["kind"], "quantized");
  EXPECT_EQ(t["quantization"]["bits"], 3);
  EXPECT_EQ(t["quantization"]["asym"], true);
  EXPECT_EQ(t["quantization"]["fp16"], true);
  EXPECT_EQ(t["quantization"]["channel_wise"], true);
  const json v = json_of({"verify", src, out, "--json"});
  EXPECT_EQ(v["summary"]["tensors_compared"], 47);
}

TEST_F(Cli, QuantizeGgufToEachGgufType) {
  WQ_REQUIRE_SHARED(src, kStoriesGguf);
  for (const char* type : {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}) {
    SCOPED_TRACE(type);
    const std::string out = path(std::string("m-") + type + ".gguf");
    expect(0, {"quantize", src, out, "--type", type});
    const json in = inspect(out);
    EXPECT_EQ(in["format"], "gguf");
    const json& q = tensor(in, "blk.0.attn_q.weight");
    EXPECT_EQ(q["kind"], "ggml");
    EXPECT_EQ(q["type"], type);
    EXPECT_EQ(tensor(in, "blk.0.attn_norm.weight")["kind"], "float");
    const json v = json_of({"verify", src, out, "--json"});
    EXPECT_EQ(v["summary"]["tensors_compared"], 47);
    EXPECT_LT(v["summary"]["rel_rmse"].get<double>(), 0.2);
  }
  // The type follows --bits when --type is absent; HQQ takes the type with a minimum.
  expect(0, {"quantize", src, path("b8.gguf"), "--bits", "8"});
  EXPECT_EQ(tensor(inspect(path("b8.gguf")), "blk.1.attn_k.weight")["type"], "Q8_0");
  expect(0, {"quantize", src, path("hqq.gguf"), "--hqq"});
  EXPECT_EQ(tensor(inspect(path("hqq.gguf")), "blk.1.attn_k.weight")["type"], "Q4_1");
  Result r = expect(2, {"quantize", src, path("x.gguf"), "--type", "Q4_0", "--hqq"});
  EXPECT_TRUE(contains(r.err, "Q4_1")) << r.err;
  r = expect(2, {"quantize", src, path("x.gguf"), "--bits", "3"});
  EXPECT_TRUE(contains(r.err, "GGUF")) << r.err;
  r = expect(2, {"quantize", src, path("x.gguf"), "--block", "64"});
  EXPECT_TRUE(contains(r.err, "32")) << r.err;
  EXPECT_FALSE(fs::exists(path("x.gguf")));
}

// llama.cpp's CPU backend needs 1-D norm weights in f32: --fp16 keeps them so in GGUF
// output, while 2-D kept tensors (the 172-wide FFN ones of stories260K) become F16; without
// --fp16 those stay in the source's F32.
TEST_F(Cli, GgufFp16KeepsNormsF32) {
  WQ_REQUIRE_SHARED(src, kStoriesGguf);
  expect(0, {"quantize", src, path("f32.gguf"), "--type", "Q4_0"});
  EXPECT_EQ(tensor(inspect(path("f32.gguf")), "blk.0.ffn_down.weight")["type"], "F32");
  expect(0, {"quantize", src, path("f16.gguf"), "--type", "Q4_0", "--fp16"});
  const json in = inspect(path("f16.gguf"));
  EXPECT_EQ(tensor(in, "blk.0.attn_norm.weight")["type"], "F32");
  EXPECT_EQ(tensor(in, "output_norm.weight")["type"], "F32");
  EXPECT_EQ(tensor(in, "blk.0.ffn_down.weight")["type"], "F16");
  EXPECT_EQ(tensor(in, "blk.0.attn_q.weight")["type"], "Q4_0");
}

TEST_F(Cli, GgufOutputNeedsGgufInputAndTypeNeedsGguf) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  Result r = expect(2, {"quantize", src, path("x.gguf")});
  EXPECT_TRUE(contains(r.err, "GGUF input")) << r.err;
  r = expect(2, {"quantize", src, path("x.wq"), "--type", "Q4_0"});
  EXPECT_TRUE(contains(r.err, path("x.wq") + ": --type applies to GGUF output only")) << r.err;
  // llama-quantize's options for another output are named as given.
  r = expect(2, {"quantize", src, path("x.wq"), "--imatrix", "im.dat"});
  EXPECT_TRUE(contains(r.err, path("x.wq") + ": --imatrix applies to GGUF output only")) << r.err;
  r = expect(2, {"quantize", src, path("x.safetensors"), "--pure", "--allow-requantize", "--tensor-type", "attn_v=q8_0"});
  EXPECT_TRUE(contains(r.err, ": --pure, --allow-requantize and --tensor-type apply to GGUF output only")) << r.err;
  r = expect(2, {"quantize", src, path("x.onnx")});  // ONNX output rewrites an ONNX input's graph
#ifdef WQUANT_HAVE_ONNX
  EXPECT_TRUE(contains(r.err, "ONNX output needs an ONNX model")) << r.err;
#else  // the aarch64 cross build (README): the same exit code, and it says why
  EXPECT_TRUE(contains(r.err, "no ONNX support")) << r.err;
#endif
  r = expect(2, {"quantize", src, path("x.tflite")});
  EXPECT_TRUE(contains(r.err, "--format")) << r.err;
  // --format overrides the extension.
  expect(0, {"quantize", src, path("x.bin"), "--format", "wq", "--quiet"});
  EXPECT_EQ(inspect(path("x.bin"))["format"], "wq");
}

TEST_F(Cli, VerifyAcrossFormatsSaysWhichTensorsAreUnmatched) {
  WQ_REQUIRE_SHARED(st, kStoriesSt);
  WQ_REQUIRE_SHARED(gguf, kStoriesGguf);
  const Result r = expect(3, {"verify", st, gguf});
  EXPECT_TRUE(contains(r.err, "are not in")) << r.err;
  EXPECT_TRUE(contains(r.err, "tok_embeddings.weight")) << r.err;
  EXPECT_TRUE(contains(r.err, "token_embd.weight")) << r.err;
  EXPECT_TRUE(contains(r.err, "no tensor name in common")) << r.err;
}

// --- the acceptance case: MNNConvert spellings give identical bytes ----------------------

TEST_F(Cli, MnnSpellingsGiveIdenticalBytes) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string ours = path("ours.wq");
  Result r = expect(0, {"quantize", src, ours, "--bits", "4", "--block", "32", "--hqq"});
  EXPECT_EQ(count_of(r.err, "implies asymmetric"), 1u) << r.err;
  const std::string expected = read_bytes(ours);
  ASSERT_FALSE(expected.empty());
  const std::vector<std::vector<std::string>> variants = {
      {"--modelFile", src, "--MNNModel", path("m1.wq"), "--weightQuantBits", "4", "--weightQuantBlock", "32", "--hqq"},
      {"--modelFile", src, "--MNNModel", path("m2.wq"), "--weightQuantBits", "4", "--weightQuantBlock", "32", "--hqq",
       "--weightQuantAsymmetric", "1"},
      {"--modelFile", src, "--MNNModel", path("m3.wq"), "--weightQuantBits", "4", "--weightQuantBlock", "32", "--hqq",
       "--weightQuantAsymmetric", "true"},
      {"--modelFile", src, "--MNNModel", path("m4.wq"), "--weightQuantBits=4", "--weightQuantBlock=32",
       "--weightQuantAsymmetric=1", "--hqq"},
      {"-f", "MNN", "--modelFile", src, "--MNNModel", path("m5.wq"), "--weightQuantAsymmetric", "--weightQuantBits",
       "4", "--hqq", "--weightQuantBlock", "32"},
      {"quantize", "--modelFile", src, "--MNNModel", path("m6.wq"), "--weightQuantBits", "4", "--weightQuantBlock",
       "32", "--hqq"},
      // MNNConvert's model flag: accepted, and nothing changes.
      {"--modelFile", src, "--MNNModel", path("m7.wq"), "--weightQuantBits", "4", "--weightQuantBlock", "32", "--hqq",
       "--bizCode", "biz"},
  };
  for (size_t i = 0; i < variants.size(); ++i) {
    SCOPED_TRACE(i);
    expect(0, variants[i]);
    // Each variant's --MNNModel is the argument after "--MNNModel".
    const auto out = std::find(variants[i].begin(), variants[i].end(), "--MNNModel") + 1;
    EXPECT_TRUE(read_bytes(*out) == expected) << "variant " << i + 1;
  }
  const json in = inspect(ours);
  const json& q = tensor(in, "layers.3.attention.wo.weight")["quantization"];
  EXPECT_EQ(q["hqq"], true);
  EXPECT_EQ(q["asym"], true);
  EXPECT_EQ(q["block"], 32);
  // MNNConvert's trap, not copied: asymmetric explicitly off contradicts --hqq.
  r = expect(2, {"--modelFile", src, "--MNNModel", path("bad.wq"), "--weightQuantAsymmetric", "0", "--hqq"});
  EXPECT_TRUE(contains(r.err, "asymmetric")) << r.err;
}

// The .wq preamble as the README gives it: WQUANT01, u32 version 1, u32 0, u64 header
// offset 64, u64 header size, u64 data offset (4 KiB aligned, past the header), 24 zero
// bytes; the flatbuffers header's file identifier WQNT.
TEST_F(Cli, WqPreambleIsAsDocumented) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  expect(0, {"quantize", src, path("m.wq"), "-q"});
  const std::string b = read_bytes(path("m.wq"));
  ASSERT_GE(b.size(), 128u);
  auto u32 = [&](size_t at) { uint32_t v; std::memcpy(&v, b.data() + at, 4); return v; };
  auto u64 = [&](size_t at) { uint64_t v; std::memcpy(&v, b.data() + at, 8); return v; };
  EXPECT_EQ(b.substr(0, 8), "WQUANT01");
  EXPECT_EQ(u32(8), 1u);
  EXPECT_EQ(u32(12), 0u);
  EXPECT_EQ(u64(16), 64u);
  const uint64_t header = u64(24), data = u64(32);
  EXPECT_GT(header, 0u);
  EXPECT_GE(data, 64 + header);
  EXPECT_EQ(data % 4096, 0u);
  EXPECT_LE(data, b.size());
  EXPECT_EQ(b.substr(40, 24), std::string(24, '\0'));
  EXPECT_EQ(b.substr(64 + 4, 4), "WQNT");
}

TEST_F(Cli, FrameworkFlagIsValidatedAndExplainedWithVerbose) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  Result r = expect(0, {"-f", "ONNX", "--modelFile", src, "--MNNModel", path("a.wq"), "--verbose"});
  EXPECT_TRUE(contains(r.err, "informative")) << r.err;
  EXPECT_TRUE(contains(r.out, "stored as")) << r.out;  // --verbose: the per-tensor table
  r = expect(0, {"-f", "ONNX", "--modelFile", src, "--MNNModel", path("b.wq")});
  EXPECT_FALSE(contains(r.err, "informative")) << r.err;
  r = expect(2, {"-f", "KERAS", "--modelFile", src, "--MNNModel", path("c.wq")});
  EXPECT_TRUE(contains(r.err, "-f")) << r.err;
  EXPECT_FALSE(fs::exists(path("c.wq")));
}

// --- params files -------------------------------------------------------------------------

void write_synthetic_safetensors(const std::string& file, int tensors, int rows, int cols);  // (below)

TEST_F(Cli, ParamsRulesChangeTheRightTensors) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string params = path("params.json");
  write_bytes(params, R"({"rules": [
      {"match": "layers.0.*", "bits": 8},
      {"match": "tok_embeddings*", "skip": true},
      {"match": "layers.4.feed_forward.w[13].weight", "asym": true, "block": 16}]})");
  const std::string out = path("p.wq");
  const Result r = expect(0, {"quantize", src, out, "--bits", "4", "--block", "32", "--params", params});
  EXPECT_FALSE(contains(r.err, "matches no tensor")) << r.err;
  const json in = inspect(out);
  EXPECT_EQ(tensor(in, "layers.0.attention.wq.weight")["quantization"]["bits"], 8);
  EXPECT_EQ(tensor(in, "layers.0.feed_forward.w1.weight")["quantization"]["bits"], 8);
  EXPECT_EQ(tensor(in, "layers.1.attention.wq.weight")["quantization"]["bits"], 4);
  EXPECT_EQ(tensor(in, "layers.0.attention_norm.weight")["kind"], "float");  // 1-D stays float
  EXPECT_EQ(tensor(in, "tok_embeddings.weight")["kind"], "float");
  const json& w1 = tensor(in, "layers.4.feed_forward.w1.weight")["quantization"];
  EXPECT_EQ(w1["asym"], true);
  EXPECT_EQ(w1["block"], 16);
  EXPECT_EQ(w1["bits"], 4);
  EXPECT_EQ(tensor(in, "layers.4.feed_forward.w2.weight")["quantization"]["asym"], false);
  EXPECT_EQ(tensor(in, "layers.3.feed_forward.w1.weight")["quantization"]["block"], 32);
  EXPECT_TRUE(read_bytes(params).find("layers.0.*") != std::string::npos) << "an existing params file is not rewritten";
}

TEST_F(Cli, ParamsRuleThatMatchesNothingIsReported) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string params = path("params.json");
  write_bytes(params, R"({"rules": [{"match": "model.layers.*", "bits": 8}]})");
  const Result r = expect(0, {"quantize", src, path("o.wq"), "--params", params});
  EXPECT_TRUE(contains(r.err, "matches no tensor")) << r.err;
}

TEST_F(Cli, MnnCompressionParamsFileChangesTheRightTensors) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string params = path("mnn.json");
  write_bytes(params, R"({"version": "0.0.0", "algo": [{"type": "QUANTIZE", "quantParams": {"layer": [
      {"opName": "layers.1.attention.wv", "weight": [{"name": "layers.1.attention.wv", "bits": 8, "asymmetric": true,
                                                      "blockSize": 32}]},
      {"opName": "layers.2.attention.wq", "weight": [{"bits": 0}]},
      {"opName": "layers.2.attention.wk.weight", "weight": [{"bits": 2, "blockSize": -1}]}]}}]})");
  const std::string out = path("mnn.wq");
  expect(0, {"--modelFile", src, "--MNNModel", out, "--weightQuantBits", "4", "--compressionParamsFile", params});
  const json in = inspect(out);
  const json& wv = tensor(in, "layers.1.attention.wv.weight")["quantization"];
  EXPECT_EQ(wv["bits"], 8);
  EXPECT_EQ(wv["asym"], true);
  EXPECT_EQ(wv["block"], 32);
  EXPECT_EQ(tensor(in, "layers.2.attention.wq.weight")["kind"], "float");
  const json& wk = tensor(in, "layers.2.attention.wk.weight")["quantization"];
  EXPECT_EQ(wk["bits"], 2);
  EXPECT_EQ(wk["channel_wise"], true);
  const json& other = tensor(in, "layers.1.attention.wk.weight")["quantization"];
  EXPECT_EQ(other["bits"], 4);
  EXPECT_EQ(other["asym"], false);
  EXPECT_EQ(other["channel_wise"], true);
}

TEST_F(Cli, ParamsFileIsWrittenWhenAbsentAndRerunningWithItGivesIdenticalBytes) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string params = path("used.json");
  const std::string first = path("first.wq");
  Result r = expect(0, {"quantize", src, first, "--bits", "4", "--block", "32", "--hqq", "--compressionParamsFile",
                        params});
  ASSERT_TRUE(fs::exists(params)) << r.err;
  EXPECT_TRUE(contains(r.err, "wrote the parameters used to " + params)) << r.err;
  const json used = json::parse(read_bytes(params));
  EXPECT_EQ(used["defaults"]["bits"], 4);
  EXPECT_EQ(used["defaults"]["hqq"], true);
  EXPECT_EQ(used["defaults"]["hqq_stop"], "block");
  EXPECT_GE(used["rules"].size(), 35u);  // one per quantized tensor
  // With the same flags, with no flags at all, and through --params: the same bytes.
  expect(0, {"quantize", src, path("second.wq"), "--bits", "4", "--block", "32", "--hqq", "--params", params});
  expect(0, {"quantize", src, path("third.wq"), "--params", params});
  const std::string expected = read_bytes(first);
  EXPECT_TRUE(read_bytes(path("second.wq")) == expected);
  EXPECT_TRUE(read_bytes(path("third.wq")) == expected);
  // An edited file changes just what was edited.
  json edited = used;
  for (json& rule : edited["rules"]) {
    if (rule["match"] == "layers.2.attention.wo.weight") rule["bits"] = 6;
  }
  write_bytes(params, edited.dump());
  expect(0, {"quantize", src, path("edited.wq"), "--params", params});
  const json in = inspect(path("edited.wq"));
  EXPECT_EQ(tensor(in, "layers.2.attention.wo.weight")["quantization"]["bits"], 6);
  EXPECT_EQ(tensor(in, "layers.2.attention.wq.weight")["quantization"]["bits"], 4);
}

TEST_F(Cli, BadParamsFilesAreUsageErrorsNamingTheEntry) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string params = path("bad.json");
  write_bytes(params, R"({"rules": [{"match": "layers.*", "bits": 12}]})");
  Result r = expect(2, {"quantize", src, path("o.wq"), "--params", params});
  EXPECT_TRUE(contains(r.err, "wquant: error: " + params + ": rules[0].bits")) << r.err;
  write_bytes(params, "{ not json");
  r = expect(2, {"quantize", src, path("o.wq"), "--params", params});
  EXPECT_TRUE(contains(r.err, "not valid JSON")) << r.err;
  r = expect(2, {"quantize", src, path("o.wq"), "--params", path("o.wq")});
  EXPECT_TRUE(contains(r.err, "same file")) << r.err;
  EXPECT_FALSE(fs::exists(path("o.wq")));
}

// Each key of a params file means one thing on each output or is refused: on GGUF output a
// rule's bits / block / asym choose the type as --bits / --block / --asym do (bits 8 gave
// Q4_0, without a word), and beside a "type" must agree with it; "type" applies to GGUF
// output only (on .wq it was dropped, and a rule keeping a tensor F16 quantized it).
TEST_F(Cli, ParamsKeysMeanOneThingOnEachOutputOrAreRefused) {
  WQ_REQUIRE_SHARED(gguf, kStoriesGguf);
  const std::string p = path("p.json");
  write_bytes(p, R"({"rules": [{"match": "blk.0.attn_q.weight", "bits": 8},
                               {"match": "blk.0.attn_k.weight", "bits": 5, "asym": true},
                               {"match": "blk.1.attn_k.weight", "type": "Q5_0", "bits": 5, "block": 32}]})");
  expect(0, {"quantize", gguf, path("r.gguf"), "--params", p, "-q"});
  const json in = inspect(path("r.gguf"));
  EXPECT_EQ(tensor(in, "blk.0.attn_q.weight")["type"], "Q8_0");
  EXPECT_EQ(tensor(in, "blk.0.attn_k.weight")["type"], "Q5_1");
  EXPECT_EQ(tensor(in, "blk.1.attn_k.weight")["type"], "Q5_0");
  EXPECT_EQ(tensor(in, "blk.1.attn_q.weight")["type"], "Q4_0");
  // The run's own asym is the rule's base, as for --bits 5 --asym.
  write_bytes(p, R"({"rules": [{"match": "blk.0.attn_q.weight", "bits": 5}]})");
  expect(0, {"quantize", gguf, path("a.gguf"), "--asym", "--params", p, "-q"});
  EXPECT_EQ(tensor(inspect(path("a.gguf")), "blk.0.attn_q.weight")["type"], "Q5_1");
  // Field by field over the rules that match, as on every output: bits 5 from one, asym
  // from another give Q5_1 (each rule chose a type on its own: Q4_1).
  write_bytes(p, R"({"rules": [{"match": "blk.*", "bits": 5}, {"match": "blk.0.attn_q.weight", "asym": true}]})");
  expect(0, {"quantize", gguf, path("f.gguf"), "--params", p, "-q"});
  const json f = inspect(path("f.gguf"));
  EXPECT_EQ(tensor(f, "blk.0.attn_q.weight")["type"], "Q5_1");
  EXPECT_EQ(tensor(f, "blk.0.attn_k.weight")["type"], "Q5_0");
  // What a rule leaves out comes from the tensor's type, whatever chose it (--type Q8_0 with
  // a rule's block 32 stays Q8_0, where it became Q4_0; Q5_1 with bits 4 is Q4_1, and so is
  // --hqq's Q4_1 with bits 5 Q5_1); a rule that keeps the tensor float sets no type.
  const std::vector<std::tuple<std::vector<std::string>, std::string, std::string>> kept = {
      {{"--type", "Q8_0"}, R"({"rules": [{"match": "blk.0.attn_q.weight", "block": 32}]})", "Q8_0"},
      {{"--type", "Q5_1"}, R"({"rules": [{"match": "blk.0.attn_q.weight", "bits": 4}]})", "Q4_1"},
      {{"--hqq"}, R"({"rules": [{"match": "blk.0.attn_q.weight", "bits": 5}]})", "Q5_1"},
      {{}, R"({"rules": [{"match": "blk.0.attn_q.weight", "skip": true, "bits": 3}]})", "F32"},
      {{}, R"({"rules": [{"match": "blk.0.attn_q.weight", "bits": 0, "block": 64}]})", "F32"}};
  for (const auto& [flags, text, type] : kept) {
    write_bytes(p, text);
    std::vector<std::string> args = {"quantize", gguf, path("k.gguf"), "--params", p, "--force", "-q"};
    args.insert(args.end(), flags.begin(), flags.end());
    expect(0, args);
    EXPECT_EQ(tensor(inspect(path("k.gguf")), "blk.0.attn_q.weight")["type"], type) << text;
  }
  // What no GGUF type stores, and a type a rule names that the fields contradict.
  const std::vector<std::pair<std::string, std::string>> refused = {
      {R"({"rules": [{"match": "blk.0.attn_q.weight", "bits": 3}]})", "rules[0] \"blk.0.attn_q.weight\""},
      {R"({"rules": [{"match": "blk.*", "block": 64}]})", "blocks of 32 weights"},
      {R"({"rules": [{"match": "blk.*", "bits": 8, "asym": true}]})", "no asymmetric 8-bit type"},
      {R"({"rules": [{"match": "blk.*", "type": "Q8_0", "bits": 4}]})", "bits 4 (" + p + ": rules[0] \"blk.*\"): disagrees with the type Q8_0"},
      {R"({"rules": [{"match": "blk.*", "type": "Q8_0"}, {"match": "blk.*", "asym": true}]})", "disagrees with the type Q8_0"},
      {R"({"rules": [{"match": "blk.*", "type": "F16", "bits": 8}]})", "(a float type: kept float)"}};
  for (const auto& [text, why] : refused) {
    write_bytes(p, text);
    const Result r = expect(2, {"quantize", gguf, path("x.gguf"), "--params", p});
    EXPECT_TRUE(contains(r.err, "(" + p + ": rules[")) << r.err;
    EXPECT_TRUE(contains(r.err, why)) << r.err;
  }
  // "type" on another output: refused as --type is, in a rule or in the defaults.
  for (const char* text : {R"({"rules": [{"match": "blk.0.attn_q.weight", "type": "F16"}]})",
                           R"({"defaults": {"type": "Q8_0"}})"}) {
    write_bytes(p, text);
    for (const char* out : {"x.wq", "x.safetensors"}) {
      const Result r = expect(2, {"quantize", gguf, path(out), "--params", p});
      EXPECT_TRUE(contains(r.err, "applies to GGUF output only")) << r.err;
    }
  }
  EXPECT_FALSE(fs::exists(path("x.gguf")) || fs::exists(path("x.wq")) || fs::exists(path("x.safetensors")));
  // A setting of the file's defaults is named as the file's, not as a flag never given.
  write_bytes(p, R"({"defaults": {"type": "Q4_K_M", "bits": 8}})");
  const Result r = expect(2, {"quantize", gguf, path("x.gguf"), "--params", p});
  EXPECT_TRUE(contains(r.err, p + " (defaults): \"type\" Q4_K_M sets every tensor's type")) << r.err;
  EXPECT_TRUE(contains(r.err, p + " (defaults): \"bits\" has nothing to set there")) << r.err;
}

// A rule naming a tensor it cannot quantize says so (it matches, so no "matches no tensor"
// warning came, and the tensor stayed as it was without a word), and a rule's "asym":
// false is not overruled by --hqq without a word: refused, as the pair is on the command
// line (MNN's form included, whose layers cannot say "hqq").
TEST_F(Cli, RulesThatCannotApplySayWhy) {
  WQ_REQUIRE_SHARED(st, kStoriesSt);
  const std::string p = path("p.json");
  write_bytes(p, R"({"rules": [{"match": "layers.0.attention_norm.weight", "bits": 8}]})");
  Result r = expect(0, {"quantize", st, path("a.wq"), "--params", p});
  EXPECT_TRUE(contains(r.err, "layers.0.attention_norm.weight: " + p + ": rules[0] \"layers.0.attention_norm.weight\" asks "
                              "to quantize it, but it is kept float")) << r.err;
  EXPECT_EQ(tensor(inspect(path("a.wq")), "layers.0.attention_norm.weight")["kind"], "float");
  // (A glob over many tensors says nothing of the ones it cannot quantize.)
  write_bytes(p, R"({"rules": [{"match": "layers.0.*", "bits": 8}]})");
  r = expect(0, {"quantize", st, path("b.wq"), "--params", p});
  EXPECT_FALSE(contains(r.err, "asks to quantize it")) << r.err;
  write_bytes(p, R"({"rules": [{"match": "layers.0.attention.wq.weight", "asym": false}]})");
  r = expect(2, {"quantize", st, path("c.wq"), "--hqq", "--params", p});
  EXPECT_TRUE(contains(r.err, "layers.0.attention.wq.weight: \"asym\": false (" + p + ": rules[0]")) << r.err;
  EXPECT_TRUE(contains(r.err, "HQQ, which is always asymmetric")) << r.err;
  write_bytes(p, R"({"algo": [{"type": "QUANTIZE", "quantParams": {"layer": [
      {"opName": "layers.0.attention.wq", "weight": [{"bits": 4, "asymmetric": false}]}]}}]})");
  r = expect(2, {"quantize", st, path("d.wq"), "--hqq", "--compressionParamsFile", p});
  EXPECT_TRUE(contains(r.err, "HQQ, which is always asymmetric")) << r.err;
  EXPECT_FALSE(fs::exists(path("c.wq")) || fs::exists(path("d.wq")));
  WQ_REQUIRE_SHARED(gguf, kStoriesGguf);
  write_bytes(p, R"({"rules": [{"match": "blk.0.attn_norm.weight", "skip": false}]})");
  r = expect(0, {"quantize", gguf, path("e.gguf"), "--params", p});
  EXPECT_TRUE(contains(r.err, "blk.0.attn_norm.weight: " + p + ": rules[0] \"blk.0.attn_norm.weight\" asks to quantize "
                              "it, but it keeps its type F32")) << r.err;
}

// A params file that is no file to read or write is refused in one line, with the exit
// code of its kind: an endless device (it was read until memory ran out), a symbolic-link
// loop (an internal error, exit 1), a dangling link (whose message offered --force, which
// never applies to it), a top-level key nothing reads.
TEST_F(Cli, ParamsPathsThatAreNoParamsFilesAreRefusedInOneLine) {
  write_synthetic_safetensors(path("m.safetensors"), 1, 8, 32);
  Result r = expect(2, {"quantize", path("m.safetensors"), path("o.wq"), "--params", "/dev/zero"});
  EXPECT_TRUE(contains(r.err, "/dev/zero: longer than 64 MiB: not a params file")) << r.err;
  // (The same bound on a file, which a reader without it reads whole and fails otherwise.)
  write_bytes(path("big.json"), "{");
  fs::resize_file(path("big.json"), (size_t(64) << 20) + 1);
  r = expect(2, {"quantize", path("m.safetensors"), path("o.wq"), "--params", path("big.json")});
  EXPECT_TRUE(contains(r.err, path("big.json") + ": longer than 64 MiB: not a params file")) << r.err;
  fs::create_symlink(path("loop.json"), path("loop.json"));
  r = expect(4, {"quantize", path("m.safetensors"), path("o.wq"), "--params", path("loop.json")});
  EXPECT_TRUE(contains(r.err, path("loop.json") + ": cannot be read or written as the params file")) << r.err;
  fs::create_symlink(path("missing.json"), path("dangling.json"));
  r = expect(4, {"quantize", path("m.safetensors"), path("o.wq"), "--params", path("dangling.json"), "--force"});
  EXPECT_TRUE(contains(r.err, "remove the link, or name another params file")) << r.err;
  write_bytes(path("w.json"), R"({"wquant": {}, "defaults": {"bits": 5}})");
  r = expect(2, {"quantize", path("m.safetensors"), path("o.wq"), "--params", path("w.json")});
  EXPECT_TRUE(contains(r.err, path("w.json") + ": wquant: unknown key")) << r.err;
  EXPECT_FALSE(fs::exists(path("o.wq")));
}

// What goes to stdout is the command's result: a write that fails (a full disk) fails the
// command, exit 4 (inspect --json exited 0 with a truncated document).
TEST_F(Cli, StandardOutputThatCannotBeWrittenFailsTheCommand) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "/dev/full is absent";
  // (200 tensors: a document past stdio's usual 4-8 KiB buffer, whose cause was lost.)
  write_synthetic_safetensors(path("m.safetensors"), 200, 8, 32);
  const std::string bin = std::string(WQUANT_BIN_LAUNCHER) + " " + WQUANT_BIN;
  const std::string cmd = bin + " inspect --json " + path("m.safetensors") + " > /dev/full 2> " + path("err.txt");
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 4);
  EXPECT_TRUE(contains(read_bytes(path("err.txt")), "wquant: error: standard output: cannot be written: No space left on device"))
      << read_bytes(path("err.txt"));
}

// --- dry run, JSON, ISA, threads, verbosity ----------------------------------------------

TEST_F(Cli, DryRunWritesNothingAndPredictsTheExactSize) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const auto before = listing();
  const std::string out = path("dry.wq");
  Result r = expect(0, {"quantize", src, out, "--bits", "4", "--block", "32", "--dry-run", "--params",
                        path("never.json")});
  EXPECT_TRUE(contains(r.out, "nothing written")) << r.out;
  EXPECT_TRUE(contains(r.out, "layers.0.feed_forward.w2.weight")) << r.out;
  EXPECT_TRUE(contains(r.err, "does not divide")) << r.err;
  EXPECT_EQ(listing(), before);
  const json plan = json_of({"quantize", src, out, "--bits", "4", "--block", "32", "--dry-run", "--json"});
  EXPECT_EQ(listing(), before);
  EXPECT_EQ(plan["dry_run"], true);
  EXPECT_EQ(plan["tensors"].size(), 47u);
  const uint64_t planned = plan["planned_output_bytes"];
  expect(0, {"quantize", src, out, "--bits", "4", "--block", "32", "--quiet"});
  EXPECT_EQ(fs::file_size(out), planned);
  // OUT is checked as the run checks it (a dry run said yes where the run then said no).
  r = expect(4, {"quantize", src, out, "--dry-run"});
  EXPECT_TRUE(contains(r.err, "already exists")) << r.err;
  r = expect(4, {"quantize", src, src, "--dry-run", "--force", "--format", "wq"});
  EXPECT_TRUE(contains(r.err, "never overwrites its input")) << r.err;
  r = expect(4, {"quantize", src, path("no/such/dir/x.wq"), "--dry-run"});
  EXPECT_TRUE(contains(r.err, "does not exist")) << r.err;
  // And so is the params file the run would write.
  r = expect(4, {"quantize", src, path("y.wq"), "--dry-run", "--params", path("no/such/dir/p.json")});
  EXPECT_TRUE(contains(r.err, path("no/such/dir/p.json") + ": the directory")) << r.err;
  EXPECT_FALSE(fs::exists(path("y.wq")));
}

TEST_F(Cli, JsonSummaryHasTheFields) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const json s = json_of({"quantize", src, path("j.wq"), "--bits", "4", "--block", "32", "--hqq", "--json"});
  for (const char* key : {"input", "output", "format", "input_bytes", "output_bytes", "compression_ratio", "seconds",
                          "bytes_per_second", "weights_per_second", "isa", "threads", "worst", "tensors", "notes",
                          "params_written", "tensors_quantized"}) {
    EXPECT_TRUE(s.contains(key)) << key << "\n" << s.dump(2);
  }
  EXPECT_EQ(s["format"], "wq");
  EXPECT_EQ(s["output_bytes"].get<uint64_t>(), fs::file_size(path("j.wq")));
  EXPECT_GT(s["compression_ratio"].get<double>(), 4.0);
  ASSERT_EQ(s["worst"].size(), 5u);
  EXPECT_GE(s["worst"][0]["error"]["rel_rmse"].get<double>(), s["worst"][4]["error"]["rel_rmse"].get<double>());
  EXPECT_EQ(s["tensors"].size(), 47u);
  const json inspected = inspect(path("j.wq"));
  EXPECT_TRUE(inspected.contains("totals"));
  const json bench = json_of({"bench", "--size", "64K", "--threads", "1", "--json"});
  EXPECT_FALSE(bench["isas"].empty());
  EXPECT_GT(bench["read_bytes_per_second"].get<double>(), 0.0);
  EXPECT_GT(bench["isas"][0]["rtn_weights_per_second"].get<double>(), 0.0);
}

// --no-metrics skips the error measurement only: the same bytes, and the report says the
// figures were not measured instead of showing none.
TEST_F(Cli, NoMetricsGivesTheSameBytesAndSaysSo) {
  WQ_REQUIRE_SHARED(st, kStoriesSt);
  WQ_REQUIRE_SHARED(gguf, kStoriesGguf);
  for (const auto& [src, ext, flags] : {std::tuple<std::string, std::string, std::vector<std::string>>{
                                            st, ".wq", {"--block", "32", "--asym"}},
                                        {st, ".wq", {"--block", "32", "--hqq", "--fp16"}},
                                        {gguf, ".gguf", {"--type", "Q4_0"}}}) {
    const std::string with = path("with" + ext), without = path("without" + ext);
    std::vector<std::string> a = {"quantize", src, with, "--json", "--force"};
    a.insert(a.end(), flags.begin(), flags.end());
    const json measured = json_of(a);
    EXPECT_EQ(measured["metrics_measured"], true);
    EXPECT_FALSE(measured["worst"].empty());
    a[2] = without;
    a.push_back("--no-metrics");
    const json skipped = json_of(a);
    EXPECT_EQ(skipped["metrics_measured"], false);
    EXPECT_TRUE(skipped["worst"].empty());
    for (const json& t : skipped["tensors"]) EXPECT_FALSE(t.contains("error")) << t.dump();
    EXPECT_TRUE(read_bytes(with) == read_bytes(without)) << ext;
    a.erase(std::find(a.begin(), a.end(), "--json"));  // the human summary, still --no-metrics
    const Result human = expect(0, a);
    EXPECT_TRUE(contains(human.out, "not measured (--no-metrics)")) << human.out;
    EXPECT_FALSE(contains(human.out, "worst tensors")) << human.out;
    // --quiet (which measures nothing: cli_args_test) writes the same bytes and says nothing.
    const std::string quiet = path("quiet" + ext);
    std::vector<std::string> q = {"quantize", src, quiet, "--quiet", "--force"};
    q.insert(q.end(), flags.begin(), flags.end());
    const Result said = expect(0, q);
    EXPECT_EQ(said.out, "");
    EXPECT_TRUE(read_bytes(with) == read_bytes(quiet)) << ext;
  }
}

// The measuring knobs of the conversion path (output through O_DIRECT, no fsync, input
// read-ahead strategies) change how bytes move, never which bytes are written.
TEST_F(Cli, IoStrategiesGiveTheSameBytes) {
  WQ_REQUIRE_SHARED(st, kStoriesSt);
  expect(0, {"quantize", st, path("ref.wq"), "--block", "32", "--asym"});
  const std::vector<std::map<std::string, std::string>> envs = {
      {{"WQUANT_OUTPUT_IO", "direct"}},
      {{"WQUANT_OUTPUT_IO", "buffered"}, {"WQUANT_NO_FSYNC", "1"}},
      {{"WQUANT_OUTPUT_IO", "direct"}, {"WQUANT_NO_FSYNC", "1"}},
      {{"WQUANT_READAHEAD", "off"}},
      {{"WQUANT_READAHEAD", "touch"}},
      {{"WQUANT_READAHEAD", "willneed"}, {"WQUANT_OUTPUT_IO", "direct"}},
  };
  for (size_t i = 0; i < envs.size(); ++i) {
    const std::string out = path("io" + std::to_string(i) + ".wq");
    expect(0, {"quantize", st, out, "--block", "32", "--asym"}, envs[i]);
    EXPECT_TRUE(read_bytes(out) == read_bytes(path("ref.wq"))) << i;
  }
  const Result r = expect(2, {"quantize", st, path("bad.wq")}, {{"WQUANT_OUTPUT_IO", "mmap"}});
  EXPECT_TRUE(contains(r.err, "WQUANT_OUTPUT_IO")) << r.err;
  const Result ra = expect(2, {"quantize", st, path("bad.wq")}, {{"WQUANT_READAHEAD", "always"}});
  EXPECT_TRUE(contains(ra.err, "WQUANT_READAHEAD")) << ra.err;
  EXPECT_FALSE(fs::exists(path("bad.wq")));
}

// WQUANT_ROW_PIECE_BYTES (measuring knob): large tensors reach the GGUF writer in row
// pieces of about that many bytes; the file and every figure printed stay the same.
TEST_F(Cli, RowPiecesGiveTheSameGgufAndFigures) {
  WQ_REQUIRE_SHARED(src, kStoriesGguf);
  const json whole = json_of({"quantize", src, path("whole.gguf"), "--type", "Q4_K_M", "--json"});
  // stories260K's rows are 256 to 688 bytes of f32: 1024-byte pieces split every matrix.
  const json pieces =
      json_of({"quantize", src, path("pieces.gguf"), "--type", "Q4_K_M", "--json"}, {{"WQUANT_ROW_PIECE_BYTES", "1024"}});
  EXPECT_TRUE(read_bytes(path("whole.gguf")) == read_bytes(path("pieces.gguf")));
  ASSERT_EQ(whole["tensors"].size(), pieces["tensors"].size());
  size_t measured = 0, ggml = 0, narrowed = 0;
  for (size_t i = 0; i < whole["tensors"].size(); ++i) {
    const json &a = whole["tensors"][i], &b = pieces["tensors"][i];
    EXPECT_EQ(a["name"], b["name"]);
    EXPECT_EQ(a["bytes_out"], b["bytes_out"]) << a["name"];
    EXPECT_EQ(a.value("error", json()), b.value("error", json())) << a["name"];
    measured += b.contains("error");
    ggml += a["action"] == "ggml";
    narrowed += a["action"] == "float" && a["what"] == "f16";  // the mix's F16 fallbacks (172-wide rows)
  }
  EXPECT_EQ(measured, ggml + narrowed) << "every quantized or narrowed tensor measured";
  EXPECT_GT(ggml, 0u);
  EXPECT_GT(narrowed, 0u);
  for (const char* bad : {"0", "1k", "-4096", "99999999999999999"}) {
    const Result r = expect(2, {"quantize", src, path("bad.gguf"), "--type", "Q4_0"}, {{"WQUANT_ROW_PIECE_BYTES", bad}});
    EXPECT_TRUE(contains(r.err, "WQUANT_ROW_PIECE_BYTES")) << r.err;
  }
  EXPECT_FALSE(fs::exists(path("bad.gguf")));
}


// A tensor stored narrower than its source (a mix's F16 fallback, --fp16) is measured as a
// quantized one is: the summary and its JSON give the figures verify gives (they were
// absent, so a lossy conversion never showed among the worst tensors).
TEST_F(Cli, NarrowedFloatTensorsAreMeasuredAsVerifyMeasuresThem) {
  WQ_REQUIRE_SHARED(src, kStoriesGguf);
  const json q = json_of({"quantize", src, path("q.gguf"), "--type", "Q4_K_M", "--json"});
  const json v = json_of({"verify", src, path("q.gguf"), "--json"});
  std::map<std::string, double> verified;
  for (const json& t : v["tensors"]) verified[t["name"]] = t["rel_rmse"];
  size_t narrowed = 0;
  for (const json& t : q["tensors"]) {
    if (t["action"] != "float" || t["what"] != "f16") continue;
    ++narrowed;
    ASSERT_TRUE(t.contains("error")) << t.dump();
    const double rel = t["error"]["rel_rmse"];
    EXPECT_GT(rel, 0.0) << t["name"];
    EXPECT_NEAR(rel, verified.at(t["name"]), 1e-12 + 1e-9 * rel) << t["name"];
  }
  EXPECT_GT(narrowed, 0u);
}

// verify's figures of a tensor are the ones quantize measured for it: both sum each row in
// float and add the rows in double (verify summed a whole tensor in 16 float sums, which
// read a 65 M-weight tensor's rmse 0.4-0.7% low, review K; here 2 M weights a tensor).
TEST_F(Cli, VerifyGivesTheFiguresQuantizeMeasured) {
  write_synthetic_safetensors(path("m.safetensors"), 2, 1024, 2048);
  const json q = json_of({"quantize", path("m.safetensors"), path("q.wq"), "--bits", "4", "--block", "64", "--json"});
  const json v = json_of({"verify", path("m.safetensors"), path("q.wq"), "--json"});
  std::map<std::string, json> verified;
  for (const json& t : v["tensors"]) verified[t["name"]] = t;
  size_t compared = 0;
  for (const json& t : q["tensors"]) {
    if (!t.contains("error")) continue;
    ++compared;
    for (const char* f : {"rel_rmse", "rmse", "snr_db"}) {
      const double a = t["error"][f], b = verified.at(t["name"])[f];
      EXPECT_NEAR(a, b, 1e-12 * std::fabs(a)) << t["name"] << " " << f;
    }
    EXPECT_EQ(t["error"]["max_abs"], verified.at(t["name"])["max_abs"]) << t["name"];
  }
  EXPECT_EQ(compared, 2u);
}

TEST_F(Cli, OutputBytesDoNotDependOnIsaOrThreads) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  Result r = expect(0, {"quantize", src, path("best.wq"), "--block", "32", "--hqq", "--threads", "2"});
  r = expect(0, {"quantize", src, path("scalar.wq"), "--block", "32", "--hqq", "--isa", "scalar", "--threads", "1"});
  EXPECT_TRUE(contains(r.out, "isa scalar, 1 threads")) << r.out;
  EXPECT_TRUE(read_bytes(path("best.wq")) == read_bytes(path("scalar.wq")));
  r = expect(0, {"quantize", src, path("env.wq"), "--block", "32", "--hqq"}, {{"WQUANT_ISA", "scalar"}});
  EXPECT_TRUE(contains(r.out, "isa scalar")) << r.out;
  EXPECT_TRUE(read_bytes(path("env.wq")) == read_bytes(path("scalar.wq")));
  r = expect(2, {"quantize", src, path("bad.wq")}, {{"WQUANT_ISA", "mmx"}});
  EXPECT_TRUE(contains(r.err, "WQUANT_ISA")) << r.err;
  r = expect(2, {"quantize", src, path("bad.wq"), "--isa", "mmx"});
  EXPECT_TRUE(contains(r.err, "--isa")) << r.err;
  for (const char* isa : {"avx2", "avx512", "neon"}) {
    wq::Isa i;
    ASSERT_TRUE(wq::parse_isa(isa, &i));
    if (wq::isa_available(i)) continue;
    r = expect(2, {"quantize", src, path("bad.wq"), "--isa", isa});
    EXPECT_TRUE(contains(r.err, "not available")) << r.err;
  }
  EXPECT_FALSE(fs::exists(path("bad.wq")));
}

TEST_F(Cli, QuietSaysNothingAndVerboseShowsThePlan) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  Result r = expect(0, {"quantize", src, path("q.wq"), "--block", "32", "--hqq", "--quiet"});
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "");
  r = expect(0, {"quantize", src, path("v.wq"), "--block", "32", "--verbose"});
  EXPECT_TRUE(contains(r.out, "layers.4.feed_forward.w3.weight")) << r.out;
  EXPECT_TRUE(contains(r.err, "threads")) << r.err;
}

TEST_F(Cli, ProgressLineOnATerminal) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) GTEST_SKIP() << "no pseudo-terminal available";
  const int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
  ASSERT_GE(slave, 0);
  Child c = spawn({"quantize", src, path("tty.wq"), "--hqq", "--isa", "scalar", "--threads", "1"}, {}, slave);
  close(slave);
  std::string tty;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(master, buf, sizeof buf);  // EIO once the child closed the terminal
    if (n <= 0) break;
    tty.append(buf, size_t(n));
  }
  close(master);
  const Result r = finish(c);
  EXPECT_EQ(r.code, 0) << r.out << tty;
  EXPECT_TRUE(contains(tty, "tensors]")) << tty;
  EXPECT_TRUE(contains(tty, "ETA")) << tty;
  EXPECT_TRUE(contains(tty, "\r")) << tty;
}

TEST_F(Cli, BenchPrintsATablePerIsa) {
  const Result r = expect(0, {"bench", "--size", "64K", "--threads", "1"});
  EXPECT_TRUE(contains(r.out, "streaming read")) << r.out;
  EXPECT_TRUE(contains(r.out, "| scalar |")) << r.out;
  EXPECT_TRUE(contains(r.out, "of read bandwidth")) << r.out;
  const Result one = expect(0, {"bench", "--size", "16K", "--isa", "scalar"});
  EXPECT_EQ(count_of(one.out, "| scalar |"), 1u) << one.out;
  expect(2, {"bench", "--size", "lots"});
}

// --threads above the CPUs the process may run on (its affinity, which children inherit:
// here narrowed to one CPU, then to two where there are two) runs that many threads, with
// a note naming --threads; within them it runs what was asked, without a note.
TEST_F(Cli, ThreadsBeyondTheUsableCpusAreCappedWithANote) {
  write_synthetic_safetensors(path("m.safetensors"), 4, 64, 256);
  cpu_set_t all;
  ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &all)) cpus.push_back(c);
  }
  ASSERT_FALSE(cpus.empty());
  for (size_t n = 1; n <= std::min<size_t>(2, cpus.size()); ++n) {
    cpu_set_t some;
    CPU_ZERO(&some);
    for (size_t i = 0; i < n; ++i) CPU_SET(cpus[i], &some);
    ASSERT_EQ(sched_setaffinity(0, sizeof some, &some), 0);
    const std::string more = std::to_string(n + 3), exact = std::to_string(n);
    const Result capped = expect(0, {"bench", "--size", "16K", "--isa", "scalar", "--threads", more, "--json"});
    const Result asked = expect(0, {"bench", "--size", "16K", "--isa", "scalar", "--threads", exact, "--json"});
    const Result every = expect(0, {"bench", "--size", "16K", "--isa", "scalar", "--json"});
    const Result quiet = expect(0, {"bench", "--size", "16K", "--isa", "scalar", "--threads", more, "--quiet"});
    // quantize caps the same way (the path the README's 8-thread e2e job takes), with the bytes
    // of the threads it runs.
    const Result q_capped = expect(0, {"quantize", path("m.safetensors"), path("capped.wq"), "--threads", more, "--force", "--json"});
    const Result q_asked = expect(0, {"quantize", path("m.safetensors"), path("asked.wq"), "--threads", exact, "--force", "--json"});
    ASSERT_EQ(sched_setaffinity(0, sizeof all, &all), 0);
    EXPECT_EQ(json::parse(q_capped.out)["threads"], int(n)) << q_capped.out;
    EXPECT_TRUE(contains(q_capped.err, "--threads " + more + ": this process may run on " + exact +
                                           (n == 1 ? " CPU; running 1 thread " : " CPUs; running " + exact + " threads ")))
        << q_capped.err;
    EXPECT_FALSE(contains(q_asked.err, "--threads")) << q_asked.err;
    EXPECT_TRUE(read_bytes(path("capped.wq")) == read_bytes(path("asked.wq")));
    EXPECT_EQ(json::parse(capped.out)["threads"], int(n)) << capped.out;
    EXPECT_TRUE(contains(capped.err, "--threads " + more + ": this process may run on " + exact)) << capped.err;
    EXPECT_EQ(json::parse(asked.out)["threads"], int(n)) << asked.out;
    EXPECT_EQ(json::parse(every.out)["threads"], int(n)) << every.out;
    EXPECT_FALSE(contains(asked.err + every.err, "--threads")) << asked.err << every.err;
    EXPECT_EQ(quiet.err, "");
  }
}

// bench --model: the scheme sweep over stories260K as JSON (every field a plot or a
// script needs), CSV (a header and one line a scheme) and a table.
TEST_F(Cli, BenchModelSweepsTheSchemes) {
  WQ_REQUIRE_SHARED(st, kStoriesSt);
  const json j = json_of({"bench", "--model", st, "--threads", "2", "--json"});
  ASSERT_TRUE(j.contains("schemes")) << j.dump(2);
  EXPECT_EQ(j["tensors"], 36);
  size_t pareto = 0;
  for (const json& r : j["schemes"]) {
    for (const char* key : {"scheme", "family", "bits", "block", "bits_per_weight", "rel_rmse", "snr_db", "max_abs",
                            "worst_tensor", "worst_rel_rmse", "tensors_kept_float", "seconds", "pareto"}) {
      EXPECT_TRUE(r.contains(key)) << key << " in " << r.dump();
    }
    EXPECT_GT(r["bits_per_weight"].get<double>(), double(r["bits"].get<int>())) << r.dump();
    pareto += r["pareto"].get<bool>();
  }
  EXPECT_GT(pareto, 0u);
  EXPECT_LT(pareto, j["schemes"].size());
  const Result csv = expect(0, {"bench", "--model", st, "--csv"});
  EXPECT_EQ(csv.out.rfind("scheme,family,bits,block,bits_per_weight,rel_rmse", 0), 0u) << csv.out.substr(0, 200);
  EXPECT_EQ(count_of(csv.out, "\n"), j["schemes"].size() + 1);
  const Result table = expect(0, {"bench", "--model", st});
  EXPECT_TRUE(contains(table.out, "| * | ")) << table.out;
  EXPECT_TRUE(contains(table.out, "Q4_0")) << table.out;
  const Result bad = expect(2, {"bench", "--csv"});
  EXPECT_TRUE(contains(bad.err, "--model")) << bad.err;
  expect(3, {"bench", "--model", path("absent.safetensors")});
}

// --- bad input, outputs that cannot be written --------------------------------------------

TEST_F(Cli, MissingInputIsBadInput) {
  const std::string missing = path("nope.safetensors");
  for (const std::vector<std::string>& a : {std::vector<std::string>{"quantize", missing, path("o.wq")},
                                            {"inspect", missing},
                                            {"verify", missing, missing},
                                            {"dequantize", missing, path("o.safetensors")}}) {
    const Result r = expect(3, a);
    EXPECT_TRUE(contains(r.err, "wquant: error: " + missing)) << r.err;
  }
  EXPECT_FALSE(fs::exists(path("o.wq")));
}

TEST_F(Cli, TruncatedInputIsBadInput) {
  WQ_REQUIRE_SHARED(st, kStoriesSt);
  WQ_REQUIRE_SHARED(gguf, kStoriesGguf);
  for (const std::string& src : {st, gguf}) {
    const std::string bytes = read_bytes(src);
    const std::string cut = path("cut" + fs::path(src).extension().string());
    write_bytes(cut, bytes.substr(0, bytes.size() / 2));
    const Result r = expect(3, {"quantize", cut, path("o.wq")});
    EXPECT_TRUE(contains(r.err, "wquant: error: " + cut)) << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << "one line: " << r.err;
    expect(3, {"inspect", cut});
  }
  write_bytes(path("junk.safetensors"), "this is not a model");
  expect(3, {"inspect", path("junk.safetensors")});
  EXPECT_FALSE(fs::exists(path("o.wq")));
}

TEST_F(Cli, UsageErrors) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string out = path("o.wq");
  struct Case {
    std::vector<std::string> extra;
    const char* says;
  } cases[] = {
      {{"--frobnicate"}, "--frobnicate"},
      {{"--bits", "9"}, "bits must be between 2 and 8"},
      {{"--weightQuantBits", "9"}, "bits must be between 2 and 8"},
      {{"--bits", "x"}, "--bits"},
      {{"--block", "0"}, "block must be"},
      {{"--block", "-3"}, "block must be"},
      {{"--weightQuantBlock", "-3"}, "block must be"},
      {{"--threads", "-1"}, "--threads"},
      {{"--hqq-kappa", "0.5", "--hqq"}, "kappa"},
      {{"--hqq-steps", "5"}, "need --hqq"},
      {{"--hqq", "--hqq-stop", "lockstep"}, "--hqq-stop"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args{"quantize", src, out};
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    const Result r = expect(2, args);
    EXPECT_TRUE(contains(r.err, "wquant: error: ")) << r.err;
    EXPECT_TRUE(contains(r.err, c.says)) << c.says << "\n" << r.err;
  }
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(Cli, BlockThatDoesNotDivideARowSaysSoOnceAndStillWorks) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string out = path("b.wq");
  const Result r = expect(0, {"quantize", src, out, "--weightQuantBlock", "16"});
  // Five w2 tensors have rows of 172: one note each, each said once.
  EXPECT_EQ(count_of(r.err, "does not divide"), 5u) << r.err;
  EXPECT_EQ(count_of(r.err, "layers.0.feed_forward.w2.weight: block 16 does not divide"), 1u) << r.err;
  const json in = inspect(out);
  EXPECT_EQ(tensor(in, "layers.0.feed_forward.w2.weight")["quantization"]["channel_wise"], true);
  EXPECT_EQ(tensor(in, "layers.0.feed_forward.w1.weight")["quantization"]["block"], 16);
  expect(0, {"verify", src, out});
}

TEST_F(Cli, OutputProblemsExitFourAndLeaveNothing) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  // A directory that does not exist.
  Result r = expect(4, {"quantize", src, path("no/such/dir/o.wq")});
  EXPECT_TRUE(contains(r.err, "does not exist")) << r.err;
  // A file where a directory is expected.
  write_bytes(path("plain"), "x");
  r = expect(4, {"quantize", src, path("plain/o.wq")});
  EXPECT_TRUE(contains(r.err, "wquant: error: " + path("plain/o.wq"))) << r.err;
  // An unwritable directory. Root ignores permission bits, so use /proc, where nobody
  // can create files.
  r = expect(4, {"quantize", src, "/proc/wquant-test-out.wq"});
  EXPECT_TRUE(contains(r.err, "/proc/wquant-test-out.wq")) << r.err;
  EXPECT_FALSE(fs::exists("/proc/wquant-test-out.wq"));
  // OUT is a directory.
  fs::create_directory(path("d.wq"));
  r = expect(4, {"quantize", src, path("d.wq")});
  EXPECT_TRUE(contains(r.err, "directory")) << r.err;
  EXPECT_EQ(listing(), (std::vector<std::string>{"d.wq", "plain"}));
}

TEST_F(Cli, ExistingOutputNeedsForce) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string out = path("o.wq");
  write_bytes(out, "precious");
  Result r = expect(4, {"quantize", src, out});
  EXPECT_TRUE(contains(r.err, "already exists")) << r.err;
  EXPECT_TRUE(contains(r.err, "--force")) << r.err;
  EXPECT_EQ(read_bytes(out), "precious");
  expect(0, {"quantize", src, out, "--force", "--quiet"});
  EXPECT_EQ(inspect(out)["format"], "wq");
  // A symbolic link to a missing file exists too (the rename would replace the link).
  const std::string link = path("dangling.wq");
  fs::create_symlink(path("nowhere/target.wq"), link);
  r = expect(4, {"quantize", src, link});
  EXPECT_TRUE(contains(r.err, "symbolic link")) << r.err;
  EXPECT_TRUE(fs::is_symlink(link));
  expect(0, {"quantize", src, link, "--force", "--quiet"});
  EXPECT_FALSE(fs::is_symlink(link));
  EXPECT_EQ(inspect(link)["format"], "wq");
}

TEST_F(Cli, TheInputIsNeverOverwritten) {
  WQ_REQUIRE_SHARED(src, kStoriesSt);
  const std::string in = path("model.safetensors");
  fs::copy_file(src, in);
  const std::string original = read_bytes(in);
  Result r = expect(4, {"quantize", in, in, "--format", "safetensors", "--force"});
  EXPECT_TRUE(contains(r.err, "is the input")) << r.err;
  // The same file by another name: a symlink and a hard link.
  fs::create_symlink(in, path("link.safetensors"));
  r = expect(4, {"quantize", in, path("link.safetensors"), "--force"});
  EXPECT_TRUE(contains(r.err, "is the input")) << r.err;
  fs::create_hard_link(in, path("hard.safetensors"));
  r = expect(4, {"--modelFile", in, "--MNNModel", path("hard.safetensors"), "--force"});
  EXPECT_TRUE(contains(r.err, "is the input")) << r.err;
  r = expect(4, {"dequantize", in, in, "--force"});
  EXPECT_TRUE(contains(r.err, "is the input")) << r.err;
  EXPECT_TRUE(read_bytes(in) == original);
}

// --- MNNConvert fidelity ------------------------------------------------------------------
// Expected values below follow MNNConvert's rules as read in alibaba/MNN:
// tools/converter/source/common/WeightQuantAndCoding.cpp (blocks),
// tools/converter/source/common/AlignDenormalizedValue.cpp (|w| < FLT_MIN -> 0),
// source/core/IDSTEncoder.hpp + 3rd_party/half/half.hpp (f16 scales, truncated).

struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// A new safetensors file with `header` written (8-byte size, JSON padded to 8 bytes),
// open for the tensor data that follows.
std::ofstream open_safetensors(const std::string& file, const json& header) {
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream f(file, std::ios::binary);
  const uint64_t n = h.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << h;
  return f;
}

void write_f32_safetensors(const std::string& file, const std::vector<NamedTensor>& tensors) {
  json header = json::object();
  uint64_t off = 0;
  for (const NamedTensor& t : tensors) {
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + t.data.size() * 4}}};
    off += t.data.size() * 4;
  }
  std::ofstream f = open_safetensors(file, header);
  for (const NamedTensor& t : tensors) f.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size() * 4));
}

// One tensor of a safetensors file, read by hand: dtype, shape and raw bytes.
struct StTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

StTensor st_tensor(const std::string& file, const std::string& name) {
  const std::string all = read_bytes(file);
  StTensor t;
  if (all.size() < 8) {
    ADD_FAILURE() << file << " is too short";
    return t;
  }
  uint64_t n = 0;
  std::memcpy(&n, all.data(), 8);
  const json h = json::parse(all.substr(8, n));
  if (!h.contains(name)) {
    ADD_FAILURE() << file << " has no tensor " << name << ": " << h.dump();
    return t;
  }
  t.dtype = h[name]["dtype"];
  t.shape = h[name]["shape"].get<std::vector<int64_t>>();
  const uint64_t b = h[name]["data_offsets"][0], e = h[name]["data_offsets"][1];
  t.bytes = all.substr(8 + n + b, e - b);
  return t;
}

std::vector<float> st_f32(const StTensor& t) {
  EXPECT_EQ(t.dtype, "F32");
  std::vector<float> v(t.bytes.size() / 4);
  std::memcpy(v.data(), t.bytes.data(), v.size() * 4);
  return v;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::vector<float> normal_weights(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

TEST_F(Cli, MnnBlockCountsInputChannelsSpansTheKernelAndNeedsAMultipleOf16) {
  const std::string in = path("conv.safetensors");
  write_f32_safetensors(in, {{"conv.weight", {8, 64, 3, 3}, normal_weights(8 * 64 * 9, 1)},
                             {"conv48.weight", {8, 48, 3, 3}, normal_weights(8 * 48 * 9, 2)},
                             {"lin.weight", {4, 96}, normal_weights(4 * 96, 3)}});
  struct Case {
    std::vector<std::string> flags;
    int64_t conv, conv48, lin;  // expected weights per block (-1: channel-wise)
  };
  // MNN: a block of B input channels holds B*kh*kw weights, used only when B >= 16,
  // B % 16 == 0 and B divides the input channels (64, 48, 96 here); else channel-wise.
  // wquant's --block counts weights along the flattened row (576, 432, 96).
  const std::vector<Case> cases = {
      {{"--weightQuantBlock", "32"}, 32 * 9, -1, 32},
      {{"--weightQuantBlock", "16"}, 16 * 9, 16 * 9, 16},
      {{"--weightQuantBlock", "24"}, -1, -1, -1},
      {{"--weightQuantBlock", "8"}, -1, -1, -1},
      {{"--weightQuantBlock", "48"}, -1, -1, 48},  // conv48: one block of 48*9, the whole row
      {{"--block", "32"}, 32, -1, 32},
      {{"--block", "24"}, 24, 24, 24},
      {{"--block", "8"}, 8, 8, 8},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    const std::string out = path("c" + std::to_string(i) + ".safetensors");
    std::vector<std::string> args{"quantize", in, out, "--bits", "4"};
    args.insert(args.end(), cases[i].flags.begin(), cases[i].flags.end());
    const Result r = expect(0, args);
    const json in_json = inspect(out);
    for (const auto& [name, cols, want] : {std::tuple<std::string, int64_t, int64_t>{"conv.weight", 576, cases[i].conv},
                                           {"conv48.weight", 432, cases[i].conv48},
                                           {"lin.weight", 96, cases[i].lin}}) {
      EXPECT_EQ(tensor(in_json, name)["quantization"]["block"], want) << name << "\n" << r.err;
      // The stored scales: one per block, [rows, cols / block].
      const StTensor s = st_tensor(out, name + ".scales");
      ASSERT_EQ(s.shape.size(), 2u);
      EXPECT_EQ(s.shape[1], want < 0 ? 1 : cols / want) << name;
    }
  }
  // The MNN spelling's fallback is said once per tensor, naming why.
  const Result r = expect(0, {"quantize", in, path("n.wq"), "--weightQuantBlock", "24"});
  EXPECT_EQ(count_of(r.err, "conv.weight: block 24 is not a multiple of 16"), 1u) << r.err;
  const Result r2 = expect(0, {"quantize", in, path("n2.wq"), "--weightQuantBlock", "32"});
  EXPECT_EQ(count_of(r2.err, "conv48.weight: block 32 does not divide the 48 input channels"), 1u) << r2.err;
  // Both spellings at once count differently: refused.
  const Result r3 = expect(2, {"quantize", in, path("x.wq"), "--block", "32", "--weightQuantBlock", "32"});
  EXPECT_TRUE(contains(r3.err, "given twice")) << r3.err;
}

TEST_F(Cli, MnnSpellingsFlushWeightsBelowFltMinToZero) {
  const std::string in = path("tiny.safetensors");
  std::vector<float> w(2 * 32);
  w[0] = 1e-40f;  // row 0: a subnormal minimum among positive weights
  for (int j = 1; j < 32; ++j) w[j] = 0.03125f * float(j);
  for (int j = 0; j < 32; ++j) w[32 + j] = j % 3 == 0 ? -1e-40f : j % 3 == 1 ? 2e-39f : -0.0f;  // row 1: all below FLT_MIN
  write_f32_safetensors(in, {{"w", {2, 32}, w}});

  // Asymmetric: MNN stores the block minimum; flushed, it is +0 for both rows, and row 1
  // (all zeros after the flush) has scale 0.
  expect(0, {"--modelFile", in, "--MNNModel", path("mnn.safetensors"), "--weightQuantBits", "4",
             "--weightQuantAsymmetric", "1"});
  std::vector<float> zeros = st_f32(st_tensor(path("mnn.safetensors"), "w.zeros"));
  std::vector<float> scales = st_f32(st_tensor(path("mnn.safetensors"), "w.scales"));
  ASSERT_EQ(zeros.size(), 2u);
  ASSERT_EQ(scales.size(), 2u);
  EXPECT_EQ(bits_of(zeros[0]), 0u);
  EXPECT_EQ(bits_of(zeros[1]), 0u);
  EXPECT_EQ(bits_of(scales[1]), 0u);
  EXPECT_EQ(scales[0], (0.03125f * 31.0f - 0.0f) / 15.0f);
  // wquant's own spelling keeps the weights as they are.
  expect(0, {"quantize", in, path("ours.safetensors"), "--bits", "4", "--asym"});
  zeros = st_f32(st_tensor(path("ours.safetensors"), "w.zeros"));
  EXPECT_EQ(bits_of(zeros[0]), bits_of(1e-40f));
  EXPECT_EQ(bits_of(zeros[1]), bits_of(-1e-40f));

  // Symmetric: row 1's absmax is 0 after the flush, so its scale is 0.
  expect(0, {"--modelFile", in, "--MNNModel", path("mnn-sym.safetensors"), "--weightQuantBits", "4"});
  scales = st_f32(st_tensor(path("mnn-sym.safetensors"), "w.scales"));
  EXPECT_EQ(bits_of(scales[1]), 0u);
  EXPECT_EQ(scales[0], 0.03125f * 31.0f / 7.0f);
  expect(0, {"quantize", in, path("ours-sym.safetensors"), "--bits", "4"});
  scales = st_f32(st_tensor(path("ours-sym.safetensors"), "w.scales"));
  EXPECT_NE(bits_of(scales[1]), 0u);
}

// The f16 value MNN stores for x: the largest f16 not above |x| in magnitude (rounding
// toward zero), found by search over every finite f16 rather than by bit manipulation.
uint16_t f16_toward_zero(float x) {
  auto value = [](uint16_t h) {
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    return e == 0 ? std::ldexp(float(m), -24) : std::ldexp(float(1024 + m), e - 25);
  };
  const float a = std::fabs(x);
  uint16_t lo = 0, hi = 0x7bff;  // largest finite f16
  while (lo < hi) {
    const uint16_t mid = uint16_t((lo + hi + 1) / 2);
    if (value(mid) <= a) lo = mid;
    else hi = uint16_t(mid - 1);
  }
  return uint16_t(lo | (std::signbit(x) ? 0x8000 : 0));
}

TEST_F(Cli, MnnScaleBit16StoresF16ScalesRoundedTowardZero) {
  const std::string in = path("m.safetensors");
  const int rows = 64, cols = 32;
  const std::vector<float> w = normal_weights(size_t(rows) * cols, 7);
  write_f32_safetensors(in, {{"w", {rows, cols}, w}, {"norm.weight", {cols}, normal_weights(cols, 8)}});
  const std::string s16 = path("s16.safetensors"), s32 = path("s32.safetensors");
  expect(0, {"--modelFile", in, "--MNNModel", s16, "--weightQuantBits", "4", "--weightQuantAsymmetric", "1",
             "--weightQuantScaleBit", "16"});
  expect(0, {"--modelFile", in, "--MNNModel", s32, "--weightQuantBits", "4", "--weightQuantAsymmetric", "1",
             "--weightQuantScaleBit", "32"});
  const StTensor scales = st_tensor(s16, "w.scales"), zeros = st_tensor(s16, "w.zeros");
  ASSERT_EQ(scales.dtype, "F16");
  ASSERT_EQ(zeros.dtype, "F16");
  ASSERT_EQ(scales.bytes.size(), size_t(rows) * 2);
  int differs_from_nearest = 0;
  for (int r = 0; r < rows; ++r) {
    float mn = w[size_t(r) * cols], mx = mn;
    for (int j = 0; j < cols; ++j) {
      mn = std::min(mn, w[size_t(r) * cols + j]);
      mx = std::max(mx, w[size_t(r) * cols + j]);
    }
    const float s = (mx - mn) / 15.0f;  // MNN: (max - min) / (threshold - clampMin)
    uint16_t hs, hz;
    std::memcpy(&hs, scales.bytes.data() + 2 * r, 2);
    std::memcpy(&hz, zeros.bytes.data() + 2 * r, 2);
    EXPECT_EQ(hs, f16_toward_zero(s)) << "row " << r;
    EXPECT_EQ(hz, f16_toward_zero(mn)) << "row " << r;
    // Round-to-nearest would pick the next f16 up when the dropped part is above half.
    const uint32_t dropped = bits_of(s) & 0x1fff;
    differs_from_nearest += dropped > 0x1000;
  }
  EXPECT_GT(differs_from_nearest, 0) << "the data should tell truncation from rounding";
  // The codes come from the f32 scale (MNN quantizes before storing the scales).
  EXPECT_TRUE(st_tensor(s16, "w.qweight").bytes == st_tensor(s32, "w.qweight").bytes);
  EXPECT_EQ(st_tensor(s32, "w.scales").dtype, "F32");
  // Only the scales change width: a kept float tensor stays f32 (unlike --fp16).
  EXPECT_EQ(st_tensor(s16, "norm.weight").dtype, "F32");
  expect(0, {"--modelFile", in, "--MNNModel", path("both.safetensors"), "--weightQuantBits", "4", "--fp16",
             "--weightQuantScaleBit", "16"});
  EXPECT_EQ(st_tensor(path("both.safetensors"), "norm.weight").dtype, "F16");
  const Result r = expect(2, {"--modelFile", in, "--MNNModel", path("x.safetensors"), "--weightQuantScaleBit", "8"});
  EXPECT_TRUE(contains(r.err, "scale bits must be 32")) << r.err;
}

// --- what the files say (README "Output layouts") ------------------------------------------

TEST_F(Cli, TheSameInputByTwoPathsGivesIdenticalWqBytes) {
  const std::string in = path("in.safetensors");
  write_f32_safetensors(in, {{"w", {8, 64}, normal_weights(8 * 64, 11)}});
  fs::create_directory(path("sub"));
  expect(0, {"quantize", in, path("a.wq"), "--bits", "4", "--block", "32"});
  expect(0, {"quantize", path("sub/../in.safetensors"), path("b.wq"), "--bits", "4", "--block", "32"});
  const std::string a = read_bytes(path("a.wq"));
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == read_bytes(path("b.wq")));
  // The input is named by its base name, never by the directory it was read from.
  EXPECT_TRUE(contains(a, "in.safetensors"));
  EXPECT_FALSE(contains(a, dir_));
}

TEST_F(Cli, KeptTensorsFollowTheReadmeRule) {
  // README "What wquant quantizes": float, >= 2 dims, rows >= 2 and cols >= 2, and no name
  // containing norm / position_embd / token_types / ffn_gate_inp or ending with bias.
  const std::string in = path("in.safetensors");
  write_f32_safetensors(in, {{"normal.weight", {4, 64}, normal_weights(256, 1)},
                             {"layers.0.denorm_proj", {4, 64}, normal_weights(256, 2)},
                             {"proj.bias", {4, 64}, normal_weights(256, 3)},
                             {"row.weight", {1, 64}, normal_weights(64, 4)},
                             {"col.weight", {64, 1}, normal_weights(64, 5)},
                             {"scale", {64}, normal_weights(64, 6)},
                             {"conv.weight", {4, 2, 2, 2}, normal_weights(32, 7)},
                             {"lin.weight", {4, 64}, normal_weights(256, 8)}});
  const std::string out = path("o.safetensors");
  const Result r = expect(0, {"quantize", in, out, "--bits", "4", "--fp16"});
  for (const char* kept : {"normal.weight", "layers.0.denorm_proj", "proj.bias", "row.weight", "col.weight", "scale"}) {
    EXPECT_EQ(st_tensor(out, kept).dtype, "F16") << kept;  // kept, and f32 -> F16 with --fp16
    EXPECT_FALSE(contains(r.err, kept)) << "kept silently: " << r.err;
  }
  EXPECT_EQ(st_tensor(out, "conv.weight.qweight").shape, (std::vector<int64_t>{4, 4}));  // rows 4, cols 2*2*2
  EXPECT_EQ(st_tensor(out, "lin.weight.qweight").dtype, "U8");
  // A rule that sets a field quantizes a tensor the default choice keeps.
  write_bytes(path("p.json"), R"({"rules": [{"match": "normal.weight", "bits": 8}]})");
  expect(0, {"quantize", in, path("r.safetensors"), "--params", path("p.json")});
  EXPECT_EQ(st_tensor(path("r.safetensors"), "normal.weight.qweight").dtype, "U8");
}

TEST_F(Cli, SafetensorsHqqRecordNamesStepsLikeTheParamsFile) {
  const std::string in = path("in.safetensors");
  write_f32_safetensors(in, {{"w", {8, 64}, normal_weights(8 * 64, 12)}});
  const std::string out = path("o.safetensors");
  expect(0, {"quantize", in, out, "--bits", "4", "--block", "32", "--hqq", "--hqq-steps", "7"});
  const std::string all = read_bytes(out);
  uint64_t n = 0;
  std::memcpy(&n, all.data(), 8);
  const json h = json::parse(all.substr(8, n));
  const json rec = json::parse(h["__metadata__"]["wquant.w"].get<std::string>());
  EXPECT_EQ(rec["hqq_steps"], 7) << rec.dump();
  EXPECT_FALSE(rec.contains("hqq_steps_max")) << rec.dump();
  EXPECT_FALSE(rec.contains("solver_steps")) << rec.dump();  // was always 0: the header precedes the data
  EXPECT_EQ(rec["scheme"], "affine");
  EXPECT_EQ(rec["block"], 32);
  // Channel-wise: the record's block is the row length.
  expect(0, {"quantize", in, path("c.safetensors"), "--bits", "4"});
  const std::string c = read_bytes(path("c.safetensors"));
  std::memcpy(&n, c.data(), 8);
  const json rc = json::parse(json::parse(c.substr(8, n))["__metadata__"]["wquant.w"].get<std::string>());
  EXPECT_EQ(rc["block"], 64) << rc.dump();
}

// --- Ctrl-C -------------------------------------------------------------------------------

// A safetensors file of `tensors` f32 matrices [rows, cols] of random weights.
void write_synthetic_safetensors(const std::string& file, int tensors, int rows, int cols) {
  json header = json::object();
  const uint64_t bytes = uint64_t(rows) * uint64_t(cols) * 4;
  for (int t = 0; t < tensors; ++t) {
    header["layer" + std::to_string(t) + ".weight"] = {
        {"dtype", "F32"}, {"shape", {rows, cols}}, {"data_offsets", {bytes * t, bytes * (t + 1)}}};
  }
  std::ofstream f = open_safetensors(file, header);
  std::mt19937 g(1);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> row(size_t(cols) * rows);
  for (int t = 0; t < tensors; ++t) {
    for (float& x : row) x = d(g);
    f.write(reinterpret_cast<const char*>(row.data()), std::streamsize(row.size() * 4));
  }
}

// A safetensors file of f32 tensors given as name -> (rows, cols, values).
void write_f32_safetensors(const std::string& file,
                           const std::vector<std::pair<std::string, std::vector<float>>>& tensors, int rows, int cols) {
  std::vector<NamedTensor> named;
  for (const auto& [name, v] : tensors) named.push_back({name, {rows, cols}, v});
  write_f32_safetensors(file, named);
}

// Sets the first f32 of tensor `name` in a safetensors file.
void poke_first_f32(const std::string& file, const std::string& name, float value) {
  std::string bytes = read_bytes(file);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  const json h = json::parse(bytes.substr(8, n));
  ASSERT_EQ(h.at(name).at("dtype"), "F32");
  const uint64_t off = 8 + n + h.at(name).at("data_offsets")[0].get<uint64_t>();
  std::memcpy(bytes.data() + off, &value, 4);
  write_bytes(file, bytes);
}

// Issue 11 item 7: finite weights whose parameters overflow are refused (exit 3, one
// line naming the tensor and row, nothing written); verify never calls a NaN "exact" and
// fails on a file that dequantizes to NaN/Inf.
TEST_F(Cli, WeightsWhoseParametersOverflowAreRefusedAndVerifyCatchesNan) {
  std::mt19937 g(5);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> ok(4 * 64), range(4 * 64), big_min(4 * 64);
  for (std::vector<float>* v : {&ok, &range, &big_min}) {
    for (float& x : *v) x = d(g);
  }
  range[64 + 3] = -3e38f;
  range[64 + 4] = 3e38f;
  big_min[64 + 3] = -1e5f;
  const std::string in_range = path("range.safetensors"), in_min = path("min.safetensors"), out = path("o.wq");
  write_f32_safetensors(in_range, {{"ok.weight", ok}, {"big.weight", range}}, 4, 64);
  write_f32_safetensors(in_min, {{"ok.weight", ok}, {"big.weight", big_min}}, 4, 64);
  for (const auto& [in, flags] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {in_range, {"--asym"}}, {in_range, {"--hqq"}}, {in_range, {"--fp16"}}, {in_min, {"--asym", "--fp16"}}}) {
    std::vector<std::string> args{"quantize", in, out, "-q"};
    args.insert(args.end(), flags.begin(), flags.end());
    const Result r = expect(3, args);
    EXPECT_TRUE(contains(r.err, "wquant: error: ")) << r.err;
    EXPECT_TRUE(contains(r.err, "big.weight: row 1: ")) << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << "one line: " << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
  // Symmetric: s = absmax / 7 is finite and so is every w_hat; verify's figures for it
  // are finite and not "exact" (its squares overflow a float sum).
  expect(0, {"quantize", in_range, out, "-q"});
  const Result v = expect(0, {"verify", in_range, out});
  EXPECT_FALSE(contains(v.out, " exact ")) << v.out;
  EXPECT_FALSE(contains(v.out, "nan")) << v.out;
  EXPECT_TRUE(contains(v.out, "(0 exact)")) << v.out;
  // A file whose scale is Inf (as an older wquant wrote for --asym --fp16): NaN, not
  // "exact", and exit 3 naming the tensor and the place.
  const std::string q = path("q.safetensors");
  expect(0, {"quantize", in_min, q, "--asym", "-q"});
  poke_first_f32(q, "big.weight.scales", INFINITY);
  const Result b = expect(3, {"verify", in_min, q});
  EXPECT_TRUE(contains(b.out, "nan")) << b.out;
  EXPECT_FALSE(contains(b.out, " exact ")) << b.out;
  EXPECT_TRUE(contains(b.out, "(0 exact)")) << b.out;
  EXPECT_TRUE(contains(b.err, "wquant: error: " + q + ": big.weight: dequantizes to ")) << b.err;
  EXPECT_EQ(count_of(b.err, "\n"), 1u) << "one line: " << b.err;
  expect(3, {"verify", in_min, q, "--json"});
  // A kept-float tensor (one row) that --fp16 would turn into Inf.
  std::vector<float> norm(64, 1.0f);
  norm[3] = 1e5f;
  const std::string in_norm = path("norm.safetensors");
  write_f32_safetensors(in_norm, {{"norm.weight", norm}}, 1, 64);
  const std::string out_norm = path("norm.wq");
  const Result n = expect(3, {"quantize", in_norm, out_norm, "--fp16", "-q"});
  EXPECT_TRUE(contains(n.err, "norm.weight: row 0, column 3: the weight 100000 does not fit in f16")) << n.err;
  EXPECT_FALSE(fs::exists(out_norm));
  expect(0, {"quantize", in_norm, out_norm, "-q"});
}


TEST_F(Cli, CtrlCLeavesNoOutputAndExits130) {
  const std::string in = path("big.safetensors");
  write_synthetic_safetensors(in, 12, 1024, 2048);  // 24M weights, 96 MiB: about a second of work
  fs::create_directory(path("out"));
  const std::string out = path("out/big.wq");
  for (const int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(strsignal(sig));
    // Scalar HQQ on one thread, so the signal lands mid-run: the writer creates the
    // temporary file beside OUT before the first tensor is quantized.
    Child c = spawn({"quantize", in, out, "--hqq", "--block", "64", "--isa", "scalar", "--threads", "1"});
    bool started = false;
    for (int i = 0; i < 3000 && !started; ++i) {
      started = !fs::is_empty(path("out"));
      if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_TRUE(started) << "no temporary output appeared";
    kill(c.pid, sig);
    const Result r = finish(c);
    EXPECT_EQ(r.code, 130) << r.out << r.err;
    EXPECT_TRUE(fs::is_empty(path("out"))) << "left behind: " << fs::directory_iterator(path("out"))->path();
    EXPECT_FALSE(fs::exists(out));
  }
}

// --- issue 11 ("Trust"): data safety, validation, crashes, messages -------------------

// A safetensors file from a raw JSON header and `data` bytes.
void write_raw_safetensors(const std::string& file, const std::string& header, const std::string& data) {
  std::string h = header;
  h.append((8 - h.size() % 8) % 8, ' ');
  const uint64_t n = h.size();
  std::string b(reinterpret_cast<const char*>(&n), 8);
  write_bytes(file, b + h + data);
}

// A GGUF v3 file with general.architecture and one tensor [rows, cols] of ggml type
// `type` holding `data`.
std::string one_tensor_gguf(const std::string& name, uint32_t type, uint64_t rows, uint64_t cols, const std::string& data) {
  std::string g = "GGUF";
  auto put = [&](auto v) { g.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto str = [&](const std::string& t) {
    put(uint64_t(t.size()));
    g += t;
  };
  put(uint32_t(3));
  put(uint64_t(1));
  put(uint64_t(1));
  str("general.architecture");
  put(uint32_t(8));
  str("llama");
  str(name);
  put(uint32_t(2));
  put(cols);
  put(rows);
  put(type);
  put(uint64_t(0));
  g.append((32 - g.size() % 32) % 32, '\0');
  return g + data;
}

// What llama.cpp's GGUF reader refuses (llama-quantize then refuses the model, and an
// output that copied it would not load): a tensor name of 64 bytes or more
// (GGML_MAX_NAME), a metadata key with an empty name.
TEST_F(Cli, GgufNamesLlamaCppCannotReadAreRefused) {
  const std::string data(4 * 32 * 4, '\0');
  write_bytes(path("long.gguf"), one_tensor_gguf(std::string(64, 'w'), 0, 4, 32, data));
  Result r = expect(3, {"inspect", path("long.gguf")});
  EXPECT_TRUE(contains(r.err, "a GGUF tensor name has at most 63 bytes")) << r.err;
  write_bytes(path("ok.gguf"), one_tensor_gguf(std::string(63, 'w'), 0, 4, 32, data));
  expect(0, {"inspect", path("ok.gguf")});
  std::string g = one_tensor_gguf("w", 0, 4, 32, data);
  const std::string key = "general.architecture";
  const size_t at = g.find(key);
  ASSERT_NE(at, std::string::npos);
  g.replace(at - 8, 8 + key.size(), std::string(8, '\0'));  // the key's length 0, its text gone
  write_bytes(path("nokey.gguf"), g);
  r = expect(3, {"inspect", path("nokey.gguf")});
  EXPECT_TRUE(contains(r.err, "metadata key #0 has an empty name")) << r.err;
}

// Waits (up to 15 s) until `dir` holds a file whose name contains "wquant-tmp".
bool wait_for_temp(const std::string& dir) {
  for (int i = 0; i < 3000; ++i) {
    for (const auto& e : fs::directory_iterator(dir)) {
      if (contains(e.path().filename().string(), "wquant-tmp")) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

bool has_temp(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (contains(e.path().filename().string(), "wquant-tmp")) return true;
  }
  return false;
}

// A slow run (scalar HQQ, one thread) of a 96 MiB model into out/.
std::vector<std::string> slow_run(const std::string& in, const std::string& out) {
  return {"quantize", in, out, "--hqq", "--block", "64", "--isa", "scalar", "--threads", "1"};
}

// Item 1: IN as a directory, or a sharded index, and OUT one of the files it reads.
TEST_F(Cli, TrustInputDirectoryOrShardIsNeverOverwritten) {
  fs::create_directory(path("d"));
  write_synthetic_safetensors(path("d/model.safetensors"), 2, 8, 32);
  const std::string original = read_bytes(path("d/model.safetensors"));
  Result r = expect(4, {"quantize", path("d"), path("d/model.safetensors"), "--force", "--format", "safetensors"});
  EXPECT_TRUE(contains(r.err, "is the input")) << r.err;
  EXPECT_EQ(read_bytes(path("d/model.safetensors")), original);

  fs::create_directory(path("s"));
  write_synthetic_safetensors(path("s/model-00001-of-00002.safetensors"), 1, 8, 32);
  write_raw_safetensors(path("s/model-00002-of-00002.safetensors"),
                        R"({"other.weight":{"dtype":"F32","shape":[8,32],"data_offsets":[0,1024]}})", std::string(1024, '\0'));
  const json idx = {{"weight_map", {{"layer0.weight", "model-00001-of-00002.safetensors"},
                                    {"other.weight", "model-00002-of-00002.safetensors"}}}};
  write_bytes(path("s/model.safetensors.index.json"), idx.dump());
  const std::string shard = path("s/model-00002-of-00002.safetensors");
  const std::string shard_bytes = read_bytes(shard);
  for (const std::string& in : {path("s"), path("s/model.safetensors.index.json")}) {
    r = expect(4, {"quantize", in, shard, "--force"});
    EXPECT_TRUE(contains(r.err, "is the input")) << r.err;
    r = expect(4, {"dequantize", in, shard, "--force"});
    EXPECT_TRUE(contains(r.err, "is the input")) << r.err;
  }
  EXPECT_EQ(read_bytes(shard), shard_bytes);
}

// A NaN or Inf weight is refused whether or not the error figures are measured (with them
// the sums of squares find it; with --no-metrics a scan does): exit 3, one line naming the
// tensor, row and column, nothing written; for RTN and HQQ, in .wq and safetensors.
TEST_F(Cli, NonFiniteWeightsAreRefusedWithAndWithoutMetrics) {
  std::vector<float> w(4 * 64, 0.01f);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * float(int(i % 13) - 6);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    w[2 * 64 + 7] = bad;
    write_f32_safetensors(path("m.safetensors"), {{"x.weight", w}}, 4, 64);
    for (const auto& flags : std::vector<std::vector<std::string>>{
             {}, {"--no-metrics"}, {"--no-metrics", "--hqq"}, {"--no-metrics", "--bits", "8", "--block", "32"}}) {
      for (const char* out : {"o.wq", "o.safetensors"}) {
        std::vector<std::string> args{"quantize", path("m.safetensors"), path(out), "-q"};
        args.insert(args.end(), flags.begin(), flags.end());
        SCOPED_TRACE(std::string(out) + " " + (flags.empty() ? "" : flags[0]) + (flags.size() > 1 ? " " + flags[1] : ""));
        const Result r = expect(3, args);
        EXPECT_TRUE(contains(r.err, "x.weight")) << r.err;
        EXPECT_TRUE(contains(r.err, "row 2, column 7")) << r.err;
        EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
        EXPECT_FALSE(fs::exists(path(out)));
      }
    }
  }
}

// An error in a tensor of a sharded model names the shard that holds it, not the index
// or the first shard (a split GGUF's shard K was named as shard 1).
TEST_F(Cli, ErrorsInATensorNameItsShard) {
  fs::create_directory(path("s"));
  write_synthetic_safetensors(path("s/model-00001-of-00002.safetensors"), 1, 8, 32);
  std::vector<float> w(8 * 32, 0.5f);
  w[37] = std::numeric_limits<float>::quiet_NaN();  // row 1, column 5
  write_raw_safetensors(path("s/model-00002-of-00002.safetensors"),
                        R"({"other.weight":{"dtype":"F32","shape":[8,32],"data_offsets":[0,1024]}})",
                        std::string(reinterpret_cast<const char*>(w.data()), w.size() * 4));
  const json idx = {{"weight_map", {{"layer0.weight", "model-00001-of-00002.safetensors"},
                                    {"other.weight", "model-00002-of-00002.safetensors"}}}};
  write_bytes(path("s/model.safetensors.index.json"), idx.dump());
  for (const std::string& in : {path("s"), path("s/model.safetensors.index.json")}) {
    const Result r = expect(3, {"quantize", in, path("o.wq"), "--force"});
    EXPECT_EQ(r.err.rfind("wquant: error: " + path("s/model-00002-of-00002.safetensors") + ": other.weight: non-finite", 0), 0u)
        << r.err;
    EXPECT_FALSE(fs::exists(path("o.wq")));
  }
}

// Item 2: the final rename would replace a device, FIFO or socket by a regular file.
TEST_F(Cli, TrustOutputThatIsNotARegularFileIsRefused) {
  write_synthetic_safetensors(path("m.safetensors"), 1, 8, 32);
  ASSERT_EQ(mkfifo(path("fifo.wq").c_str(), 0600), 0);
  const Result r = expect(4, {"quantize", path("m.safetensors"), path("fifo.wq"), "--force"});
  EXPECT_TRUE(contains(r.err, "not a regular file")) << r.err;
  struct stat st;
  ASSERT_EQ(lstat(path("fifo.wq").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_FALSE(has_temp(dir_));
}

// Item 3: without --force, a file that appears at OUT during the run (another run) is
// never replaced; the run fails with exit 4 and leaves no temporary file.
TEST_F(Cli, TrustOutputCreatedDuringTheRunIsNotClobbered) {
  const std::string in = path("big.safetensors");
  write_synthetic_safetensors(in, 12, 1024, 2048);
  fs::create_directory(path("out"));
  const std::string out = path("out/big.wq");
  Child c = spawn(slow_run(in, out));
  ASSERT_TRUE(wait_for_temp(path("out")));
  write_bytes(out, "theirs");
  const Result r = finish(c);
  EXPECT_EQ(r.code, 4) << r.err;
  EXPECT_TRUE(contains(r.err, "appeared while")) << r.err;
  EXPECT_EQ(read_bytes(out), "theirs");
  EXPECT_FALSE(has_temp(path("out")));
}

// Item 4: the params file to write is checked first and written before OUT is committed:
// if it cannot be written, OUT is not left in place.
TEST_F(Cli, TrustParamsFileThatCannotBeWrittenLeavesNoOutput) {
  write_synthetic_safetensors(path("m.safetensors"), 2, 8, 32);
  Result r = expect(4, {"quantize", path("m.safetensors"), path("o.wq"), "--params", path("no/such/dir/p.json")});
  EXPECT_TRUE(contains(r.err, "no/such/dir/p.json")) << r.err;
  EXPECT_FALSE(fs::exists(path("o.wq")));
  // A directory that takes no files, whatever the permissions say.
  r = expect(4, {"quantize", path("m.safetensors"), path("o.wq"), "--params", "/proc/wquant-trust-params.json"});
  EXPECT_TRUE(contains(r.err, "/proc/wquant-trust-params.json")) << r.err;
  EXPECT_FALSE(fs::exists(path("o.wq")));
  EXPECT_FALSE(has_temp(dir_));
  expect(0, {"quantize", path("m.safetensors"), path("o.wq"), "--params", path("p.json"), "-q"});
  EXPECT_TRUE(fs::exists(path("o.wq")));
  EXPECT_TRUE(fs::exists(path("p.json")));
}

// Waits (up to 30 s) until `file` exists: a run has renamed it into place.
bool appears(const std::string& file) {
  for (int i = 0; i < 6000; ++i) {
    if (fs::exists(file)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// A run of `args` held right after each rename into place (WQUANT_TEST_RENAME_PAUSE_MS):
// Ctrl-C once `first` is under its final name, while `last` is not yet, exits 130 and
// leaves nothing in dir/out.
void expect_ctrl_c_after_a_rename_leaves_nothing(const std::string& dir, const std::vector<std::string>& args,
                                                 const std::string& first, const std::string& last) {
  Child c = spawn(args, {{"WQUANT_TEST_RENAME_PAUSE_MS", "3000"}});
  ASSERT_TRUE(appears(first)) << first << " never appeared";
  EXPECT_FALSE(fs::exists(last));  // still in the window
  kill(c.pid, SIGINT);
  const Result r = finish(c);
  EXPECT_EQ(r.code, 130) << r.out << r.err;
  EXPECT_TRUE(fs::is_empty(dir + "/out")) << "left behind: " << fs::directory_iterator(dir + "/out")->path();
}

// The params file named as OUT by another spelling (./o.wq beside o.wq, relative beside
// absolute): refused before any work, as the same spelling is (it was written over OUT's
// temporary file, and the run failed at its end).
TEST_F(Cli, TheParamsFileIsNeverOutWhateverTheSpelling) {
  write_synthetic_safetensors(path("m.safetensors"), 1, 8, 32);
  const fs::path cwd = fs::current_path();
  fs::current_path(path(""));
  const Result a = run({"quantize", "m.safetensors", "o.wq", "--params", "./o.wq"});
  const Result b = run({"quantize", "m.safetensors", "o.wq", "--params", path("o.wq")});
  fs::current_path(cwd);
  for (const Result& r : {a, b}) {
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, "the params file and OUT are the same file")) << r.err;
  }
  EXPECT_FALSE(fs::exists(path("o.wq")));
}

// verify's figures are relative to its first argument: a quantized one is said (swapped
// arguments gave skewed figures without a word); dequantize counts the tensors it converted
// apart from those it copied.
TEST_F(Cli, VerifySaysItsReferenceIsQuantizedAndDequantizeCountsWhatItConverted) {
  write_synthetic_safetensors(path("m.safetensors"), 1, 8, 32);
  expect(0, {"quantize", path("m.safetensors"), path("q.wq"), "-q"});
  Result r = expect(0, {"verify", path("q.wq"), path("m.safetensors")});
  EXPECT_TRUE(contains(r.err, path("q.wq") + " (FLOAT, the reference) holds ")) << r.err;
  EXPECT_TRUE(contains(r.err, "(swapped?)")) << r.err;
  r = expect(0, {"verify", path("m.safetensors"), path("q.wq")});
  EXPECT_FALSE(contains(r.err, "the reference) holds")) << r.err;
  const json d = json_of({"dequantize", path("q.wq"), path("d.safetensors"), "--fp16", "--json"});
  const json i = json_of({"inspect", path("q.wq"), "--json"});
  size_t other = 0;
  for (const json& t : i["tensors"]) other += t["kind"] == "other";
  EXPECT_EQ(d["as_dtype"].get<size_t>() + other, d["tensors"].get<size_t>()) << d.dump();
}

// A signal ignored when wquant starts (nohup's SIGHUP) stays ignored: sent between the
// params file's rename and OUT's, the run goes on to exit 0 with both in place. SIGINT and
// SIGTERM are handled even where ignored (a script's background run still stops and
// cleans up): 130, neither file left.
TEST_F(Cli, ASignalIgnoredAtStartStaysIgnoredButCtrlCIsHandled) {
  write_synthetic_safetensors(path("m.safetensors"), 2, 8, 32);
  fs::create_directory(path("out"));
  for (const int sig : {SIGHUP, SIGINT, SIGTERM}) {
    SCOPED_TRACE(sig);
    const std::string out = path("out/o" + std::to_string(sig) + ".wq"), params = path("out/p" + std::to_string(sig) + ".json");
    struct sigaction ignore {}, old {};
    ignore.sa_handler = SIG_IGN;
    ASSERT_EQ(sigaction(sig, &ignore, &old), 0);
    Child c = spawn({"quantize", path("m.safetensors"), out, "--params", params, "-q"},
                    {{"WQUANT_TEST_RENAME_PAUSE_MS", "3000"}});
    sigaction(sig, &old, nullptr);  // (the child keeps the ignored disposition it started with)
    ASSERT_TRUE(appears(params)) << params << " never appeared";
    EXPECT_FALSE(fs::exists(out));  // still in the window
    kill(c.pid, sig);
    const Result r = finish(c);
    EXPECT_EQ(r.code, sig == SIGHUP ? 0 : 130) << r.err;
    EXPECT_EQ(fs::exists(out), sig == SIGHUP);
    EXPECT_EQ(fs::exists(params), sig == SIGHUP);
  }
}

// Ctrl-C right after the params file is renamed into place, before OUT is: the params
// file (which describes an OUT that is not there) is removed, nothing is left.
TEST_F(Cli, CtrlCBetweenTheParamsFileAndOutLeavesNeither) {
  write_synthetic_safetensors(path("m.safetensors"), 2, 8, 32);
  fs::create_directory(path("out"));
  expect_ctrl_c_after_a_rename_leaves_nothing(
      dir_, {"quantize", path("m.safetensors"), path("out/o.wq"), "--params", path("out/p.json"), "-q"}, path("out/p.json"),
      path("out/o.wq"));
}

// A signal once OUT is renamed into place (held there by WQUANT_TEST_RENAME_PAUSE_MS) is
// too late to undo the rename (the file it replaced is gone): it ends the run there, exit 0,
// with OUT and the params file that describes it (it removed the params file and exited
// 130, leaving OUT).
TEST_F(Cli, ASignalOnceOutIsInPlaceIsTooLate) {
  write_synthetic_safetensors(path("m.safetensors"), 2, 8, 32);
  fs::create_directory(path("out"));
  expect(0, {"quantize", path("m.safetensors"), path("want.wq"), "-q"});
  for (const int sig : {SIGINT, SIGTERM, SIGHUP}) {
    SCOPED_TRACE(sig);
    const std::string out = path("out/o" + std::to_string(sig) + ".wq"), params = path("out/p" + std::to_string(sig) + ".json");
    Child c = spawn({"quantize", path("m.safetensors"), out, "--params", params, "-q"},
                    {{"WQUANT_TEST_RENAME_PAUSE_MS", "3000"}});
    ASSERT_TRUE(appears(out)) << out << " never appeared";
    const auto sent = std::chrono::steady_clock::now();
    kill(c.pid, sig);
    const Result r = finish(c);
    // It ends the run there (a dropped signal left it running, unkillable but by SIGKILL,
    // as long as the rest took: here the 3 s pause).
    EXPECT_LT(std::chrono::steady_clock::now() - sent, std::chrono::milliseconds(2000));
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(contains(r.err, "wquant: interrupted once the result was in place: it is complete")) << r.err;
    EXPECT_TRUE(read_bytes(out) == read_bytes(path("want.wq")));
    ASSERT_TRUE(fs::exists(params));
    expect(0, {"quantize", path("m.safetensors"), path("again.wq"), "--params", params, "--force", "-q"});
    EXPECT_TRUE(read_bytes(path("again.wq")) == read_bytes(out));
  }
}

// A slow run of `in` into dir/out/ during which `victim` is truncated to 4 KiB: bad input
// (SIGBUS on the mapping), exit 3, one line naming `victim` as the file that changed, and
// the temporary file removed.
void expect_truncation_named(const std::string& dir, const std::string& in, const std::string& victim) {
  const std::string out = dir + "/out";
  fs::create_directory(out);
  Child c = spawn(slow_run(in, out + "/big.wq"));
  ASSERT_TRUE(wait_for_temp(out));
  ASSERT_EQ(truncate(victim.c_str(), 4096), 0);
  const Result r = finish(c);
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "wquant: error: " + victim + ": input changed while reading")) << r.err;
  EXPECT_EQ(count_of(r.err, "wquant: error: "), 1u) << r.err;
  EXPECT_TRUE(fs::is_empty(out)) << "left behind: " << fs::directory_iterator(out)->path();
}

// Item 5: the input truncated while it is read is bad input, not a crash.
TEST_F(Cli, TrustInputTruncatedWhileReadingIsBadInputNotACrash) {
  const std::string in = path("big.safetensors");
  write_synthetic_safetensors(in, 12, 1024, 2048);
  expect_truncation_named(dir_, in, in);
}

// The same for a shard of a sharded model: the error names the shard that shrank (the
// file mapped where the read faulted), not the folder the user named.
TEST_F(Cli, TrustAShardTruncatedWhileReadingIsNamed) {
  fs::create_directory(path("s"));
  write_f32_safetensors(path("s/model-00001-of-00002.safetensors"), {{"small.weight", {8, 32}, std::vector<float>(8 * 32, 0.5f)}});
  const std::string shard = path("s/model-00002-of-00002.safetensors");
  write_synthetic_safetensors(shard, 12, 1024, 2048);
  json map = {{"small.weight", "model-00001-of-00002.safetensors"}};
  for (int t = 0; t < 12; ++t) map["layer" + std::to_string(t) + ".weight"] = "model-00002-of-00002.safetensors";
  write_bytes(path("s/model.safetensors.index.json"), json{{"weight_map", map}}.dump());
  expect_truncation_named(dir_, path("s"), shard);
}

// Item 6: every catchable signal that ends the run removes the temporary file; the
// process still dies of that signal. A leftover of a dead run (SIGKILL) is removed by
// the next run writing the same OUT.
TEST_F(Cli, TrustEverySignalRemovesTheTemporaryFile) {
  const std::string in = path("big.safetensors");
  write_synthetic_safetensors(in, 12, 1024, 2048);
  fs::create_directory(path("out"));
  const std::string out = path("out/big.wq");
  for (const int sig : {SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2, SIGALRM, int(SIGRTMIN)}) {
    SCOPED_TRACE(strsignal(sig));
    struct sigaction old {};
    if (sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;  // inherited as ignored: no signal
    Child c = spawn(slow_run(in, out));
    ASSERT_TRUE(wait_for_temp(path("out")));
    kill(c.pid, sig);
    const Result r = finish(c);
    EXPECT_EQ(r.code, 128 + sig) << r.err;
    EXPECT_TRUE(fs::is_empty(path("out"))) << "left behind: " << fs::directory_iterator(path("out"))->path();
  }
  // A SIGKILLed run's leftover: its pid is dead, so the next run removes it.
  Child c = spawn(slow_run(in, out));
  ASSERT_TRUE(wait_for_temp(path("out")));
  kill(c.pid, SIGKILL);
  EXPECT_EQ(finish(c).code, 128 + SIGKILL);
  ASSERT_TRUE(has_temp(path("out")));
  write_synthetic_safetensors(path("small.safetensors"), 1, 8, 32);
  expect(0, {"quantize", path("small.safetensors"), out, "-q"});
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(path("out"))) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"big.wq"});
}

// Item 11: wquant's own outputs are codes, not weights: refused, saying what to do.
TEST_F(Cli, TrustRequantizingAWquantOutputIsRefusedSayingDequantizeFirst) {
  write_synthetic_safetensors(path("m.safetensors"), 2, 8, 32);
  expect(0, {"quantize", path("m.safetensors"), path("q.wq"), "-q"});
  expect(0, {"quantize", path("m.safetensors"), path("q.safetensors"), "-q"});
  for (const std::string& q : {path("q.wq"), path("q.safetensors")}) {
    const Result r = expect(3, {"quantize", q, path("again.wq")});
    EXPECT_TRUE(contains(r.err, "wquant: error: " + q + ": layer0.weight: is already quantized")) << r.err;
    EXPECT_TRUE(contains(r.err, "wquant dequantize")) << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  }
  EXPECT_FALSE(fs::exists(path("again.wq")));
}

// Files whose tensors share names but hold nothing float: verify says that is why it
// compared nothing (it said no name was in common, and the reason on a second line).
TEST_F(Cli, VerifySaysWhyTensorsInCommonWereNotCompared) {
  write_raw_safetensors(path("b.safetensors"), R"({"mask":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}})", std::string(4, '\1'));
  expect(0, {"quantize", path("b.safetensors"), path("b.wq"), "-q"});
  const Result r = expect(3, {"verify", path("b.safetensors"), path("b.wq")});
  EXPECT_TRUE(contains(r.err, "no tensor in common with " + path("b.safetensors") + " can be compared: mask (BOOL / BOOL: not a weight wquant reads as float)"))
      << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
}

// A GGUF's llama.cpp blocks copied into .wq as they were dequantize from the .wq as from
// the GGUF (the .wq's were refused as a usage error naming the output), and verify
// measures them.
TEST_F(Cli, BlocksCopiedIntoWqDequantizeAsFromTheGguf) {
  WQ_REQUIRE_SHARED(gguf, kStoriesGguf);
  expect(0, {"quantize", gguf, path("q8.gguf"), "--type", "Q8_0", "-q"});
  expect(0, {"quantize", path("q8.gguf"), path("q8.wq"), "-q"});
  expect(0, {"dequantize", path("q8.gguf"), path("from-gguf.safetensors"), "-q"});
  expect(0, {"dequantize", path("q8.wq"), path("from-wq.safetensors"), "-q"});
  // The same weights, but for the GGUF's float ffn_down (172 columns: no whole Q8_0
  // blocks), which the .wq conversion quantized with wquant's own 4-bit default.
  const json same = json_of({"verify", path("from-gguf.safetensors"), path("from-wq.safetensors"), "--json"});
  ASSERT_EQ(same["tensors"].size(), 47u) << same.dump();
  size_t exact = 0;
  for (const json& t : same["tensors"]) {
    const bool requantized = contains(t["name"].get<std::string>(), "ffn_down");
    EXPECT_EQ(t["rel_rmse"].get<double>() == 0.0, !requantized) << t.dump();
    exact += !requantized;
  }
  EXPECT_EQ(exact, 47u - 5u);  // five layers' ffn_down
}

// Items 10, 13, 14, 17: values that wrapped, clamped, crashed or exited 1.
TEST_F(Cli, TrustOutOfRangeValuesAreUsageErrorsNamingTheValue) {
  write_synthetic_safetensors(path("m.safetensors"), 2, 8, 32);
  const std::string m = path("m.safetensors"), o = path("o.wq");
  struct Case {
    std::vector<std::string> args;
    const char* says;
  } cases[] = {
      {{"quantize", m, o, "--block", "18446744073709551616"}, "18446744073709551616"},
      {{"quantize", m, o, "--bits", ""}, "--bits: expected an integer, got ''"},
      {{"quantize", m, o, "--hqq", "--hqq-steps", "4294967301"}, "4294967301"},
      {{"quantize", m, o, "--threads", "100000"}, "--threads: 100000"},
      {{"verify", m, m, "--threads", "100000"}, "--threads: 100000"},
      {{"dequantize", m, path("d.safetensors"), "--threads", "100000"}, "--threads: 100000"},
  };
  for (const Case& c : cases) {
    const Result r = expect(2, c.args);
    EXPECT_TRUE(contains(r.err, c.says)) << c.says << "\n" << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  }
  const std::pair<std::string, const char*> params[] = {
      {R"({"defaults": {"hqq": true, "hqq_steps": 4294967301}})", "4294967301"},
      {R"({"defaults": {"bits": 1e400}})", "1e400"},
      {R"({"defaults": {"block": 18446744073709551615}})", "18446744073709551615"},
      {R"({"defaults": {"hqq": true, "hqq_beta": 1e300}})", "out of range"},
      {"{\"defaults\": {\"bits\": " + std::string(60000, '[') + std::string(60000, ']') + "}}", "nested"},
  };
  for (const auto& [text, says] : params) {
    write_bytes(path("p.json"), text);
    const Result r = expect(2, {"quantize", m, o, "--params", path("p.json")});
    EXPECT_TRUE(contains(r.err, says)) << says << "\n" << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err.substr(0, 300);
  }
  fs::create_directory(path("pdir"));
  const Result r = expect(2, {"quantize", m, o, "--params", path("pdir")});
  EXPECT_TRUE(contains(r.err, "is a directory")) << r.err;
  EXPECT_FALSE(fs::exists(o));
}

// Item 15: zero-size tensors by the hundred thousand: linear, not quadratic (the
// safetensors header was built by a linear search per key: 130 s for 200k). Measured as
// a ratio, so it holds on a slow or emulated CPU: 8x the tensors must cost well under
// 8^2 = 64x the time (linear gives about 8x; the bound leaves room for noise).
TEST_F(Cli, TrustManyTinyTensorsTakeLinearTime) {
  auto run_with = [&](int count) {
    const std::string tag = std::to_string(count);
    std::string h = "{";
    for (int i = 0; i < count; ++i) {
      h += (i ? "," : "") + std::string("\"t") + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
    }
    h += "}";
    write_raw_safetensors(path("many" + tag + ".safetensors"), h, "");
    const auto t0 = std::chrono::steady_clock::now();
    expect(0, {"quantize", path("many" + tag + ".safetensors"), path("many-q" + tag + ".safetensors"), "-q"});
    expect(0, {"dequantize", path("many-q" + tag + ".safetensors"), path("many-d" + tag + ".safetensors"), "-q"});
    expect(0, {"verify", path("many" + tag + ".safetensors"), path("many-q" + tag + ".safetensors"), "-q"});
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const double small = run_with(25000), large = run_with(200000);
  EXPECT_LT(large, 24.0 * small) << "25k zero-size tensors: " << small << " s, 200k: " << large
                                  << " s (quantize + dequantize + verify)";
}

// Items 17, 18: names and paths that are not UTF-8 or hold control characters: --json
// still succeeds, and every error is one line naming the file.
TEST_F(Cli, TrustOddNamesGiveOneLineErrorsAndValidJson) {
  write_synthetic_safetensors(path("m.safetensors"), 2, 8, 32);
  const std::string odd = path("o\xff\x01.wq");
  const json j = json_of({"quantize", path("m.safetensors"), odd, "--json"});
  EXPECT_EQ(j["command"], "quantize");
  EXPECT_TRUE(fs::exists(odd));
  const json d = json_of({"dequantize", odd, path("d\xfe.safetensors"), "--json"});
  EXPECT_EQ(d["command"], "dequantize");
  // A GGUF tensor whose name is not UTF-8 (and holds a newline): --json documents stay
  // JSON; safetensors output, whose header is JSON, and .wq, whose
  // names are flatbuffers strings (UTF-8: flatc and Rust's verifier refuse others; it was
  // written, exit 0), refuse it in one line.
  std::string g;
  for (int i = 0; i < 32 * 32; ++i) {
    const float v = float(i % 7) * 0.01f;
    g.append(reinterpret_cast<const char*>(&v), 4);
  }
  g = one_tensor_gguf("\xff\n.weight", 0, 32, 32, g);
  write_bytes(path("odd.gguf"), g);
  EXPECT_EQ(inspect(path("odd.gguf"))["tensors"].size(), 1u);
  Result r = expect(2, {"quantize", path("odd.gguf"), path("odd.safetensors")});
  EXPECT_TRUE(contains(r.err, "wquant: error: " + path("odd.safetensors") + ": \\xFF\\n.weight: the name is not valid UTF-8"))
      << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  r = expect(2, {"quantize", path("odd.gguf"), path("odd.wq")});
  EXPECT_TRUE(contains(r.err, "wquant: error: " + path("odd.wq") + ": \\xFF\\n.weight: the name is not valid UTF-8")) << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  EXPECT_FALSE(fs::exists(path("odd.wq")));
  // A tensor whose name holds a newline, with a NaN: the error names file, tensor, row.
  std::string data(8 * 32 * 4, '\0');
  const float nan = std::nanf("");
  std::memcpy(&data[4 * 37], &nan, 4);
  write_raw_safetensors(path("nan.safetensors"),
                        R"({"bad\nname.weight":{"dtype":"F32","shape":[8,32],"data_offsets":[0,1024]}})", data);
  r = expect(3, {"quantize", path("nan.safetensors"), path("n.wq")});
  EXPECT_TRUE(contains(r.err, "wquant: error: " + path("nan.safetensors") + ": bad\\nname.weight: non-finite")) << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  EXPECT_FALSE(fs::exists(path("n.wq")));
}

// Item 18: a tensor the output format cannot hold: the error names OUT (it named no file).
TEST_F(Cli, TrustTypeTheOutputCannotHoldNamesTheOutput) {
  write_bytes(path("k.gguf"), one_tensor_gguf("k.weight", 15 /* Q8_K */, 1, 256, std::string(292, '\0')));
  Result r = expect(2, {"quantize", path("k.gguf"), path("k.safetensors")});
  EXPECT_TRUE(contains(r.err, "wquant: error: " + path("k.safetensors") + ": k.weight: a Q8_K tensor cannot be stored"))
      << r.err;
  EXPECT_FALSE(fs::exists(path("k.safetensors")));
  // dequantize has no kernel for Q8_K's blocks (llama.cpp's intermediate type): the input
  // tensor is what it cannot handle.
  r = expect(3, {"dequantize", path("k.gguf"), path("k.safetensors")});
  EXPECT_TRUE(contains(r.err, "wquant: error: " + path("k.gguf") + ": k.weight: cannot dequantize a tensor of type Q8_K"))
      << r.err;
  EXPECT_FALSE(fs::exists(path("k.safetensors")));
}

// Item 19: OUT names up to NAME_MAX work: the temporary name is cut to fit.
TEST_F(Cli, TrustLongOutputNameIsAccepted) {
  write_synthetic_safetensors(path("m.safetensors"), 1, 8, 32);
  const std::string name = std::string(252, 'a') + ".wq";  // 255 bytes
  expect(0, {"quantize", path("m.safetensors"), path(name), "-q"});
  EXPECT_TRUE(fs::exists(path(name)));
  EXPECT_FALSE(has_temp(dir_));
}

// Item 20: the GGUF output matrix gets llama-quantize's type (Q6_K, falling back to Q8_0
// on 64-wide rows: said so), and with --type Q4_1 --hqq nothing is "implied".
TEST_F(Cli, TrustGgufNotesSayWhatHappened) {
  WQ_REQUIRE_SHARED(src, kStoriesGguf);
  const Result r = expect(0, {"quantize", src, path("o.gguf"), "--type", "Q4_1", "--hqq"});
  EXPECT_TRUE(contains(r.err, "token_embd.weight: rows of 64 are not a multiple of 256, required by Q6_K: Q8_0 instead"))
      << r.err;
  EXPECT_FALSE(contains(r.err, "kept as Q8_0")) << r.err;
  EXPECT_FALSE(contains(r.err, "implies asymmetric")) << r.err;
}

}  // namespace

namespace wq {
namespace {

// sha256 of llama-quantize's output for a run of tests/data/llama_quantize_mix_digests.json.
std::string oracle_sha256(const std::string& fixture, const std::string& mix, const std::vector<std::string>& options) {
  std::ifstream f(test::test_data_dir() + "/llama_quantize_mix_digests.json");
  const json doc = json::parse(f);
  for (const json& r : doc["runs"]) {
    if (r["fixture"] == fixture && r["mix"] == mix && r["options"] == json(options)) return r["sha256"];
  }
  ADD_FAILURE() << "no run " << fixture << " " << mix;
  return "";
}

// --pure asks for the type in every tensor: where its blocks do not fit a row (stories260K's
// 172-wide ffn_down for Q4_0's 32), llama-quantize fails on the model, and wquant refuses it
// too, in the plan (--dry-run included, which planned a file before), naming the tensor;
// without --pure the tensor is kept float, and a rule that keeps it float lets --pure run.
TEST_F(Cli, PureRefusesATypeWhoseBlocksDoNotFitARow) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  for (const bool dry : {false, true}) {
    std::vector<std::string> args = {"quantize", stories, path("p.gguf"), "Q4_0", "--pure"};
    if (dry) args.push_back("--dry-run");
    const Result r = expect(3, args);
    EXPECT_TRUE(contains(r.err, stories + ": blk.0.ffn_down.weight: rows of 172 are not a multiple of 32, required by "
                                          "Q4_0 (--pure asks for it in every tensor; llama-quantize fails on it too)"))
        << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
    EXPECT_FALSE(fs::exists(path("p.gguf")));
  }
  // A K type falls back without --pure, as llama-quantize's mixes do: said so.
  const Result k = expect(3, {"quantize", stories, path("p.gguf"), "Q4_K", "--pure"});
  EXPECT_TRUE(contains(k.err, "token_embd.weight: rows of 64 are not a multiple of 256, required by Q4_K (--pure asks "
                              "for it in every tensor; llama-quantize fails on it too): without --pure it gets "
                              "llama.cpp's fallback type")) << k.err;
  write_bytes(path("keep.json"), R"({"rules": [{"match": "*ffn_down*", "skip": true}]})");
  expect(0, {"quantize", stories, path("p.gguf"), "Q4_0", "--pure", "--params", path("keep.json"), "-q"});
  const json doc = json_of({"inspect", path("p.gguf"), "--json"});
  for (const json& t : doc["tensors"]) {
    const std::string name = t["name"];
    if (contains(name, "ffn_down")) {
      EXPECT_EQ(t["type"], "F32") << name;
    } else if (t["shape"].size() == 2) {
      EXPECT_EQ(t["type"], "Q4_0") << name;
    }
  }
}

// A source whose general.alignment is not 32 keeps its alignment (llama-quantize pads to 32
// regardless: README's list of differences): the key, and every tensor's data offset (the
// reader refuses an offset off the alignment), and the same tensor bytes as at 32.
TEST_F(Cli, AGgufAlignmentOtherThan32IsKept) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_fixture(stories, path("a32.gguf"));
  test::write_gguf_fixture(stories, path("a256.gguf"), 256);
  ASSERT_EQ(open_gguf(path("a256.gguf"))->metadata().alignment, 256u);
  expect(0, {"quantize", path("a32.gguf"), path("q32.gguf"), "Q4_K_M", "-q"});
  expect(0, {"quantize", path("a256.gguf"), path("q256.gguf"), "Q4_K_M", "-q"});
  auto q32 = open_gguf(path("q32.gguf")), q256 = open_gguf(path("q256.gguf"));
  EXPECT_EQ(q32->metadata().alignment, 32u);
  EXPECT_EQ(q256->metadata().alignment, 256u);
  bool keyed = false;
  for (const GgufKV& kv : q256->metadata().kvs) {
    if (kv.key != "general.alignment") continue;
    uint32_t v = 0;
    ASSERT_EQ(kv.value.size(), 4u);
    std::memcpy(&v, kv.value.data(), 4);
    EXPECT_EQ(v, 256u);
    keyed = true;
  }
  EXPECT_TRUE(keyed);
  ASSERT_EQ(q32->tensors().size(), q256->tensors().size());
  for (size_t i = 0; i < q32->tensors().size(); ++i) {
    size_t na = 0, nb = 0;
    const uint8_t* a = q32->raw(i, &na);
    const uint8_t* b = q256->raw(i, &nb);
    ASSERT_EQ(na, nb) << q32->tensors()[i].name;
    EXPECT_EQ(0, std::memcmp(a, b, na)) << q32->tensors()[i].name;
  }
  EXPECT_GT(fs::file_size(path("q256.gguf")), fs::file_size(path("q32.gguf")));
}

// llama-quantize's own command lines (options, IN OUT TYPE [THREADS]) give its files.
TEST_F(Cli, GgufLlamaQuantizeCommandLinesGiveItsFiles) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string fx192 = path("fx-192.gguf"), fx256 = path("fx-256.gguf");
  test::write_gguf_fixture(stories, fx192);
  test::write_gguf_wide_fixture(stories, fx256, test::dense_fixture());
  expect(0, {"quantize", fx192, path("a.gguf"), "Q8_0", "1", "-q"});
  EXPECT_EQ(sha256_file(path("a.gguf")), oracle_sha256("192", "Q8_0", {}));
  expect(0, {"quantize", "--leave-output-tensor", fx192, path("b.gguf"), "q4_0", "-q"});
  EXPECT_EQ(sha256_file(path("b.gguf")), oracle_sha256("192", "Q4_0", {"--leave-output-tensor"}));
  expect(0, {"quantize", fx256, path("c.gguf"), "--type", "BF16", "--threads", "2", "-q"});
  EXPECT_EQ(sha256_file(path("c.gguf")), oracle_sha256("256", "BF16", {}));
  expect(0, {"quantize", fx256, path("d.gguf"), "7", "2", "-q"});  // the file type's number, as llama-quantize takes it
  EXPECT_EQ(sha256_file(path("d.gguf")), oracle_sha256("256", "Q8_0", {}));
  expect(0, {"quantize", stories, path("e.gguf"), "F16", "-q"});
  EXPECT_EQ(sha256_file(path("e.gguf")), oracle_sha256("stories", "F16", {}));
  // Without OUT, IN TYPE [THREADS]: [IN's folder]/ggml-model-TYPE.gguf, as llama-quantize names it.
  expect(0, {"quantize", fx192, "q8_0", "2", "-q"});
  EXPECT_EQ(sha256_file(path("ggml-model-Q8_0.gguf")), oracle_sha256("192", "Q8_0", {}));
  // IN OUT TYPE with an OUT whose extension names no format: GGUF, as llama-quantize writes it.
  expect(0, {"quantize", fx192, path("out-Q8_0"), "Q8_0", "-q"});
  EXPECT_EQ(sha256_file(path("out-Q8_0")), oracle_sha256("192", "Q8_0", {}));
}

TEST_F(Cli, GgufMixOptionsAreCheckedBeforeAnyWork) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  // llama-quantize refuses Q2_K_S without an importance matrix.
  Result r = expect(2, {"quantize", stories, path("o.gguf"), "Q2_K_S"});
  EXPECT_TRUE(contains(r.err, "importance matrix")) << r.err;
  // A K mix sets every type: --bits has nothing to set.
  r = expect(2, {"quantize", stories, path("o.gguf"), "--type", "Q4_K_M", "--bits", "4"});
  EXPECT_TRUE(contains(r.err, "--bits")) << r.err;
  // llama-quantize's options are for GGUF output.
  r = expect(2, {"quantize", stories, path("o.wq"), "--pure"});
  EXPECT_TRUE(contains(r.err, "GGUF output only")) << r.err;
  r = expect(2, {"quantize", stories, path("o.safetensors"), "Q4_K_M"});
  EXPECT_TRUE(contains(r.err, "GGUF output only")) << r.err;
  EXPECT_FALSE(fs::exists(path("o.gguf")));
  // --output-tensor-type / --token-embedding-type: stories260K's tied token_embd is the
  // output matrix; --token-embedding-type then names it (llama-quantize applies it last).
  expect(0, {"quantize", stories, path("t.gguf"), "Q8_0", "--token-embedding-type", "f16", "-q"});
  EXPECT_EQ(tensor(inspect(path("t.gguf")), "token_embd.weight")["type"], "F16");
  // --pure turns off the mix's choices, which --tensor-type edits (as in llama-quantize):
  // said, and the file is --pure's alone.
  r = expect(0, {"quantize", stories, path("p.gguf"), "F16", "--pure", "--tensor-type", "attn_v=q8_0"});
  EXPECT_TRUE(contains(r.err, "--tensor-type has no effect with --pure")) << r.err;
  expect(0, {"quantize", stories, path("p2.gguf"), "F16", "--pure", "-q"});
  EXPECT_EQ(sha256_file(path("p.gguf")), sha256_file(path("p2.gguf")));
}

// --hqq with a K mix refines the minima of its Q4_K tensors (engine/ggml_kquant_hqq.h)
// and leaves every other tensor exactly as llama-quantize writes it.
TEST_F(Cli, HqqRefinesTheQ4KTensorsOfAMixAndNothingElse) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string fx256 = path("fx-256.gguf");
  test::write_gguf_wide_fixture(stories, fx256, test::dense_fixture());
  expect(0, {"quantize", fx256, path("plain.gguf"), "Q4_K_M", "-q"});
  EXPECT_EQ(sha256_file(path("plain.gguf")), oracle_sha256("256", "Q4_K_M", {}));
  expect(0, {"quantize", fx256, path("hqq.gguf"), "Q4_K_M", "--hqq", "--threads", "2", "-q"});
  auto src = open_gguf(fx256), plain = open_gguf(path("plain.gguf")), hqq = open_gguf(path("hqq.gguf"));
  ASSERT_EQ(plain->tensors().size(), hqq->tensors().size());
  int refined = 0, same = 0;
  for (size_t i = 0; i < plain->tensors().size(); ++i) {
    const TensorInfo& t = plain->tensors()[i];
    ASSERT_EQ(t.name, hqq->tensors()[i].name);
    ASSERT_EQ(t.type_name, hqq->tensors()[i].type_name) << t.name;
    size_t na, nb;
    const uint8_t* a = plain->raw(i, &na);
    const uint8_t* b = hqq->raw(i, &nb);
    ASSERT_EQ(na, nb) << t.name;
    if (t.type_name != "Q4_K") {
      EXPECT_EQ(0, std::memcmp(a, b, na)) << t.name << " (" << t.type_name << ") must be llama-quantize's";
      ++same;
      continue;
    }
    const std::vector<float> w = test::read_f32(*src, size_t(src->find(t.name)));
    const std::vector<float> wa = test::read_f32(*plain, i), wb = test::read_f32(*hqq, i);
    EXPECT_LE(array_error(w.data(), wb.data(), w.size()).rel_rmse, array_error(w.data(), wa.data(), w.size()).rel_rmse)
        << t.name;
    refined += std::memcmp(a, b, na) != 0;
  }
  EXPECT_GT(refined, 10);
  EXPECT_GT(same, 10);
  // Its bytes are the same with one thread and the scalar kernels.
  expect(0, {"quantize", fx256, path("hqq1.gguf"), "Q4_K_M", "--hqq", "--threads", "1", "--isa", "scalar", "-q"});
  EXPECT_EQ(sha256_file(path("hqq1.gguf")), sha256_file(path("hqq.gguf")));
  // A mix whose own type stores no minimum has nothing for HQQ to refine: refused, also
  // where every tensor falls back to another type (stories260K's 64/172-wide rows: Q3_K_M
  // gives IQ4_NL, Q5_0 and Q5_1; the Q5_1 ones were refined).
  for (const std::string& model : {fx256, stories}) {
    Result r = expect(2, {"quantize", model, path("x.gguf"), "Q3_K_M", "--hqq"});
    EXPECT_TRUE(contains(r.err, "--hqq with GGUF needs a mix whose type has a minimum")) << r.err;
    EXPECT_TRUE(contains(r.err, "Q3_K_M (Q3_K)")) << r.err;
    EXPECT_FALSE(fs::exists(path("x.gguf")));
  }
  // Where a K mix's rows fall back to a legacy type with a minimum (Q5_K_M's Q5_1 on the
  // 192 fixture), those tensors keep llama-quantize's bytes, and a note says so.
  const std::string fx192 = path("fx-192.gguf");
  test::write_gguf_fixture(stories, fx192);
  expect(0, {"quantize", fx192, path("p5.gguf"), "Q5_K_M", "-q"});
  EXPECT_EQ(sha256_file(path("p5.gguf")), oracle_sha256("192", "Q5_K_M", {}));
  Result r = expect(0, {"quantize", fx192, path("h5.gguf"), "Q5_K_M", "--hqq"});
  EXPECT_EQ(sha256_file(path("h5.gguf")), sha256_file(path("p5.gguf")));
  EXPECT_TRUE(contains(r.err, "blk.0.attn_k.weight: rows of 64 are not a multiple of 256, required by Q5_K: Q5_1 instead, "
                              "as llama-quantize falls back; no --hqq for Q5_1")) << r.err;
  // A Q5_1 asked for by name (--tensor-type) is refined: only llama.cpp's fallbacks are not.
  expect(0, {"quantize", fx192, path("t5.gguf"), "Q5_K_M", "--tensor-type", "attn_q=q5_1", "-q"});
  expect(0, {"quantize", fx192, path("t5h.gguf"), "Q5_K_M", "--tensor-type", "attn_q=q5_1", "--hqq", "-q"});
  auto t5 = open_gguf(path("t5.gguf")), t5h = open_gguf(path("t5h.gguf"));
  for (size_t i = 0; i < t5->tensors().size(); ++i) {
    size_t na, nb;
    const uint8_t* a = t5->raw(i, &na);
    const uint8_t* b = t5h->raw(i, &nb);
    ASSERT_EQ(na, nb);
    EXPECT_EQ(std::memcmp(a, b, na) != 0, contains(t5->tensors()[i].name, "attn_q")) << t5->tensors()[i].name;
  }
  // Where no tensor is left for HQQ (stories260K's 64-wide rows: every Q4_K falls back to
  // Q5_0), --hqq changes nothing, and says so.
  r = expect(0, {"quantize", stories, path("s.gguf"), "Q4_K_M", "--hqq"});
  EXPECT_TRUE(contains(r.err, "wquant: warning: --hqq refines no tensor here")) << r.err;
}

}  // namespace
}  // namespace wq

namespace wq {
namespace {

TEST_F(Cli, GgufImatrixOptions) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string im = test::test_data_dir() + "/imatrix-stories.dat";
  expect(0, {"quantize", "--imatrix", im, stories, path("a.gguf"), "F16", "-q"});
  // A truncated imatrix is bad input: exit 3, naming the file; nothing written.
  std::ifstream in(im, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(path("cut.dat"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  Result r = expect(3, {"quantize", "--imatrix", path("cut.dat"), stories, path("b.gguf"), "F16"});
  EXPECT_TRUE(contains(r.err, path("cut.dat") + ": entry ")) << r.err;
  EXPECT_FALSE(fs::exists(path("b.gguf")));
  r = expect(2, {"quantize", stories, path("b.gguf"), "F16", "--include-weights", "attn"});
  EXPECT_TRUE(contains(r.err, "needs --imatrix")) << r.err;
  r = expect(2, {"quantize", "--imatrix", im, "--include-weights", "a", "--exclude-weights", "b", stories, path("b.gguf"), "F16"});
  EXPECT_TRUE(contains(r.err, "cannot be used together")) << r.err;
  // Q2_K_S with an imatrix whose entries the filter all dropped: refused as without one.
  r = expect(2, {"quantize", "--imatrix", im, "--include-weights", "no-such-tensor", stories, path("b.gguf"), "Q2_K_S"});
  EXPECT_TRUE(contains(r.err, "needs an importance matrix")) << r.err;
}

}  // namespace
}  // namespace wq

namespace wq {
namespace {

TEST_F(Cli, GgufRequantizeIsRefusedUnlessAllowed) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string fx = path("fx-192.gguf"), q8 = path("q8.gguf");
  test::write_gguf_fixture(stories, fx);
  expect(0, {"quantize", fx, q8, "Q8_0", "-q"});
  Result r = expect(3, {"quantize", q8, path("a.gguf"), "Q4_0"});
  EXPECT_TRUE(contains(r.err, "blk.0.attn_k.weight: requantizing from type Q8_0 to Q4_0 is disabled")) << r.err;
  EXPECT_TRUE(contains(r.err, "--allow-requantize")) << r.err;
  EXPECT_FALSE(fs::exists(path("a.gguf")));
  r = expect(0, {"quantize", "--allow-requantize", q8, path("a.gguf"), "Q4_0"});
  EXPECT_TRUE(contains(r.err, "warning: --allow-requantize: 35 tensors")) << r.err;
  EXPECT_EQ(sha256_file(path("a.gguf")), oracle_sha256("192-Q8_0", "Q4_0", {"--allow-requantize"}));
}

// Where a tensor's bytes start in its file (the GGUF reader's mapping).
uint64_t tensor_offset(const std::string& file, const std::string& name) {
  const std::unique_ptr<ModelReader> r = open_model(file);
  for (size_t i = 0; i < r->tensors().size(); ++i) {
    if (r->tensors()[i].name != name) continue;
    size_t n = 0;
    const uint8_t* p = r->raw(i, &n);
    uint64_t off = 0;
    if (r->raw_mapping(i).offset_of(p, n, &off)) return off;
  }
  ADD_FAILURE() << name << " not found in " << file;
  return 0;
}
void patch_file(const std::string& file, uint64_t at, const void* p, size_t n) {
  std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(std::streamoff(at));
  f.write(static_cast<const char*>(p), std::streamsize(n));
}

// A NaN or Inf in a tensor GGUF output holds as it is (a norm vector, blocks already of
// the chosen type) is refused, as llama-quantize refuses it (llama.cpp will not load such
// a file); wquant's own formats copy it, as the README says.
TEST_F(Cli, GgufOutputRefusesNonFiniteValuesInTensorsItCopies) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string fx = path("fx.gguf"), q4 = path("q4.gguf");
  test::write_gguf_fixture(stories, fx);
  expect(0, {"quantize", fx, q4, "Q4_0", "-q"});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  patch_file(fx, tensor_offset(fx, "blk.0.attn_norm.weight") + 3 * 4, &nan, 4);
  Result r = expect(3, {"quantize", fx, path("a.gguf"), "Q8_0"});
  EXPECT_TRUE(contains(r.err, "blk.0.attn_norm.weight: row 0, column 3: NaN or Inf")) << r.err;
  EXPECT_FALSE(fs::exists(path("a.gguf")));
  expect(0, {"quantize", fx, path("a.wq"), "-q"});  // .wq copies a kept norm as it is
  // An Inf scale d (f16 0x7C00) in the second Q4_0 block of a tensor copied as Q4_0.
  const uint16_t inf16 = 0x7C00;
  patch_file(q4, tensor_offset(q4, "blk.1.ffn_up.weight") + 18, &inf16, 2);
  r = expect(3, {"quantize", q4, path("b.gguf"), "Q4_0"});
  EXPECT_TRUE(contains(r.err, "blk.1.ffn_up.weight: row 0, column 32: NaN or Inf")) << r.err;
  EXPECT_FALSE(fs::exists(path("b.gguf")));
  // A finite weight that BF16 rounds to Inf is said to be one (it read as a NaN or Inf weight).
  test::write_gguf_fixture(stories, fx);
  const float top = std::numeric_limits<float>::max();
  patch_file(fx, tensor_offset(fx, "blk.0.attn_q.weight") + 3 * 4, &top, 4);
  r = expect(3, {"quantize", fx, path("c.gguf"), "BF16"});
  EXPECT_TRUE(contains(r.err, "blk.0.attn_q.weight: row 0, column 3: NaN or Inf once stored as BF16 (a NaN or Inf weight, "
                              "or one past 3.38953e+38")) << r.err;
  EXPECT_FALSE(fs::exists(path("c.gguf")));
}

// ggml types wquant has no kernels for (the IQ1/IQ2/IQ3 and TQ types) are read, named and
// copied, and refused where they would be requantized, as llama-quantize does: here an
// IQ3_S output matrix (the bytes of a Q3_K one under IQ3_S's id: the same 110-byte blocks).
TEST_F(Cli, GgufTypesWithoutKernelsAreCopiedOrRefusedAsLlamaQuantizeDoes) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string wide = path("wide.gguf"), q3 = path("q3.gguf"), iq3 = path("iq3.gguf");
  test::write_gguf_wide_fixture(stories, wide, test::dense_fixture());
  expect(0, {"quantize", "--pure", wide, q3, "Q3_K_S", "-q"});
  std::string bytes;
  {
    std::ifstream in(q3, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // The tensor info: u64 length, the name, u32 n_dims (2), two u64 dims, u32 type.
  const std::string name = "output.weight";
  std::string key(8, '\0');
  const uint64_t len = name.size();
  std::memcpy(key.data(), &len, 8);
  key += name;
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  const size_t type_at = at + key.size() + 4 + 16;
  uint32_t type = 0;
  std::memcpy(&type, bytes.data() + type_at, 4);
  ASSERT_EQ(type, 11u);  // Q3_K
  type = 21;             // IQ3_S
  std::memcpy(bytes.data() + type_at, &type, 4);
  std::ofstream(iq3, std::ios::binary) << bytes;
  Result r = expect(0, {"inspect", iq3});
  EXPECT_TRUE(contains(r.out, "IQ3_S (llama.cpp blocks of 256)")) << r.out;
  // Copied where the tensor is left as it is; every other tensor is Q3_K already.
  expect(0, {"quantize", "--pure", "--leave-output-tensor", iq3, path("a.gguf"), "Q3_K_S", "-q"});
  r = expect(0, {"inspect", path("a.gguf")});
  EXPECT_TRUE(contains(r.out, "IQ3_S (llama.cpp blocks of 256)")) << r.out;
  r = expect(3, {"quantize", "--pure", iq3, path("b.gguf"), "Q3_K_S"});
  EXPECT_TRUE(contains(r.err, "output.weight: requantizing from type IQ3_S to Q3_K is disabled")) << r.err;
  r = expect(3, {"quantize", "--pure", "--allow-requantize", iq3, path("b.gguf"), "Q3_K_S"});
  EXPECT_TRUE(contains(r.err, "output.weight: --allow-requantize: wquant cannot dequantize type IQ3_S")) << r.err;
  EXPECT_FALSE(fs::exists(path("b.gguf")));
}

}  // namespace
}  // namespace wq

namespace wq {
namespace {

// A split GGUF input (llama.cpp's shard names): read as one model, written as one file
// (llama-quantize's without --keep-split); OUT may not be one of its shards.
TEST_F(Cli, GgufSplitInputGivesLlamaQuantizesSingleFile) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string prefix = path("m");
  test::write_gguf_fixture_split(stories, prefix, 20);
  expect(0, {"quantize", prefix + "-00001-of-00003.gguf", path("a.gguf"), "Q8_0", "-q"});
  EXPECT_EQ(sha256_file(path("a.gguf")), oracle_sha256("split", "Q8_0", {}));
  const Result r = expect(4, {"quantize", prefix + "-00001-of-00003.gguf", prefix + "-00003-of-00003.gguf", "Q8_0", "--force"});
  EXPECT_TRUE(contains(r.err, "-00003-of-00003.gguf")) << r.err;
}

// --keep-split writes one output a shard: an input shard but the first that holds no
// tensors has none (llama-quantize cannot write one either): refused, naming it, before
// anything is written; without --keep-split the same split is one model as usual.
TEST_F(Cli, KeepSplitRefusesAnInputShardButTheFirstWithoutTensors) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_fixture_split(stories, path("m"), 20, 1);  // 4 shards, the second empty
  fs::create_directory(path("out"));
  const Result r = expect(2, {"quantize", "--keep-split", path("m-00001-of-00004.gguf"), path("out/q.gguf"), "Q8_0"});
  EXPECT_TRUE(contains(r.err, path("m-00002-of-00004.gguf") + ": this shard holds no tensors")) << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  EXPECT_TRUE(fs::is_empty(path("out")));
  expect(0, {"quantize", path("m-00001-of-00004.gguf"), path("out/one.gguf"), "Q8_0", "-q"});
  EXPECT_EQ(sha256_file(path("out/one.gguf")), oracle_sha256("split", "Q8_0", {}));
}

// Ctrl-C while the shards of a --keep-split output are being renamed into place (the
// test holds the run right after the first rename, the moment an unguarded shard would
// be left): the shards already renamed are removed too, none is left.
TEST_F(Cli, CtrlCDuringTheShardRenamesLeavesNoShard) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_fixture_split(stories, path("m"), 20);
  fs::create_directory(path("out"));
  expect_ctrl_c_after_a_rename_leaves_nothing(
      dir_, {"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q8_0", "-q"},
      path("out/q-00001-of-00003.gguf"), path("out/q-00003-of-00003.gguf"));
}

// The same with --force over an earlier run's shards: Ctrl-C after the first shard is
// replaced puts every earlier shard back as it was (none lost, no mixed set, nothing left
// beside them); and a finished run replaces them all and keeps their permissions.
TEST_F(Cli, CtrlCDuringTheShardRenamesPutsTheEarlierShardsBack) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  std::vector<std::string> before;
  const std::vector<std::string> shards = earlier_shards(stories, &before);
  struct stat st0;
  ASSERT_EQ(::stat(shards[0].c_str(), &st0), 0);
  Child c = spawn({"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q4_0", "--force", "-q"},
                  {{"WQUANT_TEST_RENAME_PAUSE_MS", "3000"}});
  // Waits (up to 30 s) until the first shard is a new file: the renames have begun.
  auto first_replaced = [&] {
    for (int i = 0; i < 6000; ++i) {
      struct stat st;
      if (::stat(shards[0].c_str(), &st) == 0 && st.st_ino != st0.st_ino) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  };
  ASSERT_TRUE(first_replaced()) << shards[0] << " was never replaced";
  kill(c.pid, SIGINT);
  const Result r = finish(c);
  EXPECT_EQ(r.code, 130) << r.out << r.err;
  for (size_t k = 0; k < shards.size(); ++k) EXPECT_TRUE(read_bytes(shards[k]) == before[k]) << shards[k];
  const auto files = std::distance(fs::directory_iterator(path("out")), fs::directory_iterator());
  EXPECT_EQ(size_t(files), shards.size()) << "a temporary or backup file was left beside the shards";
  // The same with SIGHUP sent twice (its handler resets to the default as it runs) and a
  // params file written by the run: the earlier shards back, the params file removed,
  // nothing else left (it died of the second SIGHUP mid-rename, leaving a mixed set, and
  // the first skipped the clean-up).
  Child h = spawn({"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q4_0", "--force",
                   "--params", path("out/p.json"), "-q"},
                  {{"WQUANT_TEST_RENAME_PAUSE_MS", "1500"}});
  ASSERT_TRUE(first_replaced()) << shards[0] << " was never replaced";
  kill(h.pid, SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(h.pid, SIGHUP);
  const Result rh = finish(h);
  EXPECT_EQ(rh.code, 128 + SIGHUP) << rh.out << rh.err;
  for (size_t k = 0; k < shards.size(); ++k) EXPECT_TRUE(read_bytes(shards[k]) == before[k]) << shards[k];
  EXPECT_FALSE(fs::exists(path("out/p.json")));
  EXPECT_EQ(size_t(std::distance(fs::directory_iterator(path("out")), fs::directory_iterator())), shards.size());
  // Uninterrupted, every shard is replaced, and a private shard stays private.
  ASSERT_EQ(::chmod(shards[1].c_str(), 0600), 0);
  expect(0, {"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q4_0", "--force", "-q"});
  for (size_t k = 0; k < shards.size(); ++k) EXPECT_FALSE(read_bytes(shards[k]) == before[k]) << shards[k];
  struct stat st1;
  ASSERT_EQ(::stat(shards[1].c_str(), &st1), 0);
  EXPECT_EQ(st1.st_mode & 0777, 0600u);
}

// --- what a failed link or rename leaves, and the syncs around a rename -----------------
// No real file system fails a link or a rename on demand, so these runs preload
// tests/fault_shim.cpp, which logs those calls and the syncs and fails the ones asked.

// `env` with the fault library preloaded into the program (into the emulated program
// under a cross build's emulator), where the sanitizers let it come before them.
std::map<std::string, std::string> with_fault_shim(std::map<std::string, std::string> env) {
  if (std::strlen(WQUANT_BIN_LAUNCHER) == 0) {
    env["LD_PRELOAD"] = WQUANT_FAULT_SHIM;
  } else {
    env["QEMU_SET_ENV"] = std::string("LD_PRELOAD=") + WQUANT_FAULT_SHIM;
  }
  const char* asan = std::getenv("ASAN_OPTIONS");
  env["ASAN_OPTIONS"] = (asan && *asan ? std::string(asan) + ":" : std::string()) + "verify_asan_link_order=0";
  env["WQUANT_NO_FSYNC"] = "";  // (removed: the syncs are part of what is checked)
  return env;
}

// The fault library's log, one call a line, split at its tabs ("rename FROM TO RC", "link
// FROM TO RC", "fsync dir|file INODE RC").
std::vector<std::vector<std::string>> fault_log(const std::string& file) {
  std::vector<std::vector<std::string>> calls;
  std::istringstream lines(read_bytes(file));
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<std::string> call;
    for (std::string f; std::getline(fields, f, '\t');) call.push_back(f);
    if (!call.empty()) calls.push_back(call);
  }
  return calls;
}

ino_t inode_of(const std::string& file) {
  struct stat st {};
  EXPECT_EQ(::stat(file.c_str(), &st), 0) << file;
  return st.st_ino;
}

bool is_sync_of(const std::vector<std::string>& call, const char* kind, ino_t ino) {
  return (call[0] == "fsync" || call[0] == "fdatasync") && call.size() == 4 && call[1] == kind &&
         call[2] == std::to_string(ino) && call[3] == "0";
}

// Each file of a result is synced before it is renamed into place, and the directory is
// synced after the last rename (a crash after the run cannot lose the new name); with
// WQUANT_NO_FSYNC neither is done. One file (.wq) and a --keep-split result's shards.
TEST_F(Cli, EveryFileIsSyncedBeforeItsRenameAndTheDirectoryAfter) {
  WQ_REQUIRE_SHARED(st, kStoriesSt);
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_fixture_split(stories, path("m"), 20);
  fs::create_directory(path("out"));
  const ino_t dir = inode_of(path("out"));
  auto check = [&](const std::vector<std::string>& args, const std::vector<std::string>& outs) {
    SCOPED_TRACE(args[1]);
    fs::remove(path("log"));
    expect(0, args, with_fault_shim({{"WQ_FAULT_LOG", path("log")}}));
    const auto calls = fault_log(path("log"));
    size_t last_rename = 0;
    for (const std::string& out : outs) {
      const ino_t ino = inode_of(out);  // (a rename keeps the inode)
      // (link: where the file system has no RENAME_NOREPLACE, a new name is linked, then
      // the temporary unlinked)
      const auto rename = std::find_if(calls.begin(), calls.end(), [&](const auto& c) {
        return (c[0] == "rename" || c[0] == "link") && c.size() == 4 && c[2] == out && c[3] == "0";
      });
      ASSERT_NE(rename, calls.end()) << out << " was not renamed into place:\n" << read_bytes(path("log"));
      EXPECT_TRUE(std::any_of(calls.begin(), rename, [&](const auto& c) { return is_sync_of(c, "file", ino); }))
          << out << " was not synced before its rename:\n" << read_bytes(path("log"));
      last_rename = std::max(last_rename, size_t(rename - calls.begin()));
    }
    EXPECT_TRUE(std::any_of(calls.begin() + long(last_rename), calls.end(), [&](const auto& c) { return is_sync_of(c, "dir", dir); }))
        << "the directory was not synced after the renames:\n" << read_bytes(path("log"));
    // Without fsync: no sync of either (the log is the one that saw them above).
    fs::remove(path("log"));
    auto no_fsync = with_fault_shim({{"WQ_FAULT_LOG", path("log")}});
    no_fsync["WQUANT_NO_FSYNC"] = "1";
    std::vector<std::string> forced = args;
    forced.push_back("--force");
    expect(0, forced, no_fsync);
    for (const auto& c : fault_log(path("log"))) {
      EXPECT_FALSE(c[0] == "fsync" || c[0] == "fdatasync") << "synced with WQUANT_NO_FSYNC=1:\n" << read_bytes(path("log"));
    }
  };
  check({"quantize", st, path("out/a.wq"), "-q"}, {path("out/a.wq")});
  check({"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q8_0", "-q"},
        {path("out/q-00001-of-00003.gguf"), path("out/q-00002-of-00003.gguf"), path("out/q-00003-of-00003.gguf")});
}

// A disk that fills while OUT is written (the shim's ENOSPC after so many bytes, early and
// late in the file), or a final sync that fails: exit 4 naming OUT and the cause, nothing
// left beside it, and the OUT that --force was replacing as it was (.wq and safetensors
// output; GGUF and ONNX write through the same OutputFile).
TEST_F(Cli, ADiskThatFillsGivesExit4AndLeavesTheEarlierOut) {
  write_synthetic_safetensors(path("m.safetensors"), 4, 64, 256);
  fs::create_directory(path("out"));
  for (const char* name : {"o.wq", "o.safetensors"}) {
    const std::string out = path(std::string("out/") + name);
    expect(0, {"quantize", path("m.safetensors"), out, "--bits", "8", "-q"});
    const std::string before = read_bytes(out);
    const auto files_in_out = [&] { return size_t(std::distance(fs::directory_iterator(path("out")), fs::directory_iterator())); };
    const size_t files = files_in_out();
    for (const size_t after : {size_t(0), size_t(1000), before.size() / 2}) {
      SCOPED_TRACE(std::string(name) + " full after " + std::to_string(after));
      const Result r = expect(4, {"quantize", path("m.safetensors"), out, "--bits", "4", "--force", "-q"},
                              with_fault_shim({{"WQ_FAULT_DISK_FULL_AFTER", std::to_string(after)}}));
      EXPECT_TRUE(contains(r.err, out)) << r.err;
      EXPECT_TRUE(contains(r.err, "disk full")) << r.err;
      EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
      EXPECT_TRUE(read_bytes(out) == before);
      EXPECT_EQ(files_in_out(), files) << "a temporary file was left";
    }
    // The same where the final sync fails (EIO: the bytes may not be on the disk).
    const Result r = expect(4, {"quantize", path("m.safetensors"), out, "--bits", "4", "--force", "-q"},
                            with_fault_shim({{"WQ_FAULT_SYNC_ERRNO", std::to_string(EIO)}}));
    EXPECT_TRUE(contains(r.err, out + ": fsync failed")) << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
    EXPECT_TRUE(read_bytes(out) == before);
    EXPECT_EQ(files_in_out(), files) << "a temporary file was left";
  }
}

// The directory's fsync after the rename fails (EIO): the file is under its name, but the
// name may not survive a crash, so the run fails (exit 4, one line naming OUT and saying it
// is in place), OUT staying, with the params file the run wrote for it. A params file whose
// own sync fails (it is renamed, and synced, before OUT) is removed again and OUT is then
// not written. A file system that cannot sync a directory (EINVAL, as CIFS) is no failure.
TEST_F(Cli, ADirectorySyncThatFailsAfterTheRenameFailsTheRun) {
  write_synthetic_safetensors(path("m.safetensors"), 4, 64, 256);
  fs::create_directory(path("out"));
  const std::string out = path("out/o.wq"), params = path("out/p.json");
  expect(0, {"quantize", path("m.safetensors"), path("ref.wq"), "--bits", "4", "-q"});
  const std::string eio = std::to_string(EIO);
  Result r = expect(4, {"quantize", path("m.safetensors"), out, "--bits", "4", "-q"}, with_fault_shim({{"WQ_FAULT_DIR_SYNC_ERRNO", eio}}));
  EXPECT_TRUE(contains(r.err, out + ": renamed into place, but the directory's fsync failed, so it may not survive a crash: " +
                                  std::strerror(EIO)))
      << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  EXPECT_TRUE(read_bytes(out) == read_bytes(path("ref.wq")));
  // With a params file: OUT's sync fails (the second), both stay.
  fs::remove(out);
  r = expect(4, {"quantize", path("m.safetensors"), out, "--bits", "4", "--params", params, "-q"},
             with_fault_shim({{"WQ_FAULT_DIR_SYNC_ERRNO", eio}, {"WQ_FAULT_DIR_SYNC_AFTER", "1"}}));
  EXPECT_TRUE(contains(r.err, out + ": renamed into place, but the directory's fsync failed")) << r.err;
  EXPECT_TRUE(read_bytes(out) == read_bytes(path("ref.wq")));
  EXPECT_TRUE(fs::exists(params));
  // The params file's own sync fails (the first): it goes, OUT is not written.
  fs::remove(out);
  fs::remove(params);
  r = expect(4, {"quantize", path("m.safetensors"), out, "--bits", "4", "--params", params, "-q"},
             with_fault_shim({{"WQ_FAULT_DIR_SYNC_ERRNO", eio}}));
  EXPECT_TRUE(contains(r.err, params + ": renamed into place, but the directory's fsync failed, so it was removed again")) << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  EXPECT_TRUE(fs::is_empty(path("out"))) << "left: " << fs::directory_iterator(path("out"))->path();
  // EINVAL: this file system syncs no directory; nothing failed.
  expect(0, {"quantize", path("m.safetensors"), out, "--bits", "4", "-q"},
         with_fault_shim({{"WQ_FAULT_DIR_SYNC_ERRNO", std::to_string(EINVAL)}}));
  EXPECT_TRUE(read_bytes(out) == read_bytes(path("ref.wq")));
  // Without fsync (WQUANT_NO_FSYNC=1) the directory is not synced, so nothing fails.
  auto no_fsync = with_fault_shim({{"WQ_FAULT_DIR_SYNC_ERRNO", eio}});
  no_fsync["WQUANT_NO_FSYNC"] = "1";
  expect(0, {"quantize", path("m.safetensors"), out, "--bits", "4", "--force", "-q"}, no_fsync);
}

// The files a --force run replaces are linked aside before any rename; where that fails
// (a file system without hard links, protected_hardlinks), the run stops before the first
// rename, says why, and every earlier file is as it was with nothing beside it.
TEST_F(Cli, AReplacedFileThatCannotBeLinkedAsideStopsTheRunBeforeAnyRename) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  std::vector<std::string> before;
  const std::vector<std::string> shards = earlier_shards(stories, &before);
  const Result r = expect(4, {"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q4_0", "--force", "-q"},
                          with_fault_shim({{"WQ_FAULT_LOG", path("log")}, {"WQ_FAULT_LINK_ERRNO", std::to_string(EPERM)}}));
  EXPECT_TRUE(contains(r.err, shards[0] + ": cannot link the file it replaces aside (" + std::strerror(EPERM) + ")")) << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  for (size_t k = 0; k < shards.size(); ++k) EXPECT_TRUE(read_bytes(shards[k]) == before[k]) << shards[k];
  EXPECT_EQ(size_t(std::distance(fs::directory_iterator(path("out")), fs::directory_iterator())), shards.size());
  for (const auto& c : fault_log(path("log"))) EXPECT_NE(c[0], "rename") << read_bytes(path("log"));
}

// A later file of the result that cannot be renamed into place: the earlier ones are put
// back from their backups (the old set whole, nothing left beside it); and where a backup
// cannot be renamed back either, it is kept and named in the error, holding the old file.
TEST_F(Cli, AFailedRenamePutsTheEarlierFilesBackOrKeepsAndNamesTheirBackups) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_fixture_split(stories, path("m"), 20);
  fs::create_directory(path("out"));
  const std::vector<std::string> shards = {path("out/q-00001-of-00003.gguf"), path("out/q-00002-of-00003.gguf"),
                                           path("out/q-00003-of-00003.gguf")};
  const std::vector<std::string> args = {"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"),
                                         "Q4_0", "--force", "-q"};
  expect(0, {"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q8_0", "-q"});
  std::vector<std::string> before;
  for (const std::string& f : shards) before.push_back(read_bytes(f));
  const auto files_in_out = [&] {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path("out"))) names.push_back(e.path().string());
    std::sort(names.begin(), names.end());
    return names;
  };
  Result r = expect(4, args,
                    with_fault_shim({{"WQ_FAULT_RENAME_TO", "-00003-of-00003.gguf"},
                                     {"WQ_FAULT_RENAME_ERRNO", std::to_string(ENOSPC)}}));
  EXPECT_TRUE(contains(r.err, shards[2] + ": cannot rename the finished file into place")) << r.err;
  EXPECT_TRUE(contains(r.err, "into place: disk full")) << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  for (size_t k = 0; k < shards.size(); ++k) EXPECT_TRUE(read_bytes(shards[k]) == before[k]) << shards[k];
  EXPECT_EQ(files_in_out(), shards) << "a temporary or backup file was left beside the shards";
  // The backups of shards 1 and 2 cannot be renamed back either: both kept, named, and
  // holding the old shards (the new ones stay under the shards' names).
  r = expect(4, args,
             with_fault_shim({{"WQ_FAULT_RENAME_TO", "-00003-of-00003.gguf"},
                              {"WQ_FAULT_RENAME_ERRNO", std::to_string(ENOSPC)},
                              {"WQ_FAULT_RESTORE_ERRNO", std::to_string(EIO)}}));
  EXPECT_TRUE(contains(r.err, "the earlier files could not all be put back")) << r.err;
  EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
  size_t backups = 0;
  for (const std::string& f : files_in_out()) {
    if (std::find(shards.begin(), shards.end(), f) != shards.end()) continue;
    ASSERT_TRUE(f.size() > 4 && f.compare(f.size() - 4, 4, "-old") == 0) << "left beside the shards: " << f;
    ++backups;
    EXPECT_TRUE(contains(r.err, f)) << f << " is not named: " << r.err;
    const std::string bytes = read_bytes(f);
    EXPECT_TRUE(bytes == before[0] || bytes == before[1]) << f << " does not hold an old shard";
  }
  EXPECT_EQ(backups, 2u);
  EXPECT_FALSE(read_bytes(shards[0]) == before[0]);
  EXPECT_FALSE(read_bytes(shards[1]) == before[1]);
  EXPECT_TRUE(read_bytes(shards[2]) == before[2]);
  // The next run to the same OUT keeps them (the only copies of the old shards; it removed
  // them as a dead run's leftovers) and says where they are.
  const std::vector<std::string> kept = files_in_out();
  r = expect(0, {"quantize", "--keep-split", path("m-00001-of-00003.gguf"), path("out/q.gguf"), "Q8_0", "--force"});
  EXPECT_EQ(files_in_out(), kept);
  for (const std::string& f : kept) {
    if (std::find(shards.begin(), shards.end(), f) != shards.end()) continue;
    EXPECT_TRUE(contains(r.err, "wquant: warning: " + f + " holds an earlier ")) << r.err;
  }
  // (Restoring one shard alone would mix two results: said.)
  EXPECT_TRUE(contains(r.err, "restore it only with the other files of the same earlier result")) << r.err;
}

// llama-quantize's sha256 of shard k (0-based) of a --keep-split run
// (tests/data/llama_quantize_split_digests.json).
std::string oracle_shard_sha256(const std::string& fixture, const std::string& mix, size_t k) {
  std::ifstream f(test::test_data_dir() + "/llama_quantize_split_digests.json");
  const json doc = json::parse(f);
  for (const json& r : doc["runs"]) {
    if (r["fixture"] == fixture && r["mix"] == mix && r["options"].empty() && k < r["shards"].size()) {
      return r["shards"][k]["sha256"];
    }
  }
  ADD_FAILURE() << "no --keep-split run " << fixture << " " << mix << " shard " << k;
  return "";
}

// --keep-split: one output shard an input shard, llama-quantize's files; OUT loses a final
// .gguf; what llama-quantize cannot do or would mangle is refused before any work.
TEST_F(Cli, GgufKeepSplitGivesLlamaQuantizesShards) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string prefix = path("m"), first = prefix + "-00001-of-00003.gguf";
  test::write_gguf_fixture_split(stories, prefix, 20);
  expect(0, {"quantize", "--keep-split", first, path("q.gguf"), "Q4_K_M", "-q"});
  expect(0, {"quantize", first, path("r"), "Q8_0", "2", "--keep-split", "-q"});  // llama-quantize's form, OUT without .gguf
  for (size_t k = 0; k < 3; ++k) {
    const std::string tail = "-0000" + std::to_string(k + 1) + "-of-00003.gguf";
    EXPECT_EQ(sha256_file(path("q" + tail)), oracle_shard_sha256("split", "Q4_K_M", k)) << k;
    EXPECT_EQ(sha256_file(path("r" + tail)), oracle_shard_sha256("split", "Q8_0", k)) << k;
  }
  EXPECT_FALSE(fs::exists(path("q.gguf")));
  // An input that is not split: one shard, OUT-00001-of-00001.gguf, tensors in file order.
  test::write_gguf_fixture(stories, path("fx-192.gguf"));
  Result r = expect(0, {"quantize", "--keep-split", path("fx-192.gguf"), path("u.gguf"), "Q4_K_M"});
  EXPECT_TRUE(contains(r.err, "is not split")) << r.err;
  EXPECT_EQ(sha256_file(path("u-00001-of-00001.gguf")), oracle_shard_sha256("192", "Q4_K_M", 0));
  // An output shard that is an input shard: never overwritten, even with --force.
  r = expect(4, {"quantize", "--keep-split", first, prefix + ".gguf", "Q8_0", "--force"});
  EXPECT_TRUE(contains(r.err, first + ": is the input file")) << r.err;
  // An existing shard without --force.
  r = expect(4, {"quantize", "--keep-split", first, path("q"), "Q8_0"});
  EXPECT_TRUE(contains(r.err, path("q-00001-of-00003.gguf") + ": already exists")) << r.err;
  // ".gguf" inside OUT: llama-quantize would cut OUT's last five characters.
  r = expect(2, {"quantize", "--keep-split", first, path("x.gguf.d"), "Q8_0"});
  EXPECT_TRUE(contains(r.err, path("x.gguf.d") + ": with --keep-split")) << r.err;
  r = expect(2, {"quantize", "--keep-split", first, path("o.wq"), "--format", "wq", "--bits", "4"});
  EXPECT_TRUE(contains(r.err, "GGUF output only")) << r.err;
  // Nothing but the finished shards (no temporary files, no shards of refused runs).
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(path(""))) names.insert(e.path().filename().string());
  for (const char* n : {"r-00001-of-00003.gguf", "q-00003-of-00003.gguf", "u-00001-of-00001.gguf"}) EXPECT_TRUE(names.count(n)) << n;
  for (const std::string& n : names) {
    EXPECT_EQ(n.find("wquant-tmp"), std::string::npos) << n;
    EXPECT_NE(n.rfind("x.gguf", 0), 0u) << n;
    EXPECT_NE(n.rfind("o", 0), 0u) << n;
  }
}

}  // namespace
}  // namespace wq

// --- the stop-38 review of the safetensors, .wq and bench paths ---------------------------
namespace wq {
namespace {

// An F32 safetensors header entry and its bytes, for tensors laid out one after another.
struct F32Tensor {
  std::string name;
  int64_t rows, cols;
  std::vector<float> values;  // empty: a fixed pattern
};
void write_f32_safetensors(const std::string& file, const std::vector<F32Tensor>& ts) {
  json h = json::object();
  std::string data;
  for (const F32Tensor& t : ts) {
    std::vector<float> v = t.values;
    for (int64_t i = int64_t(v.size()); i < t.rows * t.cols; ++i) v.push_back(float((i * 37) % 101 - 50) / 1000.0f);
    const size_t at = data.size();
    data.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    h[t.name] = {{"dtype", "F32"}, {"shape", {t.rows, t.cols}}, {"data_offsets", {at, data.size()}}};
  }
  write_raw_safetensors(file, h.dump(), data);
}
// A safetensors file's header and data section.
std::pair<json, std::string> read_safetensors(const std::string& file) {
  const std::string b = read_bytes(file);
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  return {json::parse(b.substr(8, n)), b.substr(8 + n)};
}

// A wquant safetensors output sharded anew, NAME.qweight in one shard and its .scales and
// .zeros in another: each piece is read from its own shard (they were read from the
// .qweight's, giving garbage with exit 0).
TEST_F(Cli, QuantizedSafetensorsPiecesAreReadFromTheirOwnShards) {
  write_f32_safetensors(path("float.safetensors"), {{"a.weight", 8, 64, {}}});
  expect(0, {"quantize", path("float.safetensors"), path("q.safetensors"), "--asym", "--block", "32", "-q"});
  auto [h, data] = read_safetensors(path("q.safetensors"));
  const json meta = h["__metadata__"];
  h.erase("__metadata__");
  auto shard = [&, &h = h, &data = data](const std::string& file, const std::vector<std::string>& names, const json& m) {
    json out = {{"__metadata__", m}};
    std::string bytes;
    for (const std::string& n : names) {
      const uint64_t b = h[n]["data_offsets"][0], e = h[n]["data_offsets"][1];
      json t = h[n];
      t["data_offsets"] = {bytes.size(), bytes.size() + (e - b)};
      bytes += data.substr(b, e - b);
      out[n] = t;
    }
    write_raw_safetensors(path(file), out.dump(), bytes);
  };
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  shard(s1, {"a.weight.qweight"}, meta);
  shard(s2, {"a.weight.scales", "a.weight.zeros"}, json{{"wquant.format_version", "1"}});
  const json index = {{"metadata", json::object()},
                      {"weight_map", {{"a.weight.qweight", s1}, {"a.weight.scales", s2}, {"a.weight.zeros", s2}}}};
  write_bytes(path("model.safetensors.index.json"), index.dump());
  const Result one = expect(0, {"verify", path("float.safetensors"), path("q.safetensors"), "--json"});
  const Result two = expect(0, {"verify", path("float.safetensors"), path("model.safetensors.index.json"), "--json"});
  EXPECT_EQ(json::parse(one.out)["total"], json::parse(two.out)["total"]) << two.out;
  expect(0, {"dequantize", path("q.safetensors"), path("d1.safetensors"), "-q"});
  expect(0, {"dequantize", path("model.safetensors.index.json"), path("d2.safetensors"), "-q"});
  EXPECT_EQ(read_safetensors(path("d1.safetensors")).second, read_safetensors(path("d2.safetensors")).second);
}

// The params file a run writes gives its bytes again with --params alone: after a GGUF
// run (its defaults said bits 4 and block -1 beside the mix, which a rerun refused), and
// after a run with MNNConvert's spellings, which flush |w| < FLT_MIN to +0 first (the file
// did not say so, and a rerun kept subnormal block extremes).
TEST_F(Cli, ParamsFilesOfGgufAndMnnRunsGiveTheirBytesAgain) {
  std::vector<float> tiny(8 * 64);
  for (size_t i = 0; i < tiny.size(); ++i) tiny[i] = (i % 3 == 0 ? -1e-39f : 2e-39f) * float(1 + i % 7);
  tiny[5] = -0.0f;
  write_f32_safetensors(path("tiny.safetensors"), {{"a.weight", 8, 64, tiny}, {"b.weight", 8, 64, {}}});
  expect(0, {"quantize", path("tiny.safetensors"), path("m1.wq"), "--weightQuantBits", "4", "--weightQuantAsymmetric", "1",
             "--params", path("m.json"), "-q"});
  EXPECT_EQ(json::parse(read_bytes(path("m.json")))["defaults"]["mnn_flush"], true);
  expect(0, {"quantize", path("tiny.safetensors"), path("m2.wq"), "--params", path("m.json"), "-q"});
  EXPECT_TRUE(read_bytes(path("m1.wq")) == read_bytes(path("m2.wq")));
  expect(0, {"quantize", path("tiny.safetensors"), path("n.wq"), "--bits", "4", "--asym", "--params", path("n.json"), "-q"});
  EXPECT_FALSE(json::parse(read_bytes(path("n.json")))["defaults"].contains("mnn_flush"));
  EXPECT_FALSE(read_bytes(path("n.wq")) == read_bytes(path("m1.wq")));  // the flush mattered here
  WQ_REQUIRE_SHARED(gguf, kStoriesGguf);
  int n = 0;
  for (const std::vector<std::string>& flags : {std::vector<std::string>{"--type", "Q4_K_M", "--output-tensor-type", "q8_0"},
                                                {"--type", "Q8_0"}, {"--type", "Q4_1", "--hqq"}}) {
    const std::string p = path("g" + std::to_string(n) + ".json"), a = path("a" + std::to_string(n) + ".gguf"),
                      b = path("b" + std::to_string(n) + ".gguf");
    std::vector<std::string> first = {"quantize", gguf, a, "--params", p, "-q"};
    first.insert(first.end(), flags.begin(), flags.end());
    expect(0, first);
    const json d = json::parse(read_bytes(p))["defaults"];
    EXPECT_FALSE(d.contains("bits") || d.contains("block")) << d.dump();
    expect(0, {"quantize", gguf, b, "--params", p, "-q"});
    EXPECT_TRUE(read_bytes(a) == read_bytes(b)) << flags[1];
    ++n;
  }
}

// A quantized tensor named format_version: its record's key would be the layout's version
// key, and the output unreadable; refused before anything is written.
TEST_F(Cli, SafetensorsOutputRefusesARecordKeyThatIsTheVersionKey) {
  write_f32_safetensors(path("in.safetensors"), {{"format_version", 4, 32, {}}, {"x", 4, 32, {}}});
  const Result r = expect(2, {"quantize", path("in.safetensors"), path("out.safetensors")});
  EXPECT_TRUE(contains(r.err, "format_version: a quantized tensor of this name cannot be written")) << r.err;
  EXPECT_FALSE(fs::exists(path("out.safetensors")));
  expect(0, {"quantize", path("in.safetensors"), path("out.wq"), "-q"});  // .wq holds it
}

// Tensors of no bytes overlap nothing, wherever they sit: an empty f32 [0] at the offset
// of the next tensor (serializers that order by dtype write that) is a valid file.
TEST_F(Cli, EmptyTensorsSharingAnOffsetAreNotAnOverlap) {
  write_raw_safetensors(path("zs.safetensors"),
                        R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                        R"("b":{"dtype":"F16","shape":[4,4],"data_offsets":[0,32]},)"
                        R"("m":{"dtype":"F32","shape":[0,3],"data_offsets":[16,16]}})",
                        std::string(32, '\0'));
  expect(0, {"inspect", path("zs.safetensors")});
  write_raw_safetensors(path("ov.safetensors"),
                        R"({"a":{"dtype":"F16","shape":[4,4],"data_offsets":[0,32]},)"
                        R"("b":{"dtype":"F16","shape":[2],"data_offsets":[30,34]}})",
                        std::string(40, '\0'));
  const Result r = expect(3, {"inspect", path("ov.safetensors")});
  EXPECT_TRUE(contains(r.err, "tensors a and b overlap")) << r.err;
}

// dequantize --fp16 / --bf16 refuses a weight its dtype turns into Inf, naming it, as
// quantize --fp16 does (it wrote Inf with exit 0).
TEST_F(Cli, DequantizeRefusesWeightsTheNarrowDtypeCannotHold) {
  std::vector<float> v(8 * 64, 0.01f);
  v[100] = 70000.0f;
  write_f32_safetensors(path("in.safetensors"), {{"w", 8, 64, v}});
  expect(0, {"quantize", path("in.safetensors"), path("q.wq"), "-q"});
  Result r = expect(3, {"dequantize", path("q.wq"), path("back.safetensors"), "--fp16"});
  EXPECT_TRUE(contains(r.err, path("q.wq") + ": w: row 1, column 36: dequantizes to")) << r.err;
  EXPECT_TRUE(contains(r.err, "f16 cannot hold")) << r.err;
  EXPECT_FALSE(fs::exists(path("back.safetensors")));
  expect(0, {"dequantize", path("q.wq"), path("back.safetensors"), "-q"});  // f32 holds it
}

// A scheme that cannot hold a model's values (Q4_1's f16 minimum past 65504 for weights of
// 1e5) is reported unavailable, with the reason; the other schemes' results still come
// (one refusal ended the whole sweep with nothing printed).
TEST_F(Cli, BenchMarksASchemeThatCannotHoldTheModelUnavailable) {
  std::vector<float> big(8 * 64);
  for (size_t i = 0; i < big.size(); ++i) big[i] = 1e5f + float(i % 64) * 100.0f;
  write_f32_safetensors(path("big.safetensors"), {{"big.weight", 8, 64, big}});
  const json doc = json_of({"bench", "--model", path("big.safetensors"), "--json"});
  size_t unavailable = 0, measured = 0;
  for (const json& r : doc["schemes"]) {
    if (r["unavailable"].is_string()) {
      ++unavailable;
      EXPECT_TRUE(r["rel_rmse"].is_null()) << r.dump();
      EXPECT_FALSE(r["pareto"].get<bool>()) << r.dump();
      EXPECT_TRUE(contains(r["unavailable"].get<std::string>(), "big.weight")) << r.dump();
    } else {
      ++measured;
      EXPECT_TRUE(r["rel_rmse"].is_number()) << r.dump();
    }
    if (r["scheme"] == "Q4_1") {
      EXPECT_TRUE(r["unavailable"].is_string()) << r.dump();
    }
  }
  EXPECT_GT(unavailable, 0u);
  EXPECT_GT(measured, 0u);
}

// RFC 4180 fields and row counts of a CSV text.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else if (c == '"') quoted = false;
      else field += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      rows.back().push_back(field), field.clear();
    } else if (c == '\n') {
      rows.back().push_back(field), field.clear();
      rows.emplace_back();
    } else {
      field += c;
    }
  }
  if (rows.back().empty()) rows.pop_back();
  return rows;
}

// bench --model: CSV fields quoted where a tensor name needs it, the table's cells escaped,
// and errors that name the file (and say when the model is already quantized).
TEST_F(Cli, BenchModelQuotesNamesAndNamesTheFileInErrors) {
  std::vector<float> loud(8 * 64);
  for (size_t i = 0; i < loud.size(); ++i) loud[i] = float(int(i * 37 % 101) - 50) / 1000.0f * (i % 64 == 0 ? 100.0f : 1.0f);
  // (d is constant: no error, so the other tensor is the worst under every scheme.)
  write_f32_safetensors(path("in.safetensors"), {{"attn,\"q\"|x\ny", 8, 64, loud}, {"d", 8, 64, std::vector<float>(8 * 64, 0.5f)}});
  Result r = expect(0, {"bench", "--model", path("in.safetensors"), "--csv"});
  const auto rows = parse_csv(r.out);
  ASSERT_GT(rows.size(), 1u) << r.out;
  for (const auto& row : rows) EXPECT_EQ(row.size(), rows[0].size()) << r.out;
  const size_t worst = size_t(std::find(rows[0].begin(), rows[0].end(), "worst_tensor") - rows[0].begin());
  ASSERT_LT(worst, rows[0].size());
  EXPECT_EQ(rows[1][worst], "attn,\"q\"|x\ny");
  r = expect(0, {"bench", "--model", path("in.safetensors")});
  EXPECT_TRUE(contains(r.out, "attn,\"q\"\\|x\\ny (")) << r.out;
  std::vector<float> nan(8 * 32, 0.01f);
  nan[100] = std::numeric_limits<float>::quiet_NaN();
  write_f32_safetensors(path("nan.safetensors"), {{"a", 8, 32, nan}});
  r = expect(3, {"bench", "--model", path("nan.safetensors")});
  EXPECT_TRUE(contains(r.err, path("nan.safetensors") + ": a: non-finite weight")) << r.err;
  expect(0, {"quantize", path("in.safetensors"), path("q.wq"), "-q"});
  r = expect(3, {"bench", "--model", path("q.wq")});
  EXPECT_TRUE(contains(r.err, "is already quantized")) << r.err;
}

// A params file written after a GGUF run with an importance matrix holds it (the path as
// given, its sha256, the include / exclude lists): --params alone gives the same bytes; a
// matrix changed since is refused; --imatrix on the command line replaces it.
TEST_F(Cli, AParamsFileHoldsTheImportanceMatrixOfAGgufRun) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const std::string fx = path("fx-192.gguf"), im = path("im.dat");
  test::write_gguf_fixture(stories, fx);
  fs::copy_file(test::test_data_dir() + "/imatrix-192.dat", im);
  expect(0, {"quantize", "--imatrix", im, "--exclude-weights", "attn_v", fx, path("a.gguf"), "Q4_K_M", "--params",
             path("p.json"), "-q"});
  const json d = json::parse(read_bytes(path("p.json")))["defaults"];
  EXPECT_EQ(d["imatrix"], im);
  EXPECT_EQ(d["imatrix_sha256"], sha256_file(im));
  EXPECT_EQ(d["exclude_weights"], json::array({"attn_v"}));
  expect(0, {"quantize", fx, path("b.gguf"), "--params", path("p.json"), "-q"});
  EXPECT_TRUE(read_bytes(path("a.gguf")) == read_bytes(path("b.gguf")));
  // Both the matrix and its filter mattered here.
  expect(0, {"quantize", fx, path("none.gguf"), "Q4_K_M", "-q"});
  EXPECT_FALSE(read_bytes(path("none.gguf")) == read_bytes(path("a.gguf")));
  expect(0, {"quantize", "--imatrix", im, fx, path("all.gguf"), "Q4_K_M", "-q"});
  EXPECT_FALSE(read_bytes(path("all.gguf")) == read_bytes(path("a.gguf")));

  // The matrix changed since: refused, naming the params file and the matrix; nothing written.
  const std::string before = read_bytes(im);
  std::string changed = before;
  changed[changed.size() / 2] ^= 0x01;
  fs::copy_file(im, path("im-orig.dat"));
  write_bytes(im, changed);
  Result r = expect(3, {"quantize", fx, path("c.gguf"), "--params", path("p.json")});
  EXPECT_TRUE(contains(r.err, path("p.json") + ": defaults.imatrix: " + im + " has changed since")) << r.err;
  EXPECT_FALSE(fs::exists(path("c.gguf")));
  // --imatrix on the command line replaces it (and its digest), with a note.
  r = expect(0, {"quantize", fx, path("c.gguf"), "--params", path("p.json"), "--imatrix", path("im-orig.dat")});
  EXPECT_TRUE(contains(r.err, "--imatrix " + path("im-orig.dat") + " replaces " + path("p.json") + "'s " + im)) << r.err;
  write_bytes(im, before);

  // A relative path is the text llama-quantize's quantize.imatrix.file key holds: the
  // rerun reads it from the current directory, and says so where it is not there.
  const fs::path cwd = fs::current_path();
  fs::current_path(path(""));
  expect(0, {"quantize", "--imatrix", "im.dat", fx, path("r1.gguf"), "Q4_K_M", "--params", path("q.json"), "-q"});
  expect(0, {"quantize", fx, path("r2.gguf"), "--params", path("q.json"), "-q"});
  fs::current_path(cwd);
  EXPECT_EQ(json::parse(read_bytes(path("q.json")))["defaults"]["imatrix"], "im.dat");
  EXPECT_TRUE(read_bytes(path("r1.gguf")) == read_bytes(path("r2.gguf")));
  ASSERT_FALSE(fs::exists("im.dat"));
  r = expect(3, {"quantize", fx, path("r3.gguf"), "--params", path("q.json")});
  EXPECT_TRUE(contains(r.err, "defaults.imatrix: cannot read im.dat (a relative path is read from the current directory")) << r.err;

  // Only GGUF output takes an importance matrix.
  write_bytes(path("w.json"), R"({"defaults": {"bits": 4, "imatrix": ")" + im + R"("}})");
  r = expect(2, {"quantize", fx, path("w.wq"), "--params", path("w.json")});
  EXPECT_TRUE(contains(r.err, path("w.json") + ": defaults.imatrix: an importance matrix applies to GGUF output only")) << r.err;
  // A digest must be one, and of a named file.
  write_bytes(path("x.json"), R"({"defaults": {"type": "Q4_K_M", "imatrix_sha256": ")" + sha256_file(im) + R"("}})");
  r = expect(2, {"quantize", fx, path("x.gguf"), "--params", path("x.json")});
  EXPECT_TRUE(contains(r.err, "defaults.imatrix_sha256: a digest without \"imatrix\"")) << r.err;
  write_bytes(path("y.json"), R"({"defaults": {"type": "Q4_K_M", "imatrix": ")" + im + R"(", "imatrix_sha256": "ABC"}})");
  r = expect(2, {"quantize", fx, path("y.gguf"), "--params", path("y.json")});
  EXPECT_TRUE(contains(r.err, "defaults.imatrix_sha256: expected 64 lower-case hex digits")) << r.err;
  // The filters are arrays of strings, and filter a named matrix.
  for (const char* key : {"include_weights", "exclude_weights"}) {
    SCOPED_TRACE(key);
    const std::string k = key;
    write_bytes(path("z.json"), R"({"defaults": {"type": "Q4_K_M", "imatrix": ")" + im + R"(", ")" + k + R"(": "attn_v"}})");
    r = expect(2, {"quantize", fx, path("z.gguf"), "--params", path("z.json")});
    EXPECT_TRUE(contains(r.err, path("z.json") + ": defaults." + k + ": expected an array of strings, got ")) << r.err;
    write_bytes(path("z.json"), R"({"defaults": {"type": "Q4_K_M", "imatrix": ")" + im + R"(", ")" + k + R"(": ["a", 3]}})");
    r = expect(2, {"quantize", fx, path("z.gguf"), "--params", path("z.json")});
    EXPECT_TRUE(contains(r.err, "defaults." + k + ": expected an array of strings, got an element 3")) << r.err;
    write_bytes(path("z.json"), R"({"defaults": {"type": "Q4_K_M", ")" + k + R"(": ["attn_v"]}})");
    r = expect(2, {"quantize", fx, path("z.gguf"), "--params", path("z.json")});
    EXPECT_TRUE(contains(r.err, "defaults." + k + ": a filter of the importance matrix without \"imatrix\"")) << r.err;
    EXPECT_FALSE(fs::exists(path("z.gguf")));
  }
}

// An explicit --token-embedding-type / --output-tensor-type whose blocks do not fit the
// rows: llama-quantize fails on the model (no fallback for them, unlike the mix's own
// choices); wquant keeps the tensor float and says why (it wrote a fallback type and said
// llama-quantize did the same).
TEST_F(Cli, AnExplicitTypeThatDoesNotFitTheRowsKeepsTheTensorFloat) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  const Result r = expect(0, {"quantize", stories, path("t.gguf"), "Q4_K_M", "--token-embedding-type", "q4_k"});
  EXPECT_TRUE(contains(r.err, "token_embd.weight: rows of 64 are not a multiple of 256, required by Q4_K "
                              "(--token-embedding-type; llama-quantize fails on it); kept as f32")) << r.err;
  const json doc = json_of({"inspect", path("t.gguf"), "--json"});
  bool seen = false;
  for (const json& t : doc["tensors"]) {
    if (t["name"] == "token_embd.weight") {
      seen = true;
      EXPECT_EQ(t["type"], "F32") << t.dump();
    }
  }
  EXPECT_TRUE(seen);
}

// llama-quantize checks the importance values of the entries it uses, after
// --include-weights / --exclude-weights: a NaN in an entry they drop is no error.
TEST_F(Cli, ANonFiniteImatrixEntryTheFilterDropsIsNoError) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  std::string dat;
  auto put = [&](auto v) { dat.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto entry = [&](const std::string& name, float value) {
    put(int32_t(name.size()));
    dat += name;
    put(int32_t(1));   // calls
    put(int32_t(64));  // values (the row length)
    for (int i = 0; i < 64; ++i) put(value);
  };
  put(int32_t(2));
  entry("blk.0.attn_q.weight", 1.0f);
  entry("foo", std::nanf(""));
  write_bytes(path("im.dat"), dat);
  expect(0, {"quantize", "--imatrix", path("im.dat"), "--exclude-weights", "foo", stories, path("a.gguf"), "Q4_K_M", "-q"});
  expect(0, {"quantize", "--imatrix", path("im.dat"), "--include-weights", "blk.", stories, path("b.gguf"), "Q4_K_M", "-q"});
  const Result r = expect(3, {"quantize", "--imatrix", path("im.dat"), stories, path("c.gguf"), "Q4_K_M"});
  EXPECT_TRUE(contains(r.err, path("im.dat") + ": entry foo: value 0 is not finite")) << r.err;
}

// --force never replaces a file the run reads besides the model: the importance matrix
// (llama-quantize would overwrite it).
TEST_F(Cli, ForceNeverReplacesTheImatrixRead) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_fixture(stories, path("fx.gguf"));
  const std::string im = path("im.dat");
  fs::copy_file(test::test_data_dir() + "/imatrix-192.dat", im);
  const std::string before = read_bytes(im);
  const Result r = expect(4, {"quantize", "--imatrix", im, path("fx.gguf"), im, "Q4_K_M", "--format", "gguf", "--force"});
  EXPECT_TRUE(contains(r.err, "never overwrites its input")) << r.err;
  EXPECT_EQ(read_bytes(im), before);
}

// A legacy llama-imatrix .dat of one entry, `name`, one call, these values.
void write_imatrix_dat(const std::string& file, const std::string& name, const std::vector<float>& values) {
  std::string dat;
  auto put = [&](auto v) { dat.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(int32_t(1));
  put(int32_t(name.size()));
  dat += name;
  put(int32_t(1));  // calls
  put(int32_t(values.size()));
  for (float v : values) put(v);
  write_bytes(file, dat);
}

// An importance matrix whose values for a tensor are all zero leaves llama.cpp's search
// without weights: the tensor would be written as zeros (the legacy types, Q6_K, Q3_K,
// IQ4_XS: exit 0 with a tensor lost) or its scale NaN (the types with a minimum):
// refused for every type, naming the imatrix as the cause. Values so large that the
// search's sums overflow (finite, 3e38) zero the blocks the same way: refused too.
TEST_F(Cli, AnAllZeroImatrixEntryIsNamedAsTheCause) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_wide_fixture(stories, path("wide.gguf"), test::dense_fixture());
  const std::string name = "blk.0.ffn_up.weight";
  auto write_dat = [&](const std::string& file, float value) { write_imatrix_dat(file, name, std::vector<float>(256, value)); };
  write_dat(path("zeros.dat"), 0.0f);
  write_dat(path("huge.dat"), 3e38f);
  for (const std::string type : {"Q4_K_M", "Q4_0", "Q6_K", "Q3_K_M", "IQ4_XS"}) {
    Result r = expect(3, {"quantize", "--imatrix", path("zeros.dat"), path("wide.gguf"), path("q.gguf"), type});
    EXPECT_TRUE(contains(r.err, name + ": every importance matrix value for its 256 columns is zero")) << type << r.err;
    EXPECT_TRUE(contains(r.err, "--exclude-weights " + name)) << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
    EXPECT_FALSE(fs::exists(path("q.gguf")));
    r = expect(3, {"quantize", "--imatrix", path("huge.dat"), path("wide.gguf"), path("q.gguf"), type});
    EXPECT_TRUE(contains(r.err, name + ": importance matrix entry 0 is 3e+38, past 1e20")) << type << r.err;
    EXPECT_FALSE(fs::exists(path("q.gguf")));
  }
  // Large importance values real files can hold (1e10), against weights of 1000: quantized
  // as usual (a bound of importance x weight^2 refused them).
  write_dat(path("large.dat"), 1e10f);
  const float thousand = 1000.0f;
  for (int c : {0, 37, 200}) patch_file(path("wide.gguf"), tensor_offset(path("wide.gguf"), name) + size_t(c) * 4, &thousand, 4);
  for (const std::string type : {"Q4_K_M", "Q4_0", "Q6_K", "Q3_K_M", "IQ4_XS"}) {
    const json j = json_of({"quantize", "--imatrix", path("large.dat"), path("wide.gguf"), path("q.gguf"), type, "--json", "--force"});
    bool seen = false;
    for (const json& t : j["tensors"]) {
      if (t["name"] != name) continue;
      seen = true;
      EXPECT_LT(t["error"]["rel_rmse"].get<double>(), 0.3) << type << t.dump();
    }
    EXPECT_TRUE(seen) << type;
  }
  expect(0, {"quantize", "--imatrix", path("zeros.dat"), "--exclude-weights", name, path("wide.gguf"), path("x.gguf"), "Q4_K_M", "-q"});
  // Q8_0 takes no importance matrix (llama.cpp's quantizer ignores it): nothing to refuse.
  expect(0, {"quantize", "--imatrix", path("zeros.dat"), path("wide.gguf"), path("q8.gguf"), "Q8_0", "-q"});
}

// Importance values are mean squares of activations: a negative one is a broken file
// (llama-quantize takes it and writes garbage with exit 0: errors weighed negatively);
// refused, naming the entry. And a row of weights so small that their squares underflow
// leaves the weighted search no weights whatever the matrix: said so, not blamed on it.
TEST_F(Cli, ANegativeImportanceOrUnderflowingWeightsAreNamedAsTheCause) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_wide_fixture(stories, path("wide.gguf"), test::dense_fixture());
  const std::string name = "blk.0.ffn_up.weight";
  auto write_dat = [&](const std::string& file, float odd_value) {
    std::vector<float> v(256);
    for (size_t i = 0; i < v.size(); ++i) v[i] = i % 2 ? odd_value : 1.0f;
    write_imatrix_dat(file, name, v);
  };
  write_dat(path("neg.dat"), -1.0f);
  for (const std::string type : {"Q4_K_M", "Q4_0", "Q6_K", "IQ4_XS"}) {
    const Result r = expect(3, {"quantize", "--imatrix", path("neg.dat"), path("wide.gguf"), path("q.gguf"), type});
    EXPECT_TRUE(contains(r.err, name + ": importance matrix entry 1 is -1, negative")) << type << r.err;
    EXPECT_EQ(count_of(r.err, "\n"), 1u) << r.err;
    EXPECT_FALSE(fs::exists(path("q.gguf")));
  }
  write_dat(path("ones.dat"), 1.0f);
  std::vector<float> tiny(256);
  for (size_t c = 0; c < tiny.size(); ++c) tiny[c] = (c % 2 ? -1e-30f : 1e-30f) * float(1 + c % 5);
  patch_file(path("wide.gguf"), tensor_offset(path("wide.gguf"), name), tiny.data(), tiny.size() * 4);  // row 0
  for (const std::string type : {"Q4_K", "Q5_K", "Q2_K"}) {
    const Result r = expect(3, {"quantize", "--imatrix", path("ones.dat"), "--pure", path("wide.gguf"), path("q.gguf"), type});
    EXPECT_TRUE(contains(r.err, name + ": row 0, columns 0-255: ")) << type << r.err;
    EXPECT_TRUE(contains(r.err, "weights so small that their squares underflow in float")) << type << r.err;
    EXPECT_FALSE(contains(r.err, "use another importance matrix")) << r.err;
    EXPECT_FALSE(fs::exists(path("q.gguf")));
    // As the message says: without the importance matrix for it, the row quantizes.
    expect(0, {"quantize", "--imatrix", path("ones.dat"), "--exclude-weights", name, "--pure", path("wide.gguf"),
               path("ok.gguf"), type, "-q", "--force"});
  }
}

// GGUF's F16 type (llama-quantize's F16 mix) on a weight past 65504: refused as --fp16's
// narrowing is, and the message names both ways in (it blamed --fp16, not given).
TEST_F(Cli, AWeightPastF16sRangeInAGgufF16FileIsRefused) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  fs::copy_file(stories, path("big.gguf"));
  const float big = 1e5f;
  patch_file(path("big.gguf"), tensor_offset(path("big.gguf"), "blk.0.attn_q.weight") + (3 * 64 + 7) * 4, &big, 4);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"quantize", path("big.gguf"), path("f.gguf"), "F16"},
        std::vector<std::string>{"quantize", path("big.gguf"), path("f.gguf"), "--type", "F16"}}) {
    const Result r = expect(3, args);
    EXPECT_TRUE(contains(r.err, "blk.0.attn_q.weight: row 3, column 7: the weight 100000 does not fit in f16 (largest "
                                "65504), the type it was to be kept in (--fp16, or a GGUF F16 type)"))
        << r.err;
    EXPECT_FALSE(fs::exists(path("f.gguf")));
  }
  expect(0, {"quantize", path("big.gguf"), path("f.gguf"), "BF16", "-q"});
}

// Strings holding a NUL byte are written up to it, as llama-quantize writes them (gguf
// copies keys and strings through C strings): its sha256 then (a vocabulary token with a
// NUL, or an imatrix dataset name with one, gave another file; by hand with llama.cpp
// c392e5094, the files are now sha256-equal).
TEST_F(Cli, GgufStringsAreWrittenUpToTheirFirstNul) {
  WQ_REQUIRE_SHARED(stories, kStoriesGguf);
  test::write_gguf_fixture(stories, path("fx.gguf"));
  std::string b = read_bytes(path("fx.gguf"));
  const std::string unk = std::string("\x05\0\0\0\0\0\0\0", 8) + "<unk>";
  const size_t at = b.find(unk);
  ASSERT_NE(at, std::string::npos);
  b[at + 8 + 2] = '\0';  // "<u\0k>", the same length: nothing else moves
  write_bytes(path("nul.gguf"), b);
  expect(0, {"quantize", path("nul.gguf"), path("q.gguf"), "Q8_0", "-q"});
  const std::string out = read_bytes(path("q.gguf"));
  EXPECT_NE(out.find(std::string("\x02\0\0\0\0\0\0\0", 8) + "<u"), std::string::npos);
  EXPECT_EQ(out.find(std::string("<u\0k>", 5)), std::string::npos);
}

// An input named as a temporary file of OUT (which OutputFile removes when its pid is
// gone) is refused: the run deleted it and succeeded.
TEST_F(Cli, AnInputNamedAsATemporaryOfOutIsRefusedNotRemoved) {
  write_f32_safetensors(path("x.safetensors"), {{"a", 8, 64, {}}});
  // (and as the backup of a file --force replaced in a result of several files)
  for (const std::string name : {".out.wq.wquant-tmp-4000000", ".out.wq.wquant-tmp-4000000-old"}) {
    const std::string in = path(name);
    fs::copy_file(path("x.safetensors"), in);
    const Result r = expect(4, {"quantize", in, path("out.wq")});
    EXPECT_TRUE(contains(r.err, "is named as a temporary file of OUT")) << r.err;
    EXPECT_TRUE(fs::exists(in));
    EXPECT_FALSE(fs::exists(path("out.wq")));
  }
}

// A .safetensors file cut inside its header, or with an absurd header length, is told so
// (it was "unrecognised content").
TEST_F(Cli, TruncatedSafetensorsHeadersAreToldSo) {
  std::vector<F32Tensor> many;
  for (int i = 0; i < 40; ++i) many.push_back({"a" + std::to_string(i) + ".weight", 4, 4, {}});
  write_f32_safetensors(path("full.safetensors"), many);
  write_bytes(path("cut.safetensors"), read_bytes(path("full.safetensors")).substr(0, 1000));
  Result r = expect(3, {"inspect", path("cut.safetensors")});
  EXPECT_FALSE(contains(r.err, "unrecognised content")) << r.err;
  EXPECT_TRUE(contains(r.err, path("cut.safetensors"))) << r.err;
  std::string b = read_bytes(path("full.safetensors"));
  const uint64_t huge = uint64_t(1) << 40;
  std::memcpy(b.data(), &huge, 8);
  write_bytes(path("hlen.safetensors"), b);
  r = expect(3, {"inspect", path("hlen.safetensors")});
  EXPECT_FALSE(contains(r.err, "unrecognised content")) << r.err;
}

// Names from input files are printed escaped in the tables (a newline or an escape
// sequence in a name reached the terminal raw), as they are in errors.
TEST_F(Cli, TablesPrintNamesEscaped) {
  write_f32_safetensors(path("in.safetensors"), {{"a\nb\x1b[31mred", 8, 16, {}}});
  expect(0, {"quantize", path("in.safetensors"), path("o.wq"), "-q"});
  for (const std::vector<std::string>& a : {std::vector<std::string>{"inspect", path("o.wq")},
                                            {"verify", path("in.safetensors"), path("o.wq")}}) {
    const Result r = expect(0, a);
    EXPECT_TRUE(contains(r.out, "a\\nb\\u001b[31mred")) << r.out;
    EXPECT_FALSE(contains(r.out, "\x1b")) << r.out;
  }
}

// The quantization records of a safetensors file are checked: a record beside a plain
// tensor of its name, fractional or negative counts, codes that are not U8.
TEST_F(Cli, QuantizedSafetensorsRecordsAreChecked) {
  write_f32_safetensors(path("f.safetensors"), {{"a.weight", 8, 64, {}}});
  expect(0, {"quantize", path("f.safetensors"), path("q.safetensors"), "-q"});
  const auto [h, data] = read_safetensors(path("q.safetensors"));
  auto with = [&, &h = h, &data = data](const std::string& file, const std::function<void(json&, std::string&)>& edit) {
    json e = h;
    std::string d = data;
    edit(e, d);
    write_raw_safetensors(path(file), e.dump(), d);
    return path(file);
  };
  auto record = [&](json& e) { return json::parse(e["__metadata__"]["wquant.a.weight"].get<std::string>()); };
  const std::string dup = with("dup.safetensors", [&](json& e, std::string& d) {
    e["a.weight"] = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {d.size(), d.size() + 4}}};
    d.append(4, '\0');
  });
  Result r = expect(3, {"inspect", dup});
  EXPECT_TRUE(contains(r.err, dup + ": a.weight: both a wquant record")) << r.err;
  const std::string frac = with("frac.safetensors", [&](json& e, std::string&) {
    json rec = record(e);
    rec["bits"] = 4.7;
    e["__metadata__"]["wquant.a.weight"] = rec.dump();
  });
  r = expect(3, {"inspect", frac});
  EXPECT_TRUE(contains(r.err, "bits is 4.7, not an integer")) << r.err;
  const std::string neg = with("neg.safetensors", [&](json& e, std::string&) {
    json rec = record(e);
    rec["block"] = -32;
    e["__metadata__"]["wquant.a.weight"] = rec.dump();
  });
  r = expect(3, {"inspect", neg});
  EXPECT_TRUE(contains(r.err, "block -32 outside 1..")) << r.err;
  // A fractional dimension was read as its whole part ([8.5, 64] as [8, 64]).
  const std::string fshape = with("fshape.safetensors", [&](json& e, std::string&) {
    json rec = record(e);
    rec["shape"] = {8.5, 64};
    e["__metadata__"]["wquant.a.weight"] = rec.dump();
  });
  for (const std::string cmd : {"inspect", "dequantize"}) {
    r = expect(3, cmd == "inspect" ? std::vector<std::string>{cmd, fshape} : std::vector<std::string>{cmd, fshape, path("d.safetensors")});
    EXPECT_TRUE(contains(r.err, "shape [8.5,64] holds 8.5, not an integer")) << r.err;
  }
  const std::string f32codes = with("codes.safetensors", [&](json& e, std::string&) { e["a.weight.qweight"]["dtype"] = "I8"; });
  r = expect(3, {"dequantize", f32codes, path("d.safetensors")});
  EXPECT_TRUE(contains(r.err, "a.weight.qweight: I8, where wquant's codes are U8")) << r.err;
}

}  // namespace
}  // namespace wq
