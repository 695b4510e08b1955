// The scales and zeros of a quantized tensor that reaches a writer in row pieces
// (TensorSink::takes_quantized_row_pieces). The .wq and safetensors layouts store a
// tensor's codes first, then its scales, then its zeros: a writer writes each piece's
// codes as they come and keeps the parameters here, as stored (f32, or the halves with
// --fp16), until the last piece, after whose codes they go out whole.
#pragma once

#include <cstddef>
#include <cstring>

#include "engine/output_bytes.h"
#include "engine/tensor.h"

namespace wq {

class PieceParams {
 public:
  // A tensor's first piece: its planned scale and zero bytes reserved at once (grown piece
  // by piece, the largest tensors' parameters would be mapped afresh at every doubling,
  // engine/output_bytes.h).
  void start(size_t scale_bytes, size_t zero_bytes) {
    scales_.clear();
    zeros_.clear();
    scales_.reserve(scale_bytes);
    zeros_.reserve(zero_bytes);
  }
  void add(const QuantizedTensor& q) {
    if (q.spec.fp16) {
      append(scales_, q.scales_f16.data(), q.scales_f16.size() * 2);
      append(zeros_, q.zeros_f16.data(), q.zeros_f16.size() * 2);
    } else {
      append(scales_, q.scales.data(), q.scales.size() * 4);
      append(zeros_, q.zeros.data(), q.zeros.size() * 4);
    }
  }
  const OutputBytes& scales() const { return scales_; }
  const OutputBytes& zeros() const { return zeros_; }

 private:
  static void append(OutputBytes& to, const void* p, size_t n) {
    const size_t at = to.size();
    to.resize(at + n);  // (uninitialised; insert() would construct byte by byte)
    if (n) std::memcpy(to.data() + at, p, n);
  }
  OutputBytes scales_, zeros_;
};

}  // namespace wq
