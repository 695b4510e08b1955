// GGUF (v2, v3) in: metadata of every kind, tensor infos, data validated against the file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/model_reader.h"

namespace wq {

// One metadata pair, kept as the bytes it has in the file so a writer copies it exactly.
struct GgufKV {
  std::string key;
  uint32_t type = 0;            // GgufValueType
  std::vector<uint8_t> value;   // the encoded value (after the type field)
};

struct GgufMetadata {
  uint32_t version = 3;
  std::vector<GgufKV> kvs;  // file order
  uint32_t alignment = 32;

  const GgufKV* find(const std::string& key) const;
};

class GgufReader : public ModelReader {
 public:
  virtual const GgufMetadata& metadata() const = 0;
  // The ggml type id of tensor i.
  virtual uint32_t ggml_type(size_t i) const = 0;
  // Where tensor i's data lies: its shard (0 for a single file; gguf_split_reader.h) and
  // its absolute offset in that shard's file.
  virtual uint32_t shard(size_t i) const { return (void)i, 0; }
  virtual uint64_t data_offset(size_t i) const = 0;
  // The files of the model: 1 (path()) unless split.
  virtual uint32_t shard_count() const { return 1; }
  virtual const std::string& shard_path(uint32_t s) const { return (void)s, path(); }
};

// The tensors in the order their data lies: by shard, then by offset in the shard's file
// (llama-quantize --keep-split visits them so). Indices into tensors().
std::vector<size_t> gguf_file_order(const GgufReader& r);

// Throws Error naming the file and the key or tensor for anything malformed.
std::unique_ptr<GgufReader> open_gguf(const std::string& path);

}  // namespace wq
