#include "engine/tensor.h"

#include <unistd.h>

#include <cerrno>
#include <limits>

#include "engine/error.h"

namespace wq {

size_t checked_numel(const std::string& name, const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(name + ": negative dimension " + std::to_string(d));
    if (d != 0 && n > std::numeric_limits<size_t>::max() / size_t(d))
      throw Error(name + ": shape overflows the address space");
    n *= size_t(d);
  }
  return n;
}

bool MappedSource::read(const void* p, size_t n, void* dst) const {
  uint64_t offset = 0;
  if (!offset_of(p, n, &offset)) return false;
  auto* d = static_cast<uint8_t*>(dst);
  while (n) {
    const ssize_t got = ::pread(fd, d, n, off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    d += got;
    n -= size_t(got);
    offset += uint64_t(got);
  }
  return true;
}

size_t TensorView::numel() const { return checked_numel(name, shape); }

MatrixDims matrix_dims(const std::vector<int64_t>& shape) {
  if (shape.size() <= 1) return {1, shape.empty() ? 1 : size_t(shape[0])};
  size_t c = 1;
  for (size_t i = 1; i < shape.size(); ++i) c *= size_t(shape[i]);
  return {size_t(shape[0]), c};
}

size_t TensorView::rows() const { return matrix_dims(shape).rows; }

size_t TensorView::cols() const { return matrix_dims(shape).cols; }

size_t QuantizedTensor::storage_bytes() const {
  const size_t per = spec.fp16 ? 2 : 4;
  return packed.size() + scales.size() * per + zeros.size() * per;
}

}  // namespace wq
