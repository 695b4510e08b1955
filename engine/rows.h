// Reading a row of a float tensor view as f32, widening f16/bf16 into a caller's buffer.
#pragma once

#include <cstddef>
#include <vector>

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace wq {

// Row r of w's 2-D view ([rows, cols]) as f32: a pointer into w for f32 data, else
// buf (resized to cols if smaller) holding the widened row.
inline const float* row_as_f32(const TensorView& w, size_t r, size_t cols, std::vector<float>& buf,
                               const Kernels& k) {
  const size_t off = r * cols;
  if (w.dtype == DType::F32) return static_cast<const float*>(w.data) + off;
  if (buf.size() < cols) buf.resize(cols);
  if (w.dtype == DType::F16) k.widen_f16(static_cast<const uint16_t*>(w.data) + off, buf.data(), cols);
  else k.widen_bf16(static_cast<const uint16_t*>(w.data) + off, buf.data(), cols);
  return buf.data();
}

}  // namespace wq
