// Helpers of the ONNX tests: run the built programs and onnxruntime (tests/ort), write
// small ONNX models, compare logits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

namespace wq::test {

struct CmdResult {
  int code = -1;
  std::string out;  // stdout and stderr together
};
// Runs a shell command line; its output is captured.
CmdResult run(const std::string& cmd);
std::string quote(const std::string& s);

// "" when onnxruntime can run here, else why not (for GTEST_SKIP).
std::string ort_missing();
// Logits [T, vocab] of an ONNX model of token ids -> logits, by onnxruntime.
std::vector<float> ort_logits(const std::string& model, const std::vector<int64_t>& ids);
// Greedy continuation (ids included) by onnxruntime.
std::vector<int64_t> ort_greedy(const std::string& model, const std::vector<int64_t>& ids, int n);

// The stories260K GGUF, or "" when ../shared is absent.
std::string stories_gguf();
// A fresh directory under the build tree for one test.
std::string scratch_dir(const std::string& name);

// Mean over positions of KL(softmax(p) || softmax(q)), rows of `vocab` logits.
double mean_kl(const std::vector<float>& p, const std::vector<float>& q, size_t vocab);
float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

void save_model(const onnx::ModelProto& m, const std::string& path);
// What ONNX's own checker (libonnx 1.12, onnx::checker::check_model) says of the
// model file: "" when it passes.
std::string onnx_checker_error(const std::string& path);
onnx::ModelProto load_model(const std::string& path);

// The float graph `base` with every float initializer that `dequantized` (a safetensors of
// `wquant dequantize`) holds replaced by its weights, saved as `out` (returned): the graph
// onnxruntime should run as the quantized model runs. A MatMul's B, which wquant lists
// [N, K], goes back to the graph's [K, N].
std::string float_graph_with_weights(const onnx::ModelProto& base, const std::string& dequantized,
                                     const std::string& out);

}  // namespace wq::test
