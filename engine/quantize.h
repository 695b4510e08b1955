// Per-tensor quantization: a float tensor view in, codes + scales + zeros out, in row
// tiles run in parallel on the caller's arena (see scheduler.h). The bytes produced
// depend only on the tensor, the spec and the block, never on threads or ISA.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/metrics.h"
#include "engine/quant_spec.h"
#include "engine/row_source.h"
#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace wq {

// Quantizes w as a [rows, cols] matrix (TensorView's 2-D view) with the given effective
// block (resolve_block's result). Throws Error naming the tensor for a bad spec, a block
// that does not divide the row, a size mismatch, or a non-finite weight (NaN/Inf make
// every scheme's scale meaningless; the message gives the row and column).
// k defaults to the process table. With row_sums, also measures the error while each tile
// is in cache: row_sums is resized to rows and receives the per-row sums of w against
// w_hat as stored (f16 parameters included), the sums tensor_error would compute.
QuantizedTensor quantize_tensor(const TensorView& w, const QuantSpec& spec, size_t block,
                                const Kernels* k = nullptr, std::vector<ErrorSums>* row_sums = nullptr);
// The same, reading rows tile by tile from src (a transposed source is transposed one
// tile at a time, engine/row_source.h). Same bytes and figures as the view of those rows.
// storage: an earlier tensor whose packed, scales and zeros buffers q's are built in
// (taken, their contents ignored), so a caller can hand back memory already mapped.
QuantizedTensor quantize_tensor(const RowSource& src, const QuantSpec& spec, size_t block,
                                const Kernels* k = nullptr, std::vector<ErrorSums>* row_sums = nullptr,
                                QuantizedTensor* storage = nullptr);

// Writes rows*cols floats: w_hat for every element, rows [row_begin, row_end) only when
// given. Uses the stored scales and zeros, so it is exactly what a loader reconstructs.
void dequantize_rows(const QuantizedTensor& q, size_t row_begin, size_t row_end, float* out,
                     const Kernels* k = nullptr);
void dequantize_tensor(const QuantizedTensor& q, float* out, const Kernels* k = nullptr);
// w_hat of one row of q from its codes (one per byte), with that row's per-block scales s
// and zeros z (z null: none, MNN symmetric).
// Row r's ErrorSums from the float sums a kernel measured as it coded it (e), or, where a
// float sum overflowed (|w| past ~1e19), from the row summed again in double by error_sums
// as measure_rows would: row(), called only then, gives row r as a contiguous view of one
// row (the first).
ErrorSums measured_row_sums(const RowError& e, const QuantizedTensor& q, size_t r,
                            const std::function<TensorView()>& row, const Kernels& k);

// w_hat of `nblocks` consecutive blocks of q's scheme, bits and block size: codes (one
// byte each), their scales and zeros (z null for MnnSym) end to end. A row's blocks, or a
// band's blocks of several rows (engine/hqq_columns.cpp).
void dequantize_blocks(const QuantizedTensor& q, size_t nblocks, const uint8_t* codes, const float* s, const float* z,
                       float* w_hat, const Kernels& k);
// dequantize_blocks of one whole row.
void dequantize_row_codes(const QuantizedTensor& q, const uint8_t* codes, const float* s, const float* z, float* w_hat,
                          const Kernels& k);

// Rounds scales and zeros to f16 (scales_f16, zeros_f16: what is stored) and back.
void round_params_to_f16(QuantizedTensor& q, const Kernels* k = nullptr);
// A stored record read with spec.fp16: scales and zeros from their stored halves.
void widen_f16_params(QuantizedTensor& q, const Kernels* k = nullptr);

// Rounds scales and zeros to f16 toward zero and back, as spec.fp16 with
// spec.fp16_truncate stores them (MNN's --weightQuantScaleBit 16).
void truncate_params_to_f16(QuantizedTensor& q, const Kernels* k = nullptr);

// Throws Error naming the tensor if w's byte count is not its element count's, or its
// data is missing.
void check_view_size(const TensorView& w);
// Throws Error naming the tensor, row and column of the first NaN or Inf in w.
void check_finite(const TensorView& w, const Kernels* k = nullptr);

// The first of n narrowed values (F16 or BF16, at `narrowed`) that is NaN or Inf where the
// value it was narrowed from, source(i), is finite: a weight beyond the narrow type's
// range; n if there is none (a NaN or Inf already in the source does not count).
template <class Source>
size_t first_narrowing_overflow(const void* narrowed, DType t, size_t n, const Source& source, const Kernels& k) {
  const auto* h = static_cast<const uint16_t*>(narrowed);
  for (size_t i = k.find_nonfinite(h, t, n); i < n; i = i + 1 + k.find_nonfinite(h + i + 1, t, n - i - 1)) {
    if (std::isfinite(source(i))) return i;
  }
  return n;
}
// The same check for rows [r0, r1) only (a tile about to be quantized, so the pass warms
// the cache instead of costing one of its own): that Error's message, or "" when finite.
// row_base: the tensor row of w's row 0, where w is a tile of the tensor (the message
// names tensor rows).
std::string nonfinite_in_rows(const TensorView& w, size_t r0, size_t r1, const Kernels& k, size_t row_base = 0);
// Why a measured quantizer needs no such scan first: a row's (or column's) sum of squared
// weights is finite exactly when its weights are (a square is never negative, so an Inf
// cannot cancel; a NaN stays NaN), unless a finite weight's square overflowed the float
// sum. So the quantizers measure first (every kernel takes NaN and Inf without fault, the
// searches' bytes then unspecified and dropped) and call nonfinite_in_rows only for rows
// whose sum is not finite; where it finds nothing (an overflow), the tile goes on. The
// same holds for the sum of squared errors: it is finite exactly when every w_hat is (for
// finite weights), which the GGUF tiles use for their f16 fields (ggml_quantize.cpp).

}  // namespace wq
