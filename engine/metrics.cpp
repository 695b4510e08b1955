#include "engine/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/error.h"
#include "engine/quantize.h"
#include "engine/rows.h"
#include "engine/scheduler.h"

namespace wq {

ErrorSums error_sums(const float* a, const float* b, size_t n, const Kernels& k) {
  ErrorSums s;
  s.count = n;
  float m = 0.0f;  // max |a - b|, NaN differences skipped, in the same pass as the sums
  k.sq_err(a, b, n, &s.err2, &s.ref2, &m);
  s.max_abs = m;
  // The kernel sums in float: past |w| ~ 1e19 a square overflows to Inf and the figures
  // would say "exact" (Inf / Inf) or Inf for finite weights, and below ~1e-19 squares
  // vanish and they would say "exact" for a row quantized to zeros. Sum again in double
  // then (finite floats neither overflow nor underflow it), and a NaN anywhere makes the
  // max a NaN too (absmax skips NaN).
  if (!float_sums_hold(s.err2, s.ref2, s.max_abs, n)) {
    double e = 0, r = 0;
    bool nan = false;
    for (size_t i = 0; i < n; ++i) {
      const double d = double(a[i]) - double(b[i]);
      e += d * d;
      r += double(a[i]) * double(a[i]);
      nan = nan || d != d;
    }
    s.err2 = e;
    s.ref2 = r;
    if (nan) s.max_abs = std::numeric_limits<double>::quiet_NaN();
  }
  return s;
}

namespace {

// s added to total, in double (a NaN max stays).
void add_sums(ErrorSums& total, const ErrorSums& s) {
  total.err2 += s.err2;
  total.ref2 += s.ref2;
  total.max_abs = s.max_abs != s.max_abs ? s.max_abs : std::max(total.max_abs, s.max_abs);
  total.count += s.count;
}

}  // namespace

ErrorSums error_sums_by_row(const float* ref, const float* approx, size_t rows, size_t cols, const Kernels& k) {
  ErrorSums total;
  for (size_t r = 0; r < rows; ++r) add_sums(total, error_sums(ref + r * cols, approx + r * cols, cols, k));
  return total;
}

ErrorMetrics combine_error_sums(const std::vector<ErrorSums>& parts) {
  ErrorSums all;
  for (const ErrorSums& s : parts) add_sums(all, s);  // vector order: independent of threads
  const double e = all.err2, r = all.ref2, m = all.max_abs;
  const size_t count = all.count;
  ErrorMetrics out;
  out.count = count;
  out.max_abs = m;
  out.rmse = count ? std::sqrt(e / double(count)) : 0.0;
  out.rel_rmse = r > 0 ? std::sqrt(e / r) : (e > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  out.snr_db = e > 0 ? 10.0 * std::log10(r / e) : std::numeric_limits<double>::infinity();
  if (e != e || r != r) {  // NaN weights on either side: no figure means anything
    out.rmse = out.rel_rmse = out.snr_db = out.max_abs = std::numeric_limits<double>::quiet_NaN();
  }
  return out;
}

void RowErrorSink::add(size_t r, const float* w_hat, std::vector<float>& buf, const Kernels& k) const {
  const size_t cols = ref->cols();
  rows[r] = error_sums(row_as_f32(*ref, r, cols, buf, k), w_hat, cols, k);
}

ErrorMetrics array_error(const float* ref, const float* approx, size_t n, const Kernels* kp) {
  const Kernels& k = kp ? *kp : kernels();
  return combine_error_sums({error_sums(ref, approx, n, k)});
}

ErrorMetrics tensor_error(const TensorView& w, const QuantizedTensor& q, const Kernels* kp) {
  const Kernels& k = kp ? *kp : kernels();
  if (w.rows() != q.rows || w.cols() != q.cols) {
    throw Error(w.name + ": float tensor is " + std::to_string(w.rows()) + "x" + std::to_string(w.cols()) +
                " but the quantized one is " + std::to_string(q.rows) + "x" + std::to_string(q.cols));
  }
  std::vector<ErrorSums> sums(q.rows);
  const size_t tile = tile_rows_for(q.rows, q.cols * 8);
  parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) {
    std::vector<float> wh(q.cols), wf;
    for (size_t r = r0; r < r1; ++r) {
      dequantize_rows(q, r, r + 1, wh.data(), &k);
      sums[r] = error_sums(row_as_f32(w, r, q.cols, wf, k), wh.data(), q.cols, k);
    }
  });
  return combine_error_sums(sums);
}

}  // namespace wq
