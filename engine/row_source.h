// Where the quantizer reads a tensor's rows from, one row tile at a time: a contiguous
// view (the tile is a slice of it), or a matrix stored transposed. ONNX's MatMul keeps
// its weight as B [K, N]; wquant quantizes it as [N, K] (blocks along K, as MatMulNBits
// stores them). The ONNX reader hands a MatMul weight that lies in a mapped file to the
// quantizer as stored (io/onnx_reader.cpp), and each tile of N-rows is transposed from the
// stored columns into a per-thread buffer as the quantizer reaches it, so no copy of the
// whole is held.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace wq {

struct RowSource {
  // Name, listed shape ([rows, ...] as quantized), dtype and byte count. data: the rows
  // (contiguous), or with transposed the stored [cols, rows] matrix.
  TensorView view;
  bool transposed = false;

  static RowSource rows_of(const TensorView& v) { return RowSource{v, false}; }
  // v.shape is the listed (quantized) 2-D shape; v.data holds its transpose.
  static RowSource transposed_of(const TensorView& v) { return RowSource{v, true}; }

  // Rows [r0, r1) as a contiguous view of shape [r1 - r0, cols] (same name and dtype):
  // a slice of view; or, when view.mapped names the file it is mapped from and scratch
  // is given, the rows pread from the file into *scratch (engine/tensor.h says why); or
  // their transpose written into *scratch. *scratch is grown as needed, never shrunk, so
  // a thread reuses one buffer for every tile it takes. A null scratch always slices.
  TensorView tile(size_t r0, size_t r1, std::vector<uint8_t>* scratch) const;

  // Rows per tile for the quantizer's parallel loop (scheduler.h's tile_rows_for, and
  // wider for a transposed source: see row_source.cpp).
  size_t tile_rows() const;
};

// rows_of(v) when v is contiguous, and the whole transpose when a caller needs one.
// Used where a pass over the whole tensor at once is needed (MNN's subnormal flush,
// HQQ's lockstep solver): *buf receives the transposed rows.
TensorView contiguous_view(const RowSource& s, std::vector<uint8_t>* buf);

}  // namespace wq
