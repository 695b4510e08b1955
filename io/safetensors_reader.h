// safetensors in: a single file, or a sharded checkpoint through its
// model.safetensors.index.json. Tensors are listed shard by shard in data-offset order.
#pragma once

#include <memory>
#include <string>

#include "io/model_reader.h"

namespace wq {

// Throws Error naming the file (and tensor) for anything malformed: header length past
// the end or absurd, bad JSON, unknown dtype, offsets past the end or overlapping, a
// size that does not match the shape, duplicate names, a missing shard.
std::unique_ptr<ModelReader> open_safetensors(const std::string& path);

// True if the first bytes look like a safetensors file: a plausible header length
// followed by '{'. n is how many bytes `head` holds.
bool looks_like_safetensors(const uint8_t* head, size_t n, uint64_t file_size);

}  // namespace wq
