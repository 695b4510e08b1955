#include "io/model_writer.h"

#include <algorithm>
#include <cctype>

#include "engine/error.h"
#include "io/gguf_writer.h"
#include "io/safetensors_writer.h"
#include "io/wq_writer.h"

namespace wq {

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
  throw Error(path + ": cannot tell the output format from the extension (use .wq, .safetensors or .gguf, or --format)",
              ErrorKind::Usage);
}

uint64_t planned_output_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                              OutputFormat format, const ModelReader& source, const GgufOutputKeys& gguf_keys) {
  switch (format) {
    case OutputFormat::Wq: return wq_planned_bytes(plan, infos, source);
    case OutputFormat::Safetensors: return safetensors_planned_bytes(plan, infos);
    case OutputFormat::Gguf: return gguf_planned_bytes(plan, infos, source, gguf_keys);
  }
  return 0;
}

std::unique_ptr<ModelWriter> make_writer(const std::string& path, OutputFormat format,
                                         const std::vector<TensorPlan>& plan, const ModelReader& source,
                                         const GgufOutputKeys& gguf_keys) {
  switch (format) {
    case OutputFormat::Wq: return make_wq_writer(path, plan, source.tensors(), source);
    case OutputFormat::Safetensors: return make_safetensors_writer(path, plan, source.tensors());
    case OutputFormat::Gguf: return make_gguf_writer(path, plan, source, gguf_keys);
  }
  throw Error(path + ": unknown output format", ErrorKind::Internal);
}

}  // namespace wq
