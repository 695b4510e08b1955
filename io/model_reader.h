// Model readers: open a file (or a sharded checkpoint), list its tensors without reading
// their data, and hand out validated views of the mmapped bytes one tensor at a time.
// Every size and offset is checked against the file before any data is touched: a
// truncated or hostile file gives an Error naming the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/pipeline.h"
#include "engine/plan.h"
#include "engine/tensor.h"

namespace wq {

class ModelReader : public TensorSource {
 public:
  ~ModelReader() override = default;

  // "safetensors", "gguf" or "wq".
  virtual const char* format() const = 0;
  virtual const std::string& path() const = 0;
  // The file holding tensor i's data, for messages: path(), or a shard of a split GGUF or
  // sharded safetensors model.
  virtual std::string file_of(size_t i) const { (void)i; return path(); }
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  // Total bytes of tensor data.
  uint64_t data_bytes() const;
  // Index of the tensor called name, or -1. The first call builds a name index (readers
  // refuse duplicate names), so a lookup per tensor stays linear in the tensor count.
  long find(const std::string& name) const;

  // The file's free-form string metadata (safetensors' __metadata__); empty where the
  // format has none.
  virtual std::map<std::string, std::string> string_metadata() const { return {}; }
  // Files besides path() that tensor data is read from (ONNX external data); output must
  // never replace one.
  virtual std::vector<std::string> data_files() const { return {}; }

  // Stored record of a wquant-quantized tensor (kind == Quantized), scales and zeros as
  // stored (TensorSource::load_quantized). Throws otherwise, naming the file.
  QuantizedTensor load_quantized(size_t i) override;
  // Any tensor as f32 is engine's tensor_as_f32 (engine/stored_tensor.h): io only reads.

 private:
  mutable std::once_flag index_once_;
  mutable std::unordered_map<std::string, size_t> index_;
};

// Opens by content: safetensors (an index .json of a sharded checkpoint, or a
// .safetensors file), GGUF (magic "GGUF"), .wq (its magic). Throws Error naming the file
// when it is missing, unreadable, or of no known format.
std::unique_ptr<ModelReader> open_model(const std::string& path);

}  // namespace wq
