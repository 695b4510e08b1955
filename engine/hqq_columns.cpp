#include "engine/hqq_columns.h"

#include <tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "engine/hqq.h"
#include "engine/quantize.h"
#include "engine/quantize_columns.h"
#include "engine/scheduler.h"
#include "engine/transpose.h"
#include "kernels/reference.h"

namespace wq {
namespace {

// Quantized rows (stored columns) per task of a band: with the band's rows of blocks
// (2 to 8 for the 1.1 B model's weights at the 4 MiB band) a task's call to the solver
// gets 128 to 512 blocks, whole groups of the solver's 16 lanes, and the task's slice of
// the band (64 columns x the band's rows) stays in L2.
constexpr size_t kRowsPerTask = 64;

// The task's buffers, kept by its thread between bands and tensors.
struct TaskBuffers {
  std::vector<uint8_t> stored;  // the slice transposed, in the source's dtype
  std::vector<float> wide, scales, zeros, inv;
  std::vector<uint8_t> codes, packed;
  std::vector<int> steps;
};

}  // namespace

bool hqq_stored_columns_apply(const RowSource& src, const QuantSpec& spec, size_t block) {
  return spec.hqq && spec.hqq_opts.stop == HqqStop::Block && !spec.mnn_flush && !spec.fp16 &&
         stored_bands_fit(src, block);
}

bool hqq_quantize_stored_columns(const RowSource& src, QuantizedTensor& q, ErrorSums* row_sums, const Kernels& k) {
  const TensorView& v = src.view;  // listed [N, K]; data: the stored [K, N]
  const size_t N = q.rows, es = dtype_size(v.dtype), nb = q.blocks_per_row(), block = q.block;
  const int bits = q.spec.bits;
  const HqqParams hp = hqq_params(q);
  // Each row's sq_err partials (kernel_slots.inc, sq_err_partials), row r's 33 at r * 33.
  std::vector<float> partials(row_sums ? N * kColumnPartialPlanes : 0, 0.0f);
  std::atomic<bool> finite{true};
  std::atomic<int> most_steps{0};
  const bool done = for_each_stored_band(src, stored_band_rows(src, block), [&](size_t k0, size_t rows, StoredRows b) {
    const size_t row_blocks = rows / block, kb = k0 / block;
    auto task = [&](size_t c0, size_t c1) {
      thread_local TaskBuffers t;
      const size_t n_rows = c1 - c0, n = n_rows * rows, n_blocks = n_rows * row_blocks;
      t.stored.resize(n * es);
      transpose_block(b.data + c0 * es, b.pitch, rows, n_rows, es, t.stored.data());
      if (k.find_nonfinite(t.stored.data(), v.dtype, n) != n) {
        finite = false;
        return;
      }
      const float* w = reinterpret_cast<const float*>(t.stored.data());
      if (v.dtype != DType::F32) {
        t.wide.resize(n);
        const auto* h = reinterpret_cast<const uint16_t*>(t.stored.data());
        if (v.dtype == DType::F16) k.widen_f16(h, t.wide.data(), n);
        else k.widen_bf16(h, t.wide.data(), n);
        w = t.wide.data();
      }
      t.scales.resize(n_blocks);
      t.zeros.resize(n_blocks);
      t.inv.resize(n_blocks);
      t.codes.resize(n);
      t.steps.resize(n_blocks);
      // The task's rows' blocks of the band lie end to end in w: one call each.
      k.affine_params(w, n_blocks, block, bits, q.spec.hqq_opts.round_zero, t.scales.data(), t.zeros.data(),
                      t.inv.data());
      k.hqq_solve_blocks(w, n_blocks, block, hp, t.inv.data(), t.zeros.data(), t.codes.data(), t.steps.data());
      // The task's codes packed in one call: each row's band of codes is whole bytes of
      // the stream (rows is whole blocks of 16), so the stream of all of them is each
      // row's stream end to end, copied to its place. (A call per row packed 32 to 256
      // bytes: 4% of the 1.1 B model's ONNX HQQ conversion, perf 2026-12-07.)
      const size_t row_bytes = rows * size_t(bits) / 8;
      t.packed.resize(n_rows * row_bytes);
      k.pack_codes(t.codes.data(), n, bits, t.packed.data());
      for (size_t i = 0; i < n_rows; ++i) {
        const size_t r = c0 + i;
        std::memcpy(q.packed.data() + r * q.packed_row_bytes + k0 * size_t(bits) / 8, t.packed.data() + i * row_bytes, row_bytes);
        std::copy_n(t.scales.data() + i * row_blocks, row_blocks, q.scales.data() + r * nb + kb);
        std::copy_n(t.zeros.data() + i * row_blocks, row_blocks, q.zeros.data() + r * nb + kb);
      }
      if (row_sums) {  // what the row path measures, carried from band to band
        for (size_t i = 0; i < n_rows; ++i) {
          k.codes_error_partials(w + i * rows, t.codes.data() + i * rows, rows, block, q.scheme, bits,
                                 t.scales.data() + i * row_blocks, t.zeros.data() + i * row_blocks,
                                 partials.data() + (c0 + i) * kColumnPartialPlanes);
        }
      }
      const int most = *std::max_element(t.steps.begin(), t.steps.end());
      for (int seen = most_steps.load(); most > seen && !most_steps.compare_exchange_weak(seen, most);) {
      }
    };
    // Isolated: while this thread waits for the band's tasks it must not start another
    // tensor's bands, which would reuse this thread's band buffer.
    tbb::this_task_arena::isolate([&] { parallel_row_tiles(N, kRowsPerTask, task); });
    return finite.load();
  });
  if (!done) return false;
  q.solver_steps = most_steps.load();
  if (!row_sums) return true;
  std::vector<uint8_t> scratch;
  for (size_t r = 0; r < N; ++r) {
    auto row = [&] { return src.tile(r, r + 1, &scratch); };  // only for a row whose float sums overflowed
    row_sums[r] = measured_row_sums(ref::partials_error(partials.data() + r * kColumnPartialPlanes, 1), q, r, row, k);
  }
  return true;
}

}  // namespace wq
