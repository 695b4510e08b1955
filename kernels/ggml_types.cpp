#include "kernels/ggml_types.h"

#include <cctype>

namespace wq {
WQ_BEGIN_ISA_NAMESPACE

std::optional<GgmlBlock> ggml_block_named(std::string_view name) {
  for (const GgmlTypeTraits& t : kGgmlTraits) {
    const std::string_view n = t.name;
    if (n.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < n.size() && same; ++i) {
      same = std::toupper(static_cast<unsigned char>(name[i])) == n[i];
    }
    if (same) return t.type;
  }
  return std::nullopt;
}

std::optional<GgmlBlock> ggml_block_of_gguf(uint32_t gguf_type) {
  for (const GgmlTypeTraits& t : kGgmlTraits) {
    if (t.gguf_type == gguf_type) return t.type;
  }
  return std::nullopt;
}

WQ_END_ISA_NAMESPACE
}  // namespace wq
