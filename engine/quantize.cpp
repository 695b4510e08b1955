#include "engine/quantize.h"

#include <algorithm>
#include <vector>

#include "engine/error.h"
#include "engine/hqq.h"
#include "engine/scheduler.h"

namespace wq {

static const Kernels& table(const Kernels* k) { return k ? *k : kernels(); }

static void check_view(const TensorView& w) {
  const size_t n = w.numel();
  if (n * dtype_size(w.dtype) != w.nbytes) {
    throw Error(w.name + ": " + std::to_string(w.nbytes) + " bytes of data for " + std::to_string(n) + " " +
                dtype_name(w.dtype) + " elements");
  }
  if (n && !w.data) throw Error(w.name + ": no data");
}

static void check_finite_rows(const TensorView& w, size_t cols, size_t r0, size_t r1, const Kernels& k) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t es = dtype_size(w.dtype);
  const size_t n = (r1 - r0) * cols;
  const size_t i = k.find_nonfinite(base + r0 * cols * es, w.dtype, n);
  if (i == n) return;
  const size_t row = r0 + i / cols, col = i % cols;
  throw Error(w.name + ": non-finite weight (NaN or Inf) at row " + std::to_string(row) + ", column " +
              std::to_string(col) + "; wquant does not quantize tensors with NaN or Inf");
}

void check_finite(const TensorView& w, const Kernels* k) {
  check_view(w);
  check_finite_rows(w, w.cols(), 0, w.rows(), table(k));
}

QuantizedTensor quantize_tensor(const TensorView& w, const QuantSpec& spec, size_t block, const Kernels* kp) {
  const Kernels& k = table(kp);
  validate_spec(spec, w.name);
  check_view(w);
  QuantizedTensor q;
  q.name = w.name;
  q.shape = w.shape;
  q.spec = spec;
  q.scheme = spec.scheme();
  q.rows = w.rows();
  q.cols = w.cols();
  if (block == 0 || q.cols % block != 0) {
    throw Error(w.name + ": block " + std::to_string(block) + " does not divide the row length " +
                std::to_string(q.cols), ErrorKind::Usage);
  }
  q.block = block;
  q.packed_row_bytes = (q.cols * size_t(spec.bits) + 7) / 8;
  q.packed.resize(q.rows * q.packed_row_bytes);
  const size_t nblocks = q.rows * q.blocks_per_row();
  q.scales.resize(nblocks);
  if (q.scheme != Scheme::MnnSym) q.zeros.resize(nblocks);

  if (spec.hqq) {
    hqq_quantize(w, q, k);
  } else {
    RowQuantJob job{};
    job.src = w.data;
    job.src_dtype = w.dtype;
    job.src_row_stride = q.cols;
    job.cols = q.cols;
    job.block = block;
    job.scheme = q.scheme;
    job.bits = spec.bits;
    job.round_zero = false;
    job.packed = q.packed.data();
    job.packed_row_bytes = q.packed_row_bytes;
    job.scales = q.scales.data();
    job.zeros = q.zeros.empty() ? nullptr : q.zeros.data();
    const size_t tile = tile_rows_for(q.rows, q.cols * dtype_size(w.dtype));
    const size_t ntiles = (q.rows + tile - 1) / tile;
    // The first bad element of each tile; reported in tile order so the message does
    // not depend on which thread found it first.
    std::vector<std::string> bad(ntiles);
    parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) {
      try {
        check_finite_rows(w, q.cols, r0, r1, k);  // the tile is then warm in cache
      } catch (const Error& e) {
        bad[r0 / tile] = e.what();
        return;
      }
      k.quantize_rows(job, r0, r1);
    });
    for (const std::string& msg : bad) {
      if (!msg.empty()) throw Error(msg);
    }
  }
  if (spec.fp16) round_params_to_f16(q, &k);
  return q;
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
    float* dst = out + (r - row_begin) * q.cols;
    for (size_t b = 0; b < nb; ++b) {
      BlockCodec c{q.scheme, q.spec.bits, q.scales[r * nb + b], q.zeros.empty() ? 0.0f : q.zeros[r * nb + b],
                   0.0f};
      k.dequantize_codes(codes.data() + b * q.block, q.block, c, dst + b * q.block);
    }
  }
}

void dequantize_tensor(const QuantizedTensor& q, float* out, const Kernels* k) {
  const size_t tile = tile_rows_for(q.rows, q.cols * 4);
  parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) { dequantize_rows(q, r0, r1, out + r0 * q.cols, k); });
}

}  // namespace wq
