// What include/wquant/wquant.h promises, held against a user's mistakes and abuse: no
// conversion replaces a file its input is read from, errors come as wquant::Error of the
// documented kind (never a crash on a forged record), a thread count beyond the CPUs is
// capped as the program caps --threads, and calls from two threads at once print nothing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>
#include <wquant/wquant.h>

#include "tests/test_support.h"

namespace {

namespace fs = std::filesystem;

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// A safetensors file of one f32 tensor `name` [rows, cols].
void write_safetensors(const std::string& path, const std::string& name, int rows, int cols) {
  std::vector<float> w(size_t(rows) * size_t(cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(float(i) * 0.37f) * 0.05f;
  const std::string header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(rows) + "," +
                             std::to_string(cols) + "],\"data_offsets\":[0," + std::to_string(w.size() * 4) + "]}}";
  const uint64_t n = header.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(w.data()), w.size() * 4);
  write_bytes(path, bytes);
}

std::vector<float> ramp(size_t n) {
  std::vector<float> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = std::cos(float(i) * 0.11f) * 0.03f;
  return w;
}

// Expects call() to throw wquant::Error of `kind` whose message holds `part` (one line).
void expect_api_error(const std::function<void()>& call, wquant::Error::Kind kind, const std::string& part) {
  try {
    call();
    ADD_FAILURE() << "accepted; expected an error with '" << part << "'";
  } catch (const wquant::Error& e) {
    EXPECT_EQ(int(e.kind()), int(kind)) << e.what();
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

class PublicApiContract : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = std::make_unique<wq::test::ScratchDir>("wq-api-contract"); }
  std::string path(const std::string& name) const { return dir_->path() + "/" + name; }
  std::unique_ptr<wq::test::ScratchDir> dir_;
};

// A sharded checkpoint's shards are its input as much as its index: convert() with
// overwrite refuses each as OUT (it replaced one, and the model no longer opened), as it
// refuses the index, and as the program refuses them; every file stays as it was.
TEST_F(PublicApiContract, ConvertNeverReplacesAFileTheInputIsReadFrom) {
  fs::create_directory(path("m"));
  const std::string s1 = path("m/model-00001-of-00002.safetensors"), s2 = path("m/model-00002-of-00002.safetensors");
  const std::string index = path("m/model.safetensors.index.json");
  write_safetensors(s1, "a.weight", 8, 64);
  write_safetensors(s2, "b.weight", 8, 64);
  write_bytes(index, "{\"weight_map\":{\"a.weight\":\"model-00001-of-00002.safetensors\","
                     "\"b.weight\":\"model-00002-of-00002.safetensors\"}}");
  const std::string before1 = read_bytes(s1), before2 = read_bytes(s2), before_index = read_bytes(index);
  wquant::ConvertOptions o;
  o.overwrite = true;
  o.format = "safetensors";
  for (const std::string& in : {index, path("m")}) {
    for (const std::string& out : {s1, s2, index}) {
      SCOPED_TRACE(in + " -> " + out);
      expect_api_error([&] { wquant::convert(in, out, o); }, wquant::Error::Kind::Output, "is the input file");
    }
  }
  // Nor the importance matrix the run reads (it became the output).
  write_bytes(path("im.dat"), "an importance matrix");
  wquant::ConvertOptions with_imatrix = o;
  with_imatrix.format = "gguf";
  with_imatrix.imatrix = path("im.dat");
  expect_api_error([&] { wquant::convert(index, path("im.dat"), with_imatrix); }, wquant::Error::Kind::Output,
                   "is the input file");
  EXPECT_EQ(read_bytes(path("im.dat")), "an importance matrix");
  EXPECT_TRUE(read_bytes(s1) == before1);
  EXPECT_TRUE(read_bytes(s2) == before2);
  EXPECT_TRUE(read_bytes(index) == before_index);
  EXPECT_EQ(wquant::Model::open(index).tensors().size(), 2u);
  // Beside it, a new OUT is written; over an existing one, only with overwrite.
  const wquant::ConvertResult r = wquant::convert(index, path("q.safetensors"), o);
  EXPECT_EQ(r.quantized, 2u);
  o.overwrite = false;
  expect_api_error([&] { wquant::convert(index, path("q.safetensors"), o); }, wquant::Error::Kind::Output,
                   "set overwrite to replace it");
}

// An ISA this CPU or build lacks is a usage error, as the header says (it came as Internal).
TEST_F(PublicApiContract, AnUnavailableIsaIsAUsageError) {
  const std::vector<std::string> have = wquant::available_isas();
  std::string missing;
  for (const char* name : {"neon", "avx512", "avx2"}) {
    if (std::find(have.begin(), have.end(), name) == have.end()) {
      missing = name;
      break;
    }
  }
  if (missing.empty()) GTEST_SKIP() << "every ISA wquant knows is available here";
  const std::string before = wquant::active_isa();
  expect_api_error([&] { wquant::use_isa(missing); }, wquant::Error::Kind::Usage, "'" + missing + "' is not available");
  EXPECT_EQ(wquant::active_isa(), before);
  expect_api_error([] { wquant::use_isa("sse9"); }, wquant::Error::Kind::Usage, "sse9");
}

// A record whose rows * cols (and so every size) wraps to agree with empty buffers: a
// usage error, not a walk of 2^63 rows through a null buffer.
TEST_F(PublicApiContract, DequantizeRefusesSizesThatOverflow) {
  wquant::QuantizedTensor q;
  q.rows = size_t(1) << 63;
  q.cols = 8;
  q.bits = 2;
  q.block = 4;
  q.scheme = "mnn_sym";
  q.packed_row_bytes = 2;
  expect_api_error([&] { wquant::dequantize(q); }, wquant::Error::Kind::Usage, "overflow");
  // A true record still comes back.
  const std::vector<float> w = ramp(4 * 64);
  wquant::QuantOptions o;
  o.block = 32;
  EXPECT_EQ(wquant::dequantize(wquant::quantize(w.data(), 4, 64, o)).size(), w.size());
}

// quantize()'s errors come in the kinds the header gives: the caller's arguments (cols 0,
// a block that does not divide cols) Usage, a NaN weight Input; no rows is an empty result.
TEST_F(PublicApiContract, QuantizeErrorsHaveTheDocumentedKinds) {
  std::vector<float> w = ramp(4 * 64);
  wquant::QuantOptions o;
  o.block = 32;
  auto kind_of = [&](size_t rows, size_t cols, const wquant::QuantOptions& opts) {
    try {
      wquant::quantize(w.data(), rows, cols, opts);
    } catch (const wquant::Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor"), std::string::npos) << e.what();
      return int(e.kind());
    }
    return 0;
  };
  EXPECT_EQ(kind_of(4, 0, o), int(wquant::Error::Kind::Usage));
  EXPECT_EQ(kind_of(0, 0, o), int(wquant::Error::Kind::Usage));
  wquant::QuantOptions odd = o;
  odd.block = 48;
  EXPECT_EQ(kind_of(4, 64, odd), int(wquant::Error::Kind::Usage));
  const wquant::QuantizedTensor none = wquant::quantize(w.data(), 0, 64, o);
  EXPECT_EQ(none.rows, 0u);
  EXPECT_TRUE(none.packed.empty());
  EXPECT_TRUE(wquant::dequantize(none).empty());
  w[5] = std::nanf("");
  EXPECT_EQ(kind_of(4, 64, o), int(wquant::Error::Kind::Input));
}

// A thread count far beyond the CPUs (a million crashed inside oneTBB) is capped at them,
// with the bytes of one thread.
TEST_F(PublicApiContract, ThreadsBeyondTheCpusAreCapped) {
  const std::vector<float> w = ramp(64 * 256);
  wquant::QuantOptions one;
  one.block = 64;
  one.threads = 1;
  wquant::QuantOptions many = one;
  many.threads = 1 << 20;
  EXPECT_TRUE(wquant::quantize(w.data(), 64, 256, many).packed == wquant::quantize(w.data(), 64, 256, one).packed);
  write_safetensors(path("m.safetensors"), "w.weight", 64, 256);
  wquant::ConvertOptions c;
  c.quant = many;
  EXPECT_EQ(wquant::convert(path("m.safetensors"), path("q.wq"), c).quantized, 1u);
}

// Two threads quantizing at once, one with 1 thread and one with more than the CPUs:
// neither limits the other through a process-wide limit (oneTBB printed a warning about
// it on stderr, where the header says nothing prints), and both get the same bytes.
TEST_F(PublicApiContract, ConcurrentCallsPrintNothing) {
  const std::vector<float> w = ramp(512 * 512);
  wquant::QuantOptions a;
  a.block = 64;
  a.threads = 1;
  wquant::QuantOptions b = a;
  b.threads = int(std::thread::hardware_concurrency()) + 2;
  const std::vector<uint8_t> expected = wquant::quantize(w.data(), 512, 512, a).packed;
  // stderr into a file for the calls (restored after).
  std::fflush(stderr);
  const int saved = ::dup(2);
  ASSERT_GE(saved, 0);
  FILE* capture = std::fopen(path("stderr").c_str(), "w");
  ASSERT_NE(capture, nullptr);
  ::dup2(::fileno(capture), 2);
  bool same = true;
  {
    auto work = [&](const wquant::QuantOptions& o) {
      for (int i = 0; i < 8; ++i) same = wquant::quantize(w.data(), 512, 512, o).packed == expected && same;
    };
    std::thread t1(work, a), t2(work, b);
    t1.join();
    t2.join();
  }
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::fclose(capture);
  EXPECT_TRUE(same);
  EXPECT_EQ(read_bytes(path("stderr")), "");
}

// This library reads no ONNX (the wquant program links that support): an .onnx file is
// told so (an input it cannot read: Input, exit 3 in the program), not called
// unrecognised content with ONNX listed among what is read.
TEST_F(PublicApiContract, AnOnnxFileWithoutOnnxSupportIsSaidSo) {
  write_bytes(path("m.onnx"), std::string("\x08\x08\x12\x04test", 8));
  // (Input: the README's exit 3 for an unsupported input.)
  expect_api_error([&] { wquant::Model::open(path("m.onnx")); }, wquant::Error::Kind::Input,
                   "is an ONNX model, and this build of wquant reads no ONNX");
  write_bytes(path("m.bin"), "not a model at all, long enough to sniff");
  try {
    wquant::Model::open(path("m.bin"));
    ADD_FAILURE() << "opened";
  } catch (const wquant::Error& e) {
    EXPECT_EQ(std::string(e.what()).find("ONNX"), std::string::npos) << e.what();
  }
}

}  // namespace
