#include "io/onnx_support.h"

#include "io/onnx_hooks.h"
#include "engine/error.h"
#include "io/onnx_reader.h"
#include "io/onnx_writer.h"

namespace wq {
namespace {

// ONNX output rewrites the source's graph: there must be one.
const OnnxReader& onnx_source(const ModelReader& source) {
  const auto* r = dynamic_cast<const OnnxReader*>(&source);
  if (!r) throw Error(source.path() + ": ONNX output needs an ONNX model as input (it rewrites the input's graph)", ErrorKind::Usage);
  return *r;
}

}  // namespace

void enable_onnx() {
  OnnxHooks h;
  h.sniff = looks_like_onnx;
  h.open = [](const std::string& path) -> std::unique_ptr<ModelReader> { return open_onnx(path); };
  h.planned_bytes = [](const std::vector<TensorPlan>& plan, const ModelReader& source, const WriterOptions& opts) {
    return onnx_planned_bytes(plan, onnx_source(source), opts);
  };
  h.make_writer = [](const std::string& path, const std::vector<TensorPlan>& plan, const ModelReader& source,
                     const WriterOptions& opts) { return make_onnx_writer(path, plan, onnx_source(source), opts); };
  install_onnx_hooks(h);
}

}  // namespace wq
