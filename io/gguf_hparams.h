// The hyper-parameters llama-quantize's mixes depend on (engine/gguf_mix.h MixModel),
// read from a GGUF file's metadata as llama.cpp's loader reads them.
#pragma once

#include <string>

#include "engine/gguf_mix.h"
#include "io/gguf_reader.h"

namespace wq {

// general.architecture, {arch}.block_count, {arch}.attention.head_count and head_count_kv
// (a number or a per-layer array), {arch}.expert_count. Throws Error naming `path` and
// the key when one llama.cpp requires is missing or not an integer.
MixModel gguf_mix_model(const GgufMetadata& meta, const std::string& path);

}  // namespace wq
