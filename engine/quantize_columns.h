// RTN of a matrix stored transposed (ONNX MatMul's B [K, N], quantized as [N, K]) read the
// way the file stores it: bands of whole stored rows (pread from the file, or sliced from
// memory), each quantized down its columns by the kernel table's quantize_columns, which
// keeps every quantized row's sq_err partial sums between bands. No transposed copy and
// no strided walk over the mapping: the bytes are read as a contiguous tensor's are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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

// Whether src can be read in bands of stored rows for blocks of `block`: a transposed
// source, blocks of a multiple of 16 weights (a band then ends on a whole group of sq_err's
// 16 partials and a whole byte of packed codes), whose band stays within 16 MiB.
bool stored_bands_fit(const RowSource& src, size_t block);

// Whether quantize_stored_columns takes this source and spec: stored_bands_fit, RTN (no
// HQQ, no MNN flush, f32 parameters: --fp16 rounds and measures after the tiles).
bool stored_columns_apply(const RowSource& src, const QuantSpec& spec, size_t block);

// Stored rows per band for blocks of `block` (stored_bands_fit): whole blocks of rows,
// about column_band_bytes_from_env() bytes, at least one block, at most all of them.
size_t stored_band_rows(const RowSource& src, size_t block);

// Stored rows [k0, k0 + rows) of a band: row j's N elements at data + j * pitch elements.
struct StoredRows {
  const uint8_t* data;
  size_t pitch;  // elements of the view's dtype from one stored row to the next (>= N)
};

// Reads the stored rows of a transposed source in bands of `band` rows, in order, and
// calls body(k0, rows, data) for rows [k0, k0 + rows) (rows = band but for the last),
// data holding them one after another (rows x N elements of the view's dtype, each row
// data.pitch elements from the last: a cache line more than N where that spreads them
// over the caches' sets, quantize_columns.cpp band_pitch): pread from the
// file into one of this thread's two band buffers (on 2 MiB pages) where the view is
// mapped from one, the next band read into the other by a task of its own while body
// codes this one; else the mapping itself. Stops when body returns false, and returns
// false then. The buffers are this thread's: body must not start another tensor's bands
// on this thread (run its parallel work under tbb::this_task_arena::isolate).
using StoredBand = std::function<bool(size_t k0, size_t rows, StoredRows data)>;
bool for_each_stored_band(const RowSource& src, size_t band, const StoredBand& body);

// Fills q (shape, spec, block and buffers set up by quantize_tensor) with the same codes
// and parameters quantize_tensor's tiles give, and row_sums (when given) with the same
// sums. False when a band holds a NaN or Inf (q is then partly written): the caller
// quantizes by tiles, which report the first one in row order.
bool quantize_stored_columns(const RowSource& src, QuantizedTensor& q, std::vector<ErrorSums>* row_sums,
                             const Kernels& k);

}  // namespace wq
