#include "engine/tensor.h"

#include <sys/uio.h>
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

bool MappedSource::read_rows(const void* p, size_t rows, size_t row_bytes, void* dst, size_t dst_pitch) const {
  if (dst_pitch == row_bytes) return read(p, rows * row_bytes, dst);
  uint64_t offset = 0;
  if (!offset_of(p, rows * row_bytes, &offset)) return false;
  auto* d = static_cast<uint8_t*>(dst);
  constexpr size_t kMaxIov = 1024;  // IOV_MAX on Linux
  iovec iov[kMaxIov];
  for (size_t r0 = 0; r0 < rows;) {
    const size_t n = rows - r0 < kMaxIov ? rows - r0 : kMaxIov;
    for (size_t i = 0; i < n; ++i) iov[i] = {d + (r0 + i) * dst_pitch, row_bytes};
    const ssize_t got = ::preadv(fd, iov, int(n), off_t(offset + r0 * row_bytes));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    const size_t whole = size_t(got) / row_bytes;  // rows done; a short read ends mid-row
    if (whole < n && size_t(got) % row_bytes) {
      const size_t part = size_t(got) % row_bytes;
      const size_t r = r0 + whole;
      if (!read(static_cast<const uint8_t*>(p) + r * row_bytes + part, row_bytes - part, d + r * dst_pitch + part))
        return false;
      r0 = r + 1;
    } else {
      r0 += whole;
    }
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
