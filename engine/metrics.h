// Error of a quantized tensor against its float original.
#pragma once

#include <cmath>
#include <limits>

#include <cstddef>
#include <vector>

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace wq {

struct ErrorMetrics {
  // Every figure is NaN when a weight on either side is NaN (never "exact"); an Inf
  // w_hat gives Inf errors.
  double rel_rmse = 0.0;  // sqrt(sum (w - w_hat)^2 / sum w^2); 0 when both are 0
  double snr_db = 0.0;    // 10 log10(sum w^2 / sum (w - w_hat)^2); +Inf when exact
  double max_abs = 0.0;   // max |w - w_hat|
  double rmse = 0.0;
  size_t count = 0;
};

// Sums behind the figures, for one row or array; combined in a fixed order by
// combine_error_sums so the figures do not depend on threads.
struct ErrorSums {
  double err2 = 0, ref2 = 0, max_abs = 0;
  size_t count = 0;
};
ErrorSums error_sums(const float* ref, const float* approx, size_t n, const Kernels& k);
// Whether a row's float sums of squares (err2, ref2 of n elements; max_abs, the largest
// |difference|) hold its figures: finite (past |w| ~ 1e19 a square overflows), and not so
// small that squares below FLT_MIN lost their digits or vanished (weights of 1e-30 square
// to 0, and a row quantized to zeros read as exact). Where not, the row is summed again
// in double (error_sums does).
inline bool float_sums_hold(double err2, double ref2, double max_abs, size_t n) {
  const double small = double(n) * double(std::numeric_limits<float>::min());
  return std::isfinite(err2) && std::isfinite(ref2) && !(ref2 < small) && !(err2 < small && max_abs > 0);
}
// Combines in vector order.
ErrorMetrics combine_error_sums(const std::vector<ErrorSums>& parts);
// The sums of `rows` rows of `cols` (ref and approx contiguous), each row's by error_sums,
// added in double in row order: a whole tensor's, without float sums over millions of
// weights (16 float partial sums of a 65 M-weight tensor read its rmse 0.4-0.7% low, review
// K), and so the figures quantize measures for the same rows (tensor_error's sums).
ErrorSums error_sums_by_row(const float* ref, const float* approx, size_t rows, size_t cols, const Kernels& k);
// The length of the rows a tensor's error figures are measured by: its last dimension (as
// llama.cpp's and wquant's quantizers cut rows), or the whole tensor as one row where it
// has none (a scalar, a zero-length last dimension); never 0. quantize (conversion_error)
// and verify measure by it, so their figures agree.
inline size_t error_row_length(const std::vector<int64_t>& shape, size_t numel) {
  if (shape.empty() || shape.back() <= 0) return numel ? numel : 1;
  return size_t(shape.back());
}

// A quantizer measuring its own error as it goes: rows[r] receives the sums of row r of
// ref (the tensor as the caller gave it, before any flush of tiny weights) against the
// row's w_hat, computed right after the row is quantized, while both are in cache. The
// per-row sums equal those tensor_error computes (same kernels, same order), so
// combine_error_sums(rows) gives identical figures without a second pass over memory.
// rows must hold ref->rows() entries; different rows may be written from different threads.
struct RowErrorSink {
  const TensorView* ref = nullptr;
  ErrorSums* rows = nullptr;
  explicit operator bool() const { return rows != nullptr; }
  // buf: the caller's scratch for widening an f16/bf16 row.
  void add(size_t r, const float* w_hat, std::vector<float>& buf, const Kernels& k) const;
};

// Dequantizes q tile by tile (never the whole tensor at once) and compares with w.
// Per-row sums are combined in row order, so the figures do not depend on threads.
ErrorMetrics tensor_error(const TensorView& w, const QuantizedTensor& q, const Kernels* k = nullptr);

// The same figures for two float arrays of n elements.
ErrorMetrics array_error(const float* ref, const float* approx, size_t n, const Kernels* k = nullptr);

}  // namespace wq
