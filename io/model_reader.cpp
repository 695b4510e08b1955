#include "io/model_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/error.h"
#include "io/mapped_file.h"
#include "io/gguf_format.h"
#include "io/gguf_reader.h"
#include "io/gguf_split_reader.h"
#include "io/onnx_hooks.h"
#include "io/safetensors_reader.h"
#include "io/wq_reader.h"
#include "kernels/ggml_types.h"

namespace wq {

uint64_t ModelReader::data_bytes() const {
  uint64_t n = 0;
  for (const TensorInfo& t : tensors()) n += t.nbytes;
  return n;
}

long ModelReader::find(const std::string& name) const {
  std::call_once(index_once_, [this] {
    const std::vector<TensorInfo>& ts = tensors();
    index_.reserve(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) index_.emplace(ts[i].name, i);
  });
  const auto it = index_.find(name);
  return it == index_.end() ? -1 : long(it->second);
}

QuantizedTensor ModelReader::load_quantized(size_t i) {
  throw Error(path() + ": " + tensors().at(i).name + ": is not a wquant-quantized tensor");
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
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // (a FIFO would block; refused below)
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
    ::close(fd);
    require_regular_file(st.st_mode, path);  // throws
  }
  uint8_t head[16] = {};
  const ssize_t n = ::read(fd, head, sizeof head);
  ::close(fd);
  const uint64_t size = std::filesystem::file_size(p, ec);
  if (n >= 4) {
    uint32_t magic;
    std::memcpy(&magic, head, 4);
    if (magic == kGgufMagic) return join_gguf_splits(open_gguf(p), p);
  }
  if (n >= 8 && is_wq_file(head)) return open_wq(p);
  auto ends_with = [&](const char* suffix) {
    const size_t k = std::strlen(suffix);
    return p.size() >= k && p.compare(p.size() - k, k, suffix) == 0;
  };
  // (A .safetensors file the sniff below does not take, a truncated header or an absurd
  // length, is then told so by the reader rather than called unrecognised.)
  if (ends_with(".json") || ends_with(".safetensors")) return open_safetensors(p);
  if (n > 0 && looks_like_safetensors(head, size_t(n), size)) return open_safetensors(p);
  if (size == 0) throw Error(path + ": is empty");
  const OnnxHooks* onnx = onnx_hooks();
  if (onnx && onnx->sniff(p, head, size_t(n > 0 ? n : 0))) return onnx->open(p);
  // (The public library, and a program that does not link wq_onnx, reads no ONNX: an .onnx
  // file is then not called unrecognised, nor ONNX listed among what is read.)
  if (!onnx && ends_with(".onnx")) {
    throw Error(path + ": is an ONNX model, and this build of wquant reads no ONNX (only the wquant program built "
                       "with libonnx-dev and libprotobuf-dev does); it reads safetensors, GGUF and .wq",
                ErrorKind::Input);
  }
  throw Error(path + ": is not a model wquant reads (safetensors, GGUF, .wq" + (onnx ? ", ONNX" : "") + "): unrecognised content");
}

}  // namespace wq
