#include "io/model_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/error.h"
#include "engine/quantize.h"
#include "io/gguf_format.h"
#include "io/gguf_reader.h"
#include "io/safetensors_reader.h"
#include "io/wq_reader.h"
#include "kernels/ggml_blocks.h"

namespace wq {

uint64_t ModelReader::data_bytes() const {
  uint64_t n = 0;
  for (const TensorInfo& t : tensors()) n += t.nbytes;
  return n;
}

long ModelReader::find(const std::string& name) const {
  const std::vector<TensorInfo>& ts = tensors();
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].name == name) return long(i);
  }
  return -1;
}

QuantizedTensor ModelReader::load_quantized(size_t i) {
  throw Error(path() + ": " + tensors().at(i).name + ": is not a wquant-quantized tensor");
}

std::vector<float> ModelReader::dequantize(size_t i) {
  const TensorInfo& t = tensors().at(i);
  const Kernels& k = kernels();
  switch (t.kind) {
    case StoredKind::Float: {
      const TensorView v = view(i);
      const size_t n = v.numel();
      std::vector<float> out(n);
      if (n == 0) return out;  // a zero-element tensor may have no data pointer at all
      if (v.dtype == DType::F32) std::memcpy(out.data(), v.data, n * 4);
      else if (v.dtype == DType::F16) k.widen_f16(static_cast<const uint16_t*>(v.data), out.data(), n);
      else k.widen_bf16(static_cast<const uint16_t*>(v.data), out.data(), n);
      return out;
    }
    case StoredKind::Quantized: {
      const QuantizedTensor q = load_quantized(i);
      std::vector<float> out(q.rows * q.cols);
      dequantize_tensor(q, out.data());
      return out;
    }
    case StoredKind::Ggml: {
      for (int b = 0; b < kGgmlBlockCount; ++b) {
        if (t.type_name != ggml_block_name(GgmlBlock(b))) continue;
        const size_t n = checked_numel(t.name, t.shape);
        size_t nbytes = 0;
        const uint8_t* data = raw(i, &nbytes);
        if (n % kGgmlBlockWeights || nbytes != n / kGgmlBlockWeights * ggml_block_bytes(GgmlBlock(b)))
          throw Error(path() + ": " + t.name + ": " + std::to_string(nbytes) + " bytes do not hold " + std::to_string(n) + " " + t.type_name + " weights");
        std::vector<float> out(n);
        k.dequantize_ggml[b](data, out.data(), n);
        return out;
      }
      break;
    }
    case StoredKind::Other:
      break;
  }
  throw Error(path() + ": " + t.name + ": cannot dequantize a tensor of type " + t.type_name);
}

std::unique_ptr<ModelReader> open_model(const std::string& path) {
  std::error_code ec;
  std::string p = path;
  if (std::filesystem::is_directory(p, ec)) {
    // A checkpoint directory: its index, or its single safetensors file.
    for (const char* name : {"model.safetensors.index.json", "model.safetensors"}) {
      const std::string c = (std::filesystem::path(p) / name).string();
      if (std::filesystem::exists(c, ec)) return open_model(c);
    }
    throw Error(path + ": is a directory without model.safetensors.index.json or model.safetensors");
  }
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  uint8_t head[16] = {};
  const ssize_t n = ::read(fd, head, sizeof head);
  ::close(fd);
  const uint64_t size = std::filesystem::file_size(p, ec);
  if (n >= 4) {
    uint32_t magic;
    std::memcpy(&magic, head, 4);
    if (magic == kGgufMagic) return open_gguf(p);
  }
  if (n >= 8 && is_wq_file(head)) return open_wq(p);
  if (p.size() >= 5 && p.compare(p.size() - 5, 5, ".json") == 0) return open_safetensors(p);
  if (n > 0 && looks_like_safetensors(head, size_t(n), size)) return open_safetensors(p);
  if (size == 0) throw Error(path + ": is empty");
  throw Error(path + ": is not a model wquant reads (safetensors, GGUF, .wq): unrecognised content");
}

}  // namespace wq
