// The metadata a GGUF output gets beyond the source's (io/gguf_writer.h).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "io/gguf_reader.h"

namespace wq {

// What llama-quantize sets on top of the source's metadata. The output's keys are, in
// this order: the source's (but general.quantization_version, general.file_type and the
// split.* keys), general.quantization_version, general.file_type, then `extra`, as
// llama_model_quantize_impl's gguf_set_val calls (each removes the key and appends it)
// leave them.
struct GgufOutputKeys {
  std::optional<uint32_t> file_type;  // the mix's llama ftype; unset: that of the block type most tensors have
  std::vector<GgufKV> extra;          // quantize.imatrix.*, in llama-quantize's order
};

}  // namespace wq
