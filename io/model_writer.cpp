#include "io/model_writer.h"

#include <algorithm>
#include <cctype>

#include "engine/error.h"
#include "io/gguf_writer.h"
#include "io/onnx_hooks.h"
#include "io/safetensors_writer.h"
#include "io/wq_writer.h"

namespace wq {
namespace {

const OnnxHooks* onnx_hooks_or_throw(const std::string& path) {
  const OnnxHooks* h = onnx_hooks();
  if (!h) throw Error(path + ": this build of wquant has no ONNX support (built without libonnx-dev and libprotobuf-dev)", ErrorKind::Usage);
  return h;
}

}  // namespace

OutputFormat format_from_path(const std::string& path) {
  std::string lower = path;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  auto ends = [&](const char* ext) {
    const std::string e(ext);
    return lower.size() > e.size() && lower.compare(lower.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".wq")) return OutputFormat::Wq;
  if (ends(".safetensors")) return OutputFormat::Safetensors;
  if (ends(".gguf")) return OutputFormat::Gguf;
  if (ends(".onnx")) return OutputFormat::Onnx;
  throw Error(path + ": cannot tell the output format from the extension (use .wq, .safetensors, .gguf or .onnx, or --format)",
              ErrorKind::Usage);
}

uint64_t planned_output_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                              OutputFormat format, const ModelReader& source, const WriterOptions& opts) {
  switch (format) {
    case OutputFormat::Wq: return wq_planned_bytes(plan, infos, source);
    case OutputFormat::Safetensors: return safetensors_planned_bytes(plan, infos);
    case OutputFormat::Gguf: return gguf_planned_bytes(plan, infos, source, opts.gguf_keys);
    case OutputFormat::Onnx: return onnx_hooks_or_throw(source.path())->planned_bytes(plan, source, opts);
  }
  return 0;
}

std::unique_ptr<ModelWriter> make_writer(const std::string& path, OutputFormat format,
                                         const std::vector<TensorPlan>& plan, const ModelReader& source,
                                         const WriterOptions& opts) {
  switch (format) {
    case OutputFormat::Wq: return make_wq_writer(path, plan, source.tensors(), source);
    case OutputFormat::Safetensors: return make_safetensors_writer(path, plan, source.tensors());
    case OutputFormat::Gguf: return make_gguf_writer(path, plan, source, opts.gguf_keys);
    case OutputFormat::Onnx: return onnx_hooks_or_throw(path)->make_writer(path, plan, source, opts);
  }
  throw Error(path + ": unknown output format", ErrorKind::Internal);
}

}  // namespace wq
