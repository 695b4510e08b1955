// ONNX support lives in its own library (wq_onnx: protobuf + Debian's libonnx), so the
// public library and its consumers need neither. A program that links wq_onnx calls
// enable_onnx() (io/onnx_support.h) once; open_model, format_from_path, make_writer and
// planned_output_bytes then read and write .onnx. Without it they say the build has no
// ONNX support.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/plan.h"

namespace wq {

class ModelReader;
class ModelWriter;
struct WriterOptions;

struct OnnxHooks {
  // True if the file's first bytes (n of them) and its name look like an ONNX model.
  bool (*sniff)(const std::string& path, const uint8_t* head, size_t n) = nullptr;
  std::unique_ptr<ModelReader> (*open)(const std::string& path) = nullptr;
  uint64_t (*planned_bytes)(const std::vector<TensorPlan>& plan, const ModelReader& source,
                            const WriterOptions& opts) = nullptr;
  std::unique_ptr<ModelWriter> (*make_writer)(const std::string& path, const std::vector<TensorPlan>& plan,
                                              const ModelReader& source, const WriterOptions& opts) = nullptr;
};

void install_onnx_hooks(const OnnxHooks& hooks);
// The installed hooks, or nullptr when this program has no ONNX support.
const OnnxHooks* onnx_hooks();

}  // namespace wq
