#include "engine/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/error.h"
#include "engine/hqq.h"
#include "engine/hqq_columns.h"
#include "engine/quantize_columns.h"
#include "engine/read_ahead.h"
#include "engine/row_source.h"
#include "engine/rows.h"
#include "engine/scheduler.h"
#include "kernels/reference.h"

namespace wq {

static const Kernels& table(const Kernels* k) { return k ? *k : kernels(); }

void check_view_size(const TensorView& w) {
  const size_t n = w.numel();
  if (n * dtype_size(w.dtype) != w.nbytes) {
    throw Error(w.name + ": " + std::to_string(w.nbytes) + " bytes of data for " + std::to_string(n) + " " +
                dtype_name(w.dtype) + " elements");
  }
  if (n && !w.data) throw Error(w.name + ": no data");
}

// row_base: the tensor row of w's row 0 (w a tile of the tensor), for the message. Where
// the file holds the tensor transposed (w.stored_transposed), the message gives the
// stored position first, the one a user finds in the file, and the listed one after.
static void check_finite_rows(const TensorView& w, size_t cols, size_t r0, size_t r1, const Kernels& k,
                              size_t row_base = 0) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t es = dtype_size(w.dtype);
  const size_t n = (r1 - r0) * cols;
  const size_t i = k.find_nonfinite(base + r0 * cols * es, w.dtype, n);
  if (i == n) return;
  const size_t row = row_base + r0 + i / cols, col = i % cols;
  const std::string listed = "row " + std::to_string(row) + ", column " + std::to_string(col);
  std::string at = listed;
  if (w.stored_transposed) {  // (appended: GCC 12 warns, wrongly, of overlap for "[" + std::string)
    at = std::string("[").append(std::to_string(col)).append("][").append(std::to_string(row));
    at.append("] as stored (").append(listed).append(" of the transposed listing)");
  }
  throw Error(w.name + ": non-finite weight (NaN or Inf) at " + at + "; wquant does not quantize tensors with NaN or Inf");
}

static std::string num(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", x);
  return b;
}

// The codes a scheme can store for finite weights: MnnSym never stores code 0 (|w / s| is
// at most 2^(b-1) - 1), the others use all of [0, 2^b - 1]. w_hat is monotonic in the
// code, so these two ends bound every w_hat of the block.
static bool block_is_finite(const QuantizedTensor& q, size_t b) {
  const BlockCodec c{q.scheme, q.spec.bits, q.scales[b], q.zeros.empty() ? 0.0f : q.zeros[b], 0.0f};
  const uint8_t lo = q.scheme == Scheme::MnnSym ? 1 : 0, hi = uint8_t(ref::qmax_of(q.spec.bits));
  return std::isfinite(ref::dequantize_one(lo, c)) && std::isfinite(ref::dequantize_one(hi, c));
}

// Finite weights can still give parameters that are not: a block whose max - min exceeds
// FLT_MAX (scale Inf; MNN asym and HQQ), or, with --fp16, a scale or zero beyond f16's
// 65504 (Inf once stored). Such a tensor would dequantize to Inf or NaN, so it is refused
// here, naming the row and the reason. The common case costs two absmax passes over the
// scales and zeros (a 64th of the weights at block 64; the RTN path takes them per tile,
// while they are in cache, and passes them in): when the bound below is far from FLT_MAX,
// every w_hat of the tensor is finite and no block is looked at. fp16_stage: the
// parameters have just been rounded to f16 (the f32 ones passed).
static void check_params_finite(const RowSource& w, const QuantizedTensor& q, const Kernels& k, bool fp16_stage,
                                const float* abs_max = nullptr) {
  const double smax = abs_max ? abs_max[0] : k.absmax(q.scales.data(), q.scales.size());
  const double zmax = abs_max ? abs_max[1] : q.zeros.empty() ? 0.0 : k.absmax(q.zeros.data(), q.zeros.size());
  const double qmax = ref::qmax_of(q.spec.bits);
  // |w_hat| <= MnnSym: 2^(b-1) s; MnnAsym: qmax s + |min|; Affine: (qmax + |z|) s.
  const double bound = q.scheme == Scheme::MnnSym ? (qmax + 1) / 2 * smax
                       : q.scheme == Scheme::MnnAsym ? qmax * smax + zmax
                                                     : (qmax + zmax) * smax;
  if (bound < 1e38) return;  // NaN parameters come only from NaN/Inf weights, refused before
  const size_t nb = q.blocks_per_row();
  for (size_t b = 0; b < q.scales.size(); ++b) {
    if (block_is_finite(q, b)) continue;
    const size_t r = b / nb, c0 = (b % nb) * q.block;
    const std::string where = w.view.name + ": row " + std::to_string(w.view.first_row + r) +
                              (nb > 1 ? ", columns " + std::to_string(c0) + "-" + std::to_string(c0 + q.block - 1) : "");
    if (fp16_stage) {
      const bool zero_bad = !q.zeros.empty() && !std::isfinite(q.zeros[b]), scale_bad = !std::isfinite(q.scales[b]);
      const std::string zero = q.scheme == Scheme::MnnAsym ? "minimum" : "zero point";
      // (MNN's spelling, --weightQuantScaleBit 16, sets fp16_truncate: name what was typed)
      const std::string flag = q.spec.fp16_truncate ? "--weightQuantScaleBit 16" : "--fp16";
      throw Error(where + ": with " + flag + " its " +
                  (scale_bad && zero_bad ? "scale and " + zero + " do not" : (zero_bad ? zero : "scale") + " does not") +
                  " fit in f16 (largest 65504); quantize without " + flag + " or keep this tensor float (a params rule with "
                  "\"skip\": true)");
    }
    std::vector<float> buf;
    std::vector<uint8_t> scratch;
    const float* row = row_as_f32(w.tile(r, r + 1, &scratch), 0, q.cols, buf, k);
    float mn, mx;
    k.minmax(row + c0, q.block, &mn, &mx);
    // Either the range itself passes float's largest value, or it fits and the scale,
    // rounded up at its top (FLT_MAX / 127 does), times the largest code passes it.
    const bool range_too_wide = double(mx) - double(mn) > double(std::numeric_limits<float>::max());
    throw Error(where + ": weights from " + num(mn) + " to " + num(mx) + ": " +
                (range_too_wide ? "the range is too wide for float (3.4e38), so the " + q.spec.describe() +
                                      " parameters overflow"
                 : q.scheme == Scheme::MnnSym
                     ? "the " + q.spec.describe() + " scale, rounded up at the top of float's range, times the largest "
                       "code passes float's largest value (3.4e38)"
                     : "the " + q.spec.describe() + " parameters (scale and zero) dequantize past float's largest "
                       "value (3.4e38)") +
                "; keep this tensor float (a params rule with \"skip\": true) or scale it down");
  }
}

std::string nonfinite_in_rows(const TensorView& w, size_t r0, size_t r1, const Kernels& k, size_t row_base) {
  try {
    check_finite_rows(w, w.cols(), r0, r1, k, row_base);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

void check_finite(const TensorView& w, const Kernels* k) {
  check_view_size(w);
  check_finite_rows(w, w.cols(), 0, w.rows(), table(k));
}

// MNNConvert's AlignDenormalizedValue: every |w| < FLT_MIN becomes +0 (-0 included,
// since fabs(-0) < FLT_MIN) before quantizing. Returns the flushed tensor as f32 in *buf
// and a view of it, or w itself when nothing would change (the common case: one read-only
// pass, no copy). f16 and bf16 widen to f32 exactly, so quantizing the copy gives the
// bytes quantizing the original would, apart from the flushed values.
static TensorView flush_subnormals(const TensorView& w, std::vector<float>* buf, const Kernels& k) {
  const size_t n = w.numel();
  const size_t es = dtype_size(w.dtype);
  const auto* base = static_cast<const uint8_t*>(w.data);
  auto widen = [&](size_t i) -> float {
    if (w.dtype == DType::F32) {
      float f;
      std::memcpy(&f, base + i * 4, 4);
      return f;
    }
    uint16_t h;
    std::memcpy(&h, base + i * es, 2);
    if (w.dtype == DType::BF16) {
      const uint32_t u = uint32_t(h) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    float f;
    k.widen_f16(&h, &f, 1);
    return f;
  };
  // Zero exponent and not +0: a subnormal or -0. Every f16 subnormal is above FLT_MIN, so
  // only -0 flushes there. Branch-free scans, so the compiler vectorises them.
  auto flushes = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return (u & 0x7f800000u) == 0 && u != 0;
  };
  bool any = false;
  if (w.dtype == DType::F32) {
    for (size_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, base + i * 4, 4);
      any |= ((u & 0x7f800000u) == 0) & (u != 0);
    }
  } else {
    const uint16_t exp_mask = w.dtype == DType::BF16 ? 0x7f80u : 0xffffu;
    const uint16_t zero_exp = w.dtype == DType::BF16 ? 0u : 0x8000u;  // f16: only -0
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, base + i * 2, 2);
      any |= (uint16_t(h & exp_mask) == zero_exp) & (h != 0);
    }
  }
  if (!any) return w;
  buf->resize(n);
  for (size_t i = 0; i < n; ++i) {
    const float f = widen(i);
    (*buf)[i] = flushes(f) ? 0.0f : f;
  }
  TensorView v = w;
  v.dtype = DType::F32;
  v.data = buf->data();
  v.nbytes = n * 4;
  return v;
}

// IEEE f32 -> f16 rounded toward zero (overflow to Inf, NaN kept NaN): MNN's
// half_float::half with its default round style.
static uint16_t truncate_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int exp = int((u >> 23) & 0xff);
  const uint32_t mant = u & 0x7fffffu;
  if (exp == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0u));
  if (exp > 142) return uint16_t(sign | 0x7c00u);  // >= 2^16: beyond f16's largest finite value
  if (exp > 112) return uint16_t(sign | uint32_t(exp - 112) << 10 | mant >> 13);  // normal: drop 13 bits
  if (exp > 101) return uint16_t(sign | (mant | 0x800000u) >> (126 - exp));       // subnormal
  return uint16_t(sign);
}

// n parameters as the record will store them: through f16 (rounded to nearest or toward
// zero) with spec.fp16, as round_params_to_f16 / truncate_params_to_f16 do afterwards.
static void as_stored(const QuantSpec& spec, const float* in, float* out, size_t n, const Kernels& k) {
  if (!spec.fp16) {
    std::memcpy(out, in, n * sizeof(float));
    return;
  }
  uint16_t h[256];
  for (size_t i = 0; i < n; i += 256) {
    const size_t c = std::min<size_t>(256, n - i);
    if (spec.fp16_truncate) {
      for (size_t j = 0; j < c; ++j) h[j] = truncate_to_f16(in[i + j]);
    } else {
      k.narrow_f16(in + i, h, c);
    }
    k.widen_f16(h, out + i, c);
  }
}

// The error of rows [r0, r1), just quantized (their input and codes still in cache),
// against w_hat as a loader will reconstruct it: what tensor_error gives for these rows
// once the parameters are stored. err is the tile's: its row 0 is row r0.
static void measure_rows(const QuantizedTensor& q, size_t r0, size_t r1, const RowErrorSink& err, const Kernels& k) {
  const size_t nb = q.blocks_per_row();
  std::vector<uint8_t> codes(q.cols);
  std::vector<float> w_hat(q.cols), buf, s(nb), z(q.zeros.empty() ? 0 : nb);
  for (size_t r = r0; r < r1; ++r) {
    as_stored(q.spec, q.scales.data() + r * nb, s.data(), nb, k);
    if (!z.empty()) as_stored(q.spec, q.zeros.data() + r * nb, z.data(), nb, k);
    k.unpack_codes(q.packed.data() + r * q.packed_row_bytes, q.cols, q.spec.bits, codes.data());
    dequantize_row_codes(q, codes.data(), s.data(), z.empty() ? nullptr : z.data(), w_hat.data(), k);
    err.add(r - r0, w_hat.data(), buf, k);
  }
}

QuantizedTensor quantize_tensor(const TensorView& w, const QuantSpec& spec, size_t block, const Kernels* kp,
                                std::vector<ErrorSums>* row_sums) {
  return quantize_tensor(RowSource::rows_of(w), spec, block, kp, row_sums);
}

QuantizedTensor quantize_tensor(const RowSource& src, const QuantSpec& spec, size_t block, const Kernels* kp,
                                std::vector<ErrorSums>* row_sums, QuantizedTensor* storage) {
  const Kernels& k = table(kp);
  validate_spec(spec, src.view.name);
  check_view_size(src.view);
  // MNN's subnormal flush and HQQ's lockstep solver pass over the whole tensor: a
  // transposed source is transposed whole for them. Every other path reads tile by tile.
  std::vector<uint8_t> whole;
  const bool needs_whole = spec.mnn_flush || (spec.hqq && spec.hqq_opts.stop == HqqStop::Tensor);
  const RowSource in = needs_whole ? RowSource::rows_of(contiguous_view(src, &whole)) : src;
  std::vector<float> flushed;
  RowSource w = in;
  if (spec.mnn_flush) w.view = flush_subnormals(in.view, &flushed, k);
  const bool flushed_copy = w.view.data != in.view.data;
  QuantizedTensor q;
  q.name = w.view.name;
  q.shape = w.view.shape;
  q.spec = spec;
  q.scheme = spec.scheme();
  q.rows = w.view.rows();
  q.cols = w.view.cols();
  if (block == 0 || q.cols % block != 0) {
    throw Error(w.view.name + ": block " + std::to_string(block) + " does not divide the row length " +
                std::to_string(q.cols), ErrorKind::Usage);
  }
  q.block = block;
  q.packed_row_bytes = (q.cols * size_t(spec.bits) + 7) / 8;
  if (storage) {
    q.packed.swap(storage->packed);
    q.scales.swap(storage->scales);
    q.zeros.swap(storage->zeros);
    q.packed.clear();
    q.scales.clear();
    q.zeros.clear();
  }
  q.packed.resize(q.rows * q.packed_row_bytes);
  const size_t nblocks = q.rows * q.blocks_per_row();
  q.scales.resize(nblocks);
  if (q.scheme != Scheme::MnnSym) q.zeros.resize(nblocks);

  if (row_sums) row_sums->assign(q.rows, ErrorSums{});
  // The error of a tile's rows, against the input as given (before any flush).
  auto measure = [&](size_t r0, size_t r1, const TensorView& tile) {
    TensorView ref = tile;
    if (flushed_copy) ref = in.tile(r0, r1, nullptr);  // contiguous: a slice, no scratch
    measure_rows(q, r0, r1, RowErrorSink{&ref, row_sums->data() + r0}, k);
  };
  float abs_max[2] = {0.0f, 0.0f};  // of the scales and zeros, from the RTN tiles
  // Where the rows are made (the RTN kernel, HQQ's per-block solver), each row is measured
  // right there, against the parameters as they are stored: not with f16 parameters
  // (rounded afterwards) nor after MNN's flush (the error is against the input as given);
  // those tiles are measured by measure_rows.
  const bool measured_in_place = row_sums && !flushed_copy && !spec.fp16;
  // A transposed source: RTN and HQQ's per-block solver read it in bands of stored rows
  // (engine/quantize_columns.h, engine/hqq_columns.h); the rest transposes tiles from the
  // mapping, whose pages are then mapped up front (the tiles read a few lines from every
  // stored row: one call instead of a fault per page). (Neither band path takes --fp16 or
  // MNN's flush, so their rows are measured in place.)
  const bool columns = stored_columns_apply(w, spec, block);
  const bool hqq_columns = hqq_stored_columns_apply(w, spec, block);
  if (w.transposed && !columns && !hqq_columns && w.view.mapped.fd >= 0) {
    read_ahead(static_cast<const uint8_t*>(w.view.data), w.view.nbytes, ReadAhead::Populate);
  }
  bool by_columns = false;
  if (spec.hqq) {
    if (hqq_columns && hqq_quantize_stored_columns(w, q, row_sums ? row_sums->data() : nullptr, k)) {
      // (false: the source holds a NaN or Inf, which the tiles below report)
    } else if (measured_in_place && spec.hqq_opts.stop != HqqStop::Tensor) {
      hqq_quantize(w, q, k, {}, row_sums->data());
    } else if (row_sums) {
      hqq_quantize(w, q, k, measure);
    } else {
      hqq_quantize(w, q, k);
    }
  } else if (columns && quantize_stored_columns(w, q, row_sums, k)) {
    by_columns = true;  // (false: a band holds a NaN or Inf, which the tiles report)
  } else {
    const size_t tile = w.tile_rows();
    const size_t ntiles = (q.rows + tile - 1) / tile;
    // The first bad element of each tile; reported in tile order so the message does
    // not depend on which thread found it first.
    std::vector<std::string> bad(ntiles);
    std::vector<float> tile_max(2 * ntiles, 0.0f);
    const size_t nb = q.blocks_per_row();
    parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) {
      thread_local std::vector<uint8_t> scratch;  // one per worker, reused by every tile it takes
      thread_local std::vector<RowError> row_errors;
      const TensorView t = w.tile(r0, r1, &scratch);
      // Measured in place, the tile needs no scan of its own for NaN and Inf (one was 4% of
      // a bf16 -> .wq conversion's CPU, perf 2026-12-04; why: nonfinite_in_rows).
      if (!measured_in_place) {
        bad[r0 / tile] = nonfinite_in_rows(t, 0, r1 - r0, k, w.view.first_row + r0);  // the tile is then warm in cache
        if (!bad[r0 / tile].empty()) return;
      }
      RowQuantJob job{};
      job.src = t.data;
      job.src_dtype = t.dtype;
      job.src_row_stride = q.cols;
      job.cols = q.cols;
      job.block = block;
      job.scheme = q.scheme;
      job.bits = spec.bits;
      job.round_zero = false;
      job.packed = q.packed.data() + r0 * q.packed_row_bytes;
      job.packed_row_bytes = q.packed_row_bytes;
      job.scales = q.scales.data() + r0 * nb;
      job.zeros = q.zeros.empty() ? nullptr : q.zeros.data() + r0 * nb;
      if (measured_in_place) {
        row_errors.resize(r1 - r0);
        job.errors = row_errors.data();
      }
      k.quantize_rows(job, 0, r1 - r0);
      tile_max[2 * (r0 / tile)] = k.absmax(q.scales.data() + r0 * nb, (r1 - r0) * nb);
      if (job.zeros) tile_max[2 * (r0 / tile) + 1] = k.absmax(q.zeros.data() + r0 * nb, (r1 - r0) * nb);
      if (measured_in_place) {
        const auto unfinite = [](const RowError& e) { return !std::isfinite(e.ref2); };
        if (std::any_of(row_errors.begin(), row_errors.begin() + std::ptrdiff_t(r1 - r0), unfinite)) {
          bad[r0 / tile] = nonfinite_in_rows(t, 0, r1 - r0, k, w.view.first_row + r0);  // empty: a square overflowed
          if (!bad[r0 / tile].empty()) return;
        }
        for (size_t i = 0; i < r1 - r0; ++i) {
          (*row_sums)[r0 + i] = measured_row_sums(row_errors[i], q, r0 + i, [&] { return RowSource::rows_of(t).tile(i, i + 1, nullptr); }, k);
        }
      } else if (row_sums) {
        measure(r0, r1, t);
      }
    });
    for (const std::string& msg : bad) {
      if (!msg.empty()) throw Error(msg);
    }
    for (size_t t = 0; t < ntiles; ++t) {
      abs_max[0] = std::max(abs_max[0], tile_max[2 * t]);
      abs_max[1] = std::max(abs_max[1], tile_max[2 * t + 1]);
    }
  }
  check_params_finite(w, q, k, false, spec.hqq || by_columns ? nullptr : abs_max);
  if (spec.fp16) {
    if (spec.fp16_truncate) truncate_params_to_f16(q, &k);
    else round_params_to_f16(q, &k);
    check_params_finite(w, q, k, true);
  }
  return q;
}

void truncate_params_to_f16(QuantizedTensor& q, const Kernels* kp) {
  const Kernels& k = table(kp);
  q.scales_f16.resize(q.scales.size());
  q.zeros_f16.resize(q.zeros.size());
  for (size_t i = 0; i < q.scales.size(); ++i) q.scales_f16[i] = truncate_to_f16(q.scales[i]);
  for (size_t i = 0; i < q.zeros.size(); ++i) q.zeros_f16[i] = truncate_to_f16(q.zeros[i]);
  k.widen_f16(q.scales_f16.data(), q.scales.data(), q.scales.size());  // exact
  k.widen_f16(q.zeros_f16.data(), q.zeros.data(), q.zeros.size());
}

void round_params_to_f16(QuantizedTensor& q, const Kernels* kp) {
  const Kernels& k = table(kp);
  q.scales_f16.resize(q.scales.size());
  q.zeros_f16.resize(q.zeros.size());
  k.narrow_f16(q.scales.data(), q.scales_f16.data(), q.scales.size());
  k.widen_f16(q.scales_f16.data(), q.scales.data(), q.scales.size());
  k.narrow_f16(q.zeros.data(), q.zeros_f16.data(), q.zeros.size());
  k.widen_f16(q.zeros_f16.data(), q.zeros.data(), q.zeros.size());
}

void widen_f16_params(QuantizedTensor& q, const Kernels* kp) {
  if (!q.spec.fp16) return;
  const Kernels& k = table(kp);
  q.scales.resize(q.scales_f16.size());
  q.zeros.resize(q.zeros_f16.size());
  k.widen_f16(q.scales_f16.data(), q.scales.data(), q.scales.size());
  k.widen_f16(q.zeros_f16.data(), q.zeros.data(), q.zeros.size());
}

void dequantize_rows(const QuantizedTensor& q, size_t row_begin, size_t row_end, float* out, const Kernels* kp) {
  const Kernels& k = table(kp);
  const size_t nb = q.blocks_per_row();
  std::vector<uint8_t> codes(q.cols);
  for (size_t r = row_begin; r < row_end; ++r) {
    k.unpack_codes(q.packed.data() + r * q.packed_row_bytes, q.cols, q.spec.bits, codes.data());
    dequantize_row_codes(q, codes.data(), q.scales.data() + r * nb, q.zeros.empty() ? nullptr : q.zeros.data() + r * nb,
                         out + (r - row_begin) * q.cols, k);
  }
}

ErrorSums measured_row_sums(const RowError& e, const QuantizedTensor& q, size_t r,
                            const std::function<TensorView()>& row, const Kernels& k) {
  if (float_sums_hold(e.err2, e.ref2, e.max_abs, q.cols)) return ErrorSums{e.err2, e.ref2, e.max_abs, q.cols};
  std::vector<float> w_hat(q.cols), buf;
  dequantize_rows(q, r, r + 1, w_hat.data(), &k);
  return error_sums(row_as_f32(row(), 0, q.cols, buf, k), w_hat.data(), q.cols, k);
}

void dequantize_blocks(const QuantizedTensor& q, size_t nblocks, const uint8_t* codes, const float* s, const float* z,
                       float* w_hat, const Kernels& k) {
  for (size_t b = 0; b < nblocks; ++b) {
    const BlockCodec c{q.scheme, q.spec.bits, s[b], z ? z[b] : 0.0f, 0.0f};
    k.dequantize_codes(codes + b * q.block, q.block, c, w_hat + b * q.block);
  }
}

void dequantize_row_codes(const QuantizedTensor& q, const uint8_t* codes, const float* s, const float* z, float* w_hat,
                          const Kernels& k) {
  dequantize_blocks(q, q.blocks_per_row(), codes, s, z, w_hat, k);
}

void dequantize_tensor(const QuantizedTensor& q, float* out, const Kernels* k) {
  const size_t tile = tile_rows_for(q.rows, q.cols * 4);
  parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) { dequantize_rows(q, r0, r1, out + r0 * q.cols, k); });
}

}  // namespace wq
