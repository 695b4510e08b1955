// HQQ's per-block solver (HqqStop::Block) on a matrix stored transposed (ONNX MatMul's
// B [K, N], quantized as [N, K] with blocks along K), read the way the file stores it:
// bands of whole stored rows (engine/quantize_columns.h), each cut into tasks of a few
// quantized rows whose part of the band is transposed into the task's buffer, where the
// rows' blocks of the band lie end to end and are solved in one kernel call. Every block
// is solved on its own, so a block gets the same parameters and codes as in the whole
// row; each row's error sums are carried from band to band in sq_err's partials. The
// tile path this replaces transposed 256 rows at a time from the mapping, a few lines
// from each of thousands of pages: the transposes were 22% of an ONNX HQQ conversion's
// CPU (perf, 2026-12-04).
#pragma once

#include <cstddef>

#include "engine/metrics.h"
#include "engine/quant_spec.h"
#include "engine/row_source.h"
#include "kernels/kernels.h"

namespace wq {

struct QuantizedTensor;

// Whether hqq_quantize_stored_columns takes this source and spec: stored_bands_fit, HQQ
// stopping per block, no MNN flush, f32 parameters (--fp16 measures after rounding, by
// tiles).
bool hqq_stored_columns_apply(const RowSource& src, const QuantSpec& spec, size_t block);

// Fills q (shape, spec, block and buffers set up by quantize_tensor) with the codes,
// parameters and solver_steps hqq_quantize gives, and row_sums (when given: q.rows
// entries) with the sums it measures. False when the source holds a NaN or Inf (q is
// then partly written): the caller quantizes by tiles, which report the first one in row
// order.
bool hqq_quantize_stored_columns(const RowSource& src, QuantizedTensor& q, ErrorSums* row_sums, const Kernels& k);

}  // namespace wq
