// RTN of a matrix stored transposed (ONNX MatMul's B [K, N], quantized as [N, K]) read the
// way the file stores it: bands of whole stored rows (pread from the file, or sliced from
// memory), each quantized down its columns by the kernel table's quantize_columns, which
// keeps every quantized row's sq_err partial sums between bands. No transposed copy and
// no strided walk over the mapping: the bytes are read as a contiguous tensor's are.
#pragma once

#include <cstddef>
#include <vector>

#include "engine/metrics.h"
#include "engine/quant_spec.h"
#include "engine/row_source.h"
#include "kernels/kernels.h"

namespace wq {

struct QuantizedTensor;

// The bytes of stored rows a band holds (whole blocks of rows, at least one):
// WQUANT_COLUMN_BAND_BYTES when set (a positive decimal number; for measuring other
// sizes, and for tests that make small tensors take several bands), else about 4 MiB.
// Another value throws Error (ErrorKind::Usage) naming the variable.
size_t column_band_bytes_from_env();

// Whether quantize_stored_columns takes this source and spec: a transposed source, RTN
// (no HQQ, no MNN flush, f32 parameters: --fp16 rounds and measures after the tiles), and
// blocks of a multiple of 16 weights whose band of stored rows stays within 16 MiB.
bool stored_columns_apply(const RowSource& src, const QuantSpec& spec, size_t block);

// Fills q (shape, spec, block and buffers set up by quantize_tensor) with the same codes
// and parameters quantize_tensor's tiles give, and row_sums (when given) with the same
// sums. False when a band holds a NaN or Inf (q is then partly written): the caller
// quantizes by tiles, which report the first one in row order.
bool quantize_stored_columns(const RowSource& src, QuantizedTensor& q, std::vector<ErrorSums>* row_sums,
                             const Kernels& k);

}  // namespace wq
