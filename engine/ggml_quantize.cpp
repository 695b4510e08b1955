#include "engine/ggml_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "engine/error.h"
#include "engine/ggml_kquant_hqq.h"
#include "engine/quantize.h"
#include "engine/row_source.h"
#include "engine/rows.h"
#include "engine/scheduler.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_types.h"
#include "kernels/reference.h"

namespace wq {


namespace {

// HQQ-solved 32-weight blocks as Q4_1 / Q5_1: w_hat = q * d + m with d = s, m = -z * s.
void hqq_to_ggml(const QuantizedTensor& q, GgmlBlock t, uint8_t* out, const Kernels& k) {
  std::vector<uint8_t> codes(q.cols);
  const size_t nb = q.blocks_per_row();
  const size_t bb = ggml_traits(t).bytes;
  for (size_t r = 0; r < q.rows; ++r) {
    k.unpack_codes(q.packed.data() + r * q.packed_row_bytes, q.cols, q.spec.bits, codes.data());
    for (size_t b = 0; b < nb; ++b) {
      const float s = q.scales[r * nb + b], z = q.zeros[r * nb + b];
      const uint16_t d = ref::f32_to_f16(s), m = ref::f32_to_f16(-z * s);
      const uint8_t* c = codes.data() + b * 32;
      uint8_t* dst = out + (r * nb + b) * bb;
      if (t == GgmlBlock::Q4_1) {
        BlockQ4_1 y{};
        y.d = d;
        y.m = m;
        for (int j = 0; j < 16; ++j) y.qs[j] = uint8_t(c[j] | (c[j + 16] << 4));
        std::memcpy(dst, &y, sizeof y);
      } else {
        BlockQ5_1 y{};
        y.d = d;
        y.m = m;
        uint32_t qh = 0;
        for (int j = 0; j < 16; ++j) {
          y.qs[j] = uint8_t((c[j] & 0x0f) | ((c[j + 16] & 0x0f) << 4));
          qh |= uint32_t(c[j] >> 4) << j;
          qh |= uint32_t(c[j + 16] >> 4) << (j + 16);
        }
        std::memcpy(y.qh, &qh, 4);
        std::memcpy(dst, &y, sizeof y);
      }
    }
  }
}

// Below sqrt(FLT_MIN) a weight's square is a denormal or zero: a block of such weights
// gives the importance-weighted K-quant searches all-zero (or all-denormal) weights.
constexpr float kSquareUnderflows = 1.0842022e-19f;

// Each block type's f16 scale d (and min or dmin) sits at its traits' offsets.
// Finite weights give an Inf there when the block's scale or min passes f16's 65504 (a
// Q8_0 block with |w| > 127 x 65504, a Q4_1 block whose min is below -65504, a K-quant
// super-block whose largest sub-block scale does, ...), and the block then dequantizes to
// Inf/NaN: refused, naming the tensor, row and block, instead.
// Reads two or four bytes a block, of rows just written (in cache). Returns the message
// for the first bad block of rows [r0, r1), or "".
// `imatrix`: the row's importance values where the quantizer had them: a block whose
// values are all zero is told so (its search had no weights: the importance matrix, not
// the weights, is the cause).
std::string check_ggml_rows(const TensorView& w, GgmlBlock t, const uint8_t* out, size_t r0, size_t r1, size_t row_bytes,
                     const Kernels& k, const float* imatrix = nullptr) {
  const size_t bb = ggml_traits(t).bytes, nb = row_bytes / bb, wpb = ggml_traits(t).weights;
  const int d_at = ggml_traits(t).d_offset, m_at = ggml_traits(t).m_offset;
  for (size_t r = r0; r < r1; ++r) {
    for (size_t b = 0; b < nb; ++b) {
      const uint8_t* p = out + r * row_bytes + b * bb;
      uint16_t d, m = 0;
      std::memcpy(&d, p + d_at, 2);
      if (m_at >= 0) std::memcpy(&m, p + m_at, 2);
      const bool d_bad = (d & 0x7c00u) == 0x7c00u, m_bad = (m & 0x7c00u) == 0x7c00u;
      if (!d_bad && !m_bad) continue;
      std::vector<float> buf;
      float mn, mx;
      k.minmax(row_as_f32(w, r, w.cols(), buf, k) + b * wpb, wpb, &mn, &mx);
      char range[96];
      std::snprintf(range, sizeof range, "weights from %.6g to %.6g", double(mn), double(mx));
      const std::string where = w.name + ": row " + std::to_string(w.first_row + r) + ", columns " + std::to_string(b * wpb) +
                                "-" + std::to_string(b * wpb + wpb - 1) + ": " + range + ": the " + ggml_block_name(t) +
                                " block's " + (d_bad && m_bad ? "scale and min do" : d_bad ? "scale does" : "min does") +
                                " not fit in its f16 field";
      if (imatrix && std::all_of(imatrix + b * wpb, imatrix + (b + 1) * wpb, [](float v) { return v == 0.0f; })) {
        return where + ": the importance matrix's values for these columns are all zero, which leaves the block's "
                       "search without weights (llama-quantize fails here too); leave this tensor out of the "
                       "imatrix (--exclude-weights " + w.name + ") or use another imatrix";
      }
      if (imatrix && std::max(-mn, mx) < kSquareUnderflows) {
        // llama.cpp weighs each weight by qw * sqrt(sigma2 + x * x): both terms are zero in
        // float here, whatever the importance values, so the search has no weights.
        return where + ": weights so small that their squares underflow in float, which leaves the block's "
                       "importance-weighted search without weights (llama.cpp's divides by zero there); quantize this "
                       "tensor without the importance matrix (--exclude-weights " + w.name + ") or keep it float (a "
                       "params rule with \"skip\": true)";
      }
      if (imatrix && std::max(-mn, mx) < 65504.0f) {
        // Weights this small give every type a scale and min that fit (each is at most
        // the largest weight): the importance values are the cause.
        char im[64];
        std::snprintf(im, sizeof im, "%.6g", double(*std::max_element(imatrix + b * wpb, imatrix + (b + 1) * wpb)));
        return where + ": the importance matrix's values there (up to " + im + ") overflow the block's search; use "
                       "another importance matrix or leave this tensor out of it (--exclude-weights " + w.name + ")";
      }
      return where + " (largest 65504); keep this tensor float (a params rule with \"skip\": true) or choose another "
                     "type for it";
    }
  }
  return {};
}

// Whether t's quantizer searches for its scale by a weighted fit, whose float sums
// overflow for extreme values (and then keep a zero scale): the K-quants and IQ4 always,
// the legacy types only with an importance matrix (without one they take the block's
// largest weight; Q8_0 never takes one).
bool search_may_zero(GgmlBlock t, const float* imatrix) {
  switch (t) {
    case GgmlBlock::Q8_0: return false;
    case GgmlBlock::Q4_0:
    case GgmlBlock::Q4_1:
    case GgmlBlock::Q5_0:
    case GgmlBlock::Q5_1: return imatrix != nullptr;
    default: return true;
  }
}

// No type stores a weight past 65504 x 127 x 63 (~5.2e8: f16 scale, largest code,
// largest sub-block scale): below ~1e12 its scale then overflows f16 (check_ggml_rows
// names that), but past it the weighted searches' float sums overflow first and they keep
// a zero scale, writing the weights as zeros with exit 0. 1e9 refuses nothing storable.
constexpr float kStorableWeight = 1e9f;
// Importance values are mean squares of activations (real files: below ~1e10). Far past
// any model's, the searches' float sums overflow and keep zero scales too (a tensor of
// weights near 1 came out zeros from ~1e33 for Q4_K, ~1e37 for Q6_K, review 2026-12-07):
// such a file is refused as broken. 1e20 is ten orders from both.
constexpr float kLargestImportance = 1e20f;

// Why row r (its floats `row`) holds a weight t cannot store, naming its first such
// block; called for a row whose largest weight passes kStorableWeight.
std::string overflow_in_row(const TensorView& w, GgmlBlock t, const float* row, size_t r, const Kernels& k) {
  const size_t wpb = ggml_traits(t).weights, nb = w.cols() / wpb;
  for (size_t b = 0; b < nb; ++b) {
    float mn, mx;
    k.minmax(row + b * wpb, wpb, &mn, &mx);
    if (!(std::max(-mn, mx) >= kStorableWeight)) continue;
    char what[240];
    std::snprintf(what, sizeof what, "weights from %.6g to %.6g: no %s block stores a weight past about 5.2e8 (its scale "
                  "does not fit in f16, and past ~1e12 its search overflows and writes zeros instead)",
                  double(mn), double(mx), ggml_block_name(t));
    return w.name + ": row " + std::to_string(w.first_row + r) + ", columns " + std::to_string(b * wpb) + "-" +
           std::to_string(b * wpb + wpb - 1) + ": " + what + "; keep this tensor float (a params rule with \"skip\": true)";
  }
  return {};
}

// Per-row error sums of blocks against w, tile by tile.
void ggml_row_sums(const TensorView& w, GgmlBlock t, const uint8_t* blocks, ErrorSums* sums, const Kernels& k) {
  const size_t rows = w.rows(), cols = w.cols();
  const size_t row_bytes = ggml_row_bytes(t, cols);
  parallel_row_tiles(rows, tile_rows_for(rows, cols * 8), [&](size_t r0, size_t r1) {
    std::vector<float> buf, wh(cols);
    for (size_t r = r0; r < r1; ++r) {
      k.dequantize_ggml[int(t)](blocks + r * row_bytes, wh.data(), cols);
      sums[r] = error_sums(row_as_f32(w, r, cols, buf, k), wh.data(), cols, k);
    }
  });
}

}  // namespace

namespace {

// Both public overloads: out is resized to the tensor's blocks, every byte then written.
template <class Bytes>
void quantize_ggml_into(const TensorView& w, GgmlBlock t, const QuantSpec& spec, Bytes& out, const Kernels* kp,
                        const float* imatrix, std::vector<ErrorSums>* row_sums, size_t lead) {
  const Kernels& k = kp ? *kp : kernels();
  const size_t rows = w.rows(), cols = w.cols();
  if (cols % ggml_traits(t).weights) {
    throw Error(w.name + ": rows of " + std::to_string(cols) + " are not a multiple of " + std::to_string(ggml_traits(t).weights) + ", required by " +
                ggml_block_name(t));
  }
  const size_t row_bytes = ggml_row_bytes(t, cols);
  out.resize(lead + rows * row_bytes);
  uint8_t* const blocks = out.data() + lead;
  if (row_sums) row_sums->assign(rows, ErrorSums{});
  const bool hqq_kquant = spec.hqq && hqq_refines_kquant(t);
  if (hqq_kquant) {
    if (spec.hqq_opts.stop == HqqStop::Tensor || spec.hqq_opts.round_zero) {
      throw Error(w.name + ": " + ggml_block_name(t) + " refines each sub-block's minimum on its own grid: --hqq-stop tensor and "
                  "--hqq-round-zero do not apply to it", ErrorKind::Usage);
    }
  } else if (spec.hqq) {
    if (imatrix) {
      throw Error(w.name + ": HQQ takes no importance matrix (it solves each block's zero on its own)", ErrorKind::Usage);
    }
    if (!ggml_traits(t).has_min || ggml_traits(t).weights != 32) {
      throw Error(w.name + ": HQQ needs a block type with a minimum (Q4_1, Q5_1, Q2_K, Q4_K or Q5_K), not " +
                  std::string(ggml_block_name(t)), ErrorKind::Usage);
    }
    QuantSpec s = spec;
    s.bits = ggml_traits(t).bits;
    s.block = ggml_traits(t).weights;
    s.asym = true;
    s.fp16 = false;
    const QuantizedTensor q = quantize_tensor(w, s, ggml_traits(t).weights, &k);
    hqq_to_ggml(q, t, blocks, k);
    const std::string bad = check_ggml_rows(w, t, blocks, 0, rows, row_bytes, k);
    if (!bad.empty()) throw Error(bad);
    if (row_sums) ggml_row_sums(w, t, blocks, row_sums->data(), k);  // HQQ's solve dominates: a pass of its own
    return;
  }
  check_view_size(w);
  // llama.cpp's Q8_0 quantizer takes no importance matrix (quantize_q8_0 ignores it): no
  // check of one applies.
  if (t == GgmlBlock::Q8_0) imatrix = nullptr;
  if (imatrix) {
    for (size_t c = 0; c < cols; ++c) {
      if (!(imatrix[c] - imatrix[c] == 0.0f)) {
        throw Error(w.name + ": importance matrix entry " + std::to_string(c) + " is not finite");
      }
      if (imatrix[c] < 0.0f) {
        char v[32];
        std::snprintf(v, sizeof v, "%.6g", double(imatrix[c]));
        throw Error(w.name + ": importance matrix entry " + std::to_string(c) + " is " + v + ", negative: the values are "
                    "mean squares of activations, never below zero (a broken file?), and llama.cpp's searches weigh "
                    "errors by them (a negative weight rewards error: garbage with no error); use another importance "
                    "matrix or leave this tensor out of it (--exclude-weights " + w.name + ")");
      }
      if (imatrix[c] >= kLargestImportance) {
        char v[32];
        std::snprintf(v, sizeof v, "%.6g", double(imatrix[c]));
        throw Error(w.name + ": importance matrix entry " + std::to_string(c) + " is " + v + ", past 1e20: no model's mean "
                    "square of activations is that large (a broken file?), and far past it llama.cpp's searches overflow "
                    "and write zeros; use another importance matrix or leave this tensor out of it (--exclude-weights " +
                    w.name + ")");
      }
    }
    // No weights at all: every block would be written as zeros (the legacy types, Q6_K,
    // Q3_K, IQ4_XS) or fail (the types with a minimum), whichever llama-quantize does.
    if (std::all_of(imatrix, imatrix + cols, [](float v) { return v == 0.0f; })) {
      throw Error(w.name + (w.first_row ? " (rows from " + std::to_string(w.first_row) + ")" : std::string()) +
                  ": every importance matrix value for its " + std::to_string(cols) + " columns is zero, which would write it as zeros; "
                  "use another importance matrix or leave this tensor out of it (--exclude-weights " + w.name + ")");
    }
  }
  const HqqParams hp{ggml_traits(t).bits, spec.hqq_opts.max_steps, spec.hqq_opts.p, spec.hqq_opts.beta, spec.hqq_opts.kappa};
  const size_t tile = tile_rows_for(rows, cols * dtype_size(w.dtype));
  std::vector<std::string> bad((rows + tile - 1) / tile);  // reported in tile order: not thread-dependent
  // A NaN or Inf weight is refused, named by its row and column: measured tiles are
  // quantized first and scanned only where a row's sum of squares is not finite (the
  // argument is at nonfinite_in_rows, engine/quantize.h), their bytes dropped if a weight
  // was bad. Unmeasured tiles, and HQQ's refinement (an iterative solver), are scanned
  // first. The scan was 4.5% of the CPU of a Q4_0 conversion (perf, 2026-12-04).
  const bool scan_first = !row_sums || hqq_kquant;
  // Weights that overflow a weighted search: one pass over each row in L1 (absmax), for
  // the types whose search is one.
  const bool checks_overflow = search_may_zero(t, imatrix);
  parallel_row_tiles(rows, tile, [&](size_t r0, size_t r1) {
    thread_local std::vector<uint8_t> scratch;  // one per worker, reused by every tile it takes
    const TensorView rows_in = RowSource::rows_of(w).tile(r0, r1, &scratch);
    if (scan_first) {
      bad[r0 / tile] = nonfinite_in_rows(rows_in, 0, r1 - r0, k, w.first_row + r0);
      if (!bad[r0 / tile].empty()) return;
    }
    std::vector<float> buf, wh(row_sums ? cols : 0);
    // all_finite: every row's sum of squared weights is finite (so are its weights).
    // params_finite: every row's sum of squared errors is; then so is every w_hat, and
    // every block's f16 scale and min with it (a dequantizer multiplies each weight's code
    // by d, and adds m; an Inf or NaN there gives an Inf or NaN w_hat, 0 x Inf included),
    // so the tile needs no check_ggml_rows.
    bool all_finite = true, params_finite = row_sums != nullptr;
    size_t overflow_row = r1;  // the tile's first row holding a weight past kStorableWeight (checks_overflow)
    for (size_t r = r0; r < r1; ++r) {
      const float* row = row_as_f32(rows_in, r - r0, cols, buf, k);
      uint8_t* dst = blocks + r * row_bytes;
      if (checks_overflow && overflow_row == r1 && k.absmax(row, cols) >= kStorableWeight) overflow_row = r;
      if (row_sums && !hqq_kquant) {
        // Measured as it is coded (the legacy types: inside their quantizers; the others
        // dequantize the row while it is in L1): error_sums' figures, which it recomputes
        // in double only where a float sum overflowed or underflowed (float_sums_hold).
        RowError e;
        k.quantize_ggml_measured[int(t)](row, dst, cols, imatrix, &e);
        if (float_sums_hold(e.err2, e.ref2, e.max_abs, cols)) {
          (*row_sums)[r] = ErrorSums{e.err2, e.ref2, e.max_abs, cols};
        } else {
          k.dequantize_ggml[int(t)](dst, wh.data(), cols);
          (*row_sums)[r] = error_sums(row, wh.data(), cols, k);
        }
      } else {
        k.quantize_ggml[int(t)](row, dst, cols, imatrix);
        if (hqq_kquant) hqq_refine_kquant_row(t, row, dst, cols, imatrix, hp, k);
        if (row_sums) {  // the row and its refined blocks are in L1: no memory traffic
          k.dequantize_ggml[int(t)](dst, wh.data(), cols);
          (*row_sums)[r] = error_sums(row, wh.data(), cols, k);
        }
      }
      if (row_sums) {
        all_finite = all_finite && std::isfinite((*row_sums)[r].ref2);
        params_finite = params_finite && std::isfinite((*row_sums)[r].err2);
      }
    }
    if (!all_finite) {
      bad[r0 / tile] = nonfinite_in_rows(rows_in, 0, r1 - r0, k, w.first_row + r0);
      if (!bad[r0 / tile].empty()) return;
    }
    // The first bad row in row order: a scale or min past f16 up to the overflowing row
    // (in that row too: the more exact message), else that row.
    // (Its weights are finite: the scan above, or the sums' check, found no NaN or Inf.)
    const size_t upto = std::min(overflow_row + 1, r1);
    if (!params_finite) bad[r0 / tile] = check_ggml_rows(w, t, blocks, r0, upto, row_bytes, k, imatrix);
    if (bad[r0 / tile].empty() && overflow_row < r1) {
      bad[r0 / tile] = overflow_in_row(w, t, row_as_f32(rows_in, overflow_row - r0, cols, buf, k), overflow_row, k);
    }
    if (!params_finite && bad[r0 / tile].empty()) bad[r0 / tile] = check_ggml_rows(w, t, blocks, upto, r1, row_bytes, k, imatrix);
  });
  for (const std::string& msg : bad) {
    if (!msg.empty()) throw Error(msg);
  }
}

}  // namespace

void quantize_ggml_tensor(const TensorView& w, GgmlBlock t, const QuantSpec& spec, std::vector<uint8_t>& out,
                          const Kernels* k, const float* imatrix, std::vector<ErrorSums>* row_sums) {
  quantize_ggml_into(w, t, spec, out, k, imatrix, row_sums, 0);
}
void quantize_ggml_tensor(const TensorView& w, GgmlBlock t, const QuantSpec& spec, OutputBytes& out,
                          const Kernels* k, const float* imatrix, std::vector<ErrorSums>* row_sums, size_t lead) {
  quantize_ggml_into(w, t, spec, out, k, imatrix, row_sums, lead);
}

ErrorMetrics ggml_tensor_error(const TensorView& w, GgmlBlock t, const uint8_t* blocks, const Kernels* kp) {
  const Kernels& k = kp ? *kp : kernels();
  std::vector<ErrorSums> sums(w.rows());
  ggml_row_sums(w, t, blocks, sums.data(), k);
  return combine_error_sums(sums);
}

}  // namespace wq
