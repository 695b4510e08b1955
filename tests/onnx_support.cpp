#include "tests/onnx_support.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>

#include <onnx/checker.h>

#include "io/model_reader.h"
#include "tests/test_support.h"

namespace wq::test {

namespace fs = std::filesystem;

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

CmdResult run(const std::string& cmd) {
  CmdResult r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

namespace {

std::string ort_dir() { return std::string(WQUANT_SOURCE_DIR) + "/tests/ort"; }

std::string join(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

}  // namespace

std::string ort_missing() {
  if (run("node --version").code != 0) return "node is not installed (scripts/setup.sh installs it)";
  if (!fs::exists(ort_dir() + "/node_modules/onnxruntime-node/package.json"))
    return "tests/ort/node_modules has no onnxruntime-node (scripts/setup.sh installs it)";
  return "";
}

std::vector<float> ort_logits(const std::string& model, const std::vector<int64_t>& ids) {
  const std::string out = model + ".logits.f32";
  const CmdResult r = run("node " + quote(ort_dir() + "/run_model.js") + " " + quote(model) + " " + join(ids) + " " + quote(out));
  if (r.code != 0) ADD_FAILURE() << "onnxruntime on " << model << ": " << r.out;
  std::ifstream f(out, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

std::vector<int64_t> ort_greedy(const std::string& model, const std::vector<int64_t>& ids, int n) {
  const std::string out = model + ".greedy.txt";
  const CmdResult r = run("node " + quote(ort_dir() + "/run_model.js") + " " + quote(model) + " " + join(ids) + " " + quote(out) +
                    " --greedy " + std::to_string(n));
  if (r.code != 0) ADD_FAILURE() << "onnxruntime on " << model << ": " << r.out;
  std::ifstream f(out);
  std::vector<int64_t> v;
  std::string tok;
  while (std::getline(f, tok, ',')) v.push_back(std::stoll(tok));
  return v;
}

std::string stories_gguf() { return shared_file("data/models/stories260K/stories260K-f32.gguf"); }

std::string scratch_dir(const std::string& name) {
  const fs::path d = fs::path(WQUANT_TEST_SCRATCH) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

double mean_kl(const std::vector<float>& p, const std::vector<float>& q, size_t vocab) {
  const size_t rows = p.size() / vocab;
  double total = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float* a = &p[r * vocab];
    const float* b = &q[r * vocab];
    double ma = a[0], mb = b[0];
    for (size_t v = 1; v < vocab; ++v) {
      ma = std::max(ma, double(a[v]));
      mb = std::max(mb, double(b[v]));
    }
    double za = 0, zb = 0;
    for (size_t v = 0; v < vocab; ++v) {
      za += std::exp(a[v] - ma);
      zb += std::exp(b[v] - mb);
    }
    double kl = 0;
    for (size_t v = 0; v < vocab; ++v) {
      const double la = a[v] - ma - std::log(za), lb = b[v] - mb - std::log(zb);
      kl += std::exp(la) * (la - lb);
    }
    total += kl;
  }
  return rows ? total / double(rows) : 0;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::string onnx_checker_error(const std::string& path) {
  try {
    onnx::checker::check_model(path);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void save_model(const onnx::ModelProto& m, const std::string& path) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(m.SerializeToOstream(&f)) << path;
}

onnx::ModelProto load_model(const std::string& path) {
  onnx::ModelProto m;
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(m.ParseFromIstream(&f)) << path;
  return m;
}

std::string float_graph_with_weights(const onnx::ModelProto& base, const std::string& dequantized,
                                     const std::string& out) {
  onnx::ModelProto m = base;
  std::set<std::string> matmul_b;  // listed [N, K] by wquant
  for (const auto& node : m.graph().node())
    if (node.op_type() == "MatMul" && node.input_size() == 2) matmul_b.insert(node.input(1));
  std::unique_ptr<ModelReader> d = open_model(dequantized);
  for (auto& init : *m.mutable_graph()->mutable_initializer()) {
    const long i = d->find(init.name());
    if (i < 0 || init.data_type() != onnx::TensorProto::FLOAT) continue;
    std::vector<float> w = read_f32(*d, size_t(i));
    if (init.dims_size() == 2 && matmul_b.count(init.name())) {
      const size_t k = size_t(init.dims(0)), n = size_t(init.dims(1));  // listed [n, k]
      const std::vector<int64_t>& listed = d->tensors()[size_t(i)].shape;
      if (listed != std::vector<int64_t>{int64_t(n), int64_t(k)}) {
        throw std::runtime_error(dequantized + ": " + init.name() + " is not listed as the transpose of the graph's [K, N]");
      }
      std::vector<float> t(w.size());
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < k; ++c) t[c * n + r] = w[r * k + c];
      w.swap(t);
    }
    init.set_raw_data(w.data(), w.size() * 4);
  }
  save_model(m, out);
  return out;
}

}  // namespace wq::test
