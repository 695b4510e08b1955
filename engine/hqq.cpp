// HQQ: the affine min/max start (ref::block_codec, Scheme::Affine) refined by the
// half-quadratic solver of mobiusml/hqq's optimize_weights_proximal.
//
// Stopping. The reference steps every group of the tensor in lockstep and stops all of
// them when the mean |W - W_r| over the WHOLE tensor stops falling, returning the zero of
// the last update, which was never evaluated. wquant's default (HqqStop::Block) runs each
// block over the whole step budget (stopping early only where its zero provably stays
// put, kernels/hqq_solver.h) and keeps the zero of its lowest error: a block
// is solved start to finish while it sits in L1 (one kernel call per row of blocks), tiles
// need no barrier per step, and no block ends worse than its start or than the reference's
// rule (tests/hqq_test.cpp, HqqBlockRule). On the golden set its
// relative error is at or below the reference's (tests/hqq_test.cpp). HqqStop::Tensor
// reproduces the reference: one parallel pass per step, then a reduction over the
// per-block sums in block order, so the stop decision does not depend on threads.
#include "engine/hqq.h"

#include <algorithm>
#include <vector>

#include "engine/error.h"
#include "engine/quantize.h"
#include "engine/rows.h"
#include "engine/scheduler.h"
#include "kernels/reference.h"

namespace wq {

HqqParams hqq_params(const QuantizedTensor& q) {
  const HqqOptions& o = q.spec.hqq_opts;
  return HqqParams{q.spec.bits, o.max_steps, o.p, o.beta, o.kappa};
}

namespace {

// The affine start of every block of row r: inv, zero, scale.
void start_row(const float* row, QuantizedTensor& q, size_t r, float* inv, const Kernels& k) {
  const size_t nb = q.blocks_per_row();
  k.affine_params(row, nb, q.block, q.spec.bits, q.spec.hqq_opts.round_zero, q.scales.data() + r * nb,
                  q.zeros.data() + r * nb, inv);
}

void pack_row(QuantizedTensor& q, size_t r, const uint8_t* codes, const Kernels& k) {
  k.pack_codes(codes, q.cols, q.spec.bits, q.packed.data() + r * q.packed_row_bytes);
}

using RowsDone = std::function<void(size_t, size_t, const TensorView&)>;

void solve_per_block(const RowSource& w, QuantizedTensor& q, const Kernels& k, const RowsDone& rows_done,
                     ErrorSums* row_sums) {
  const size_t nb = q.blocks_per_row();
  const HqqParams hp = hqq_params(q);
  const size_t tile = w.tile_rows();
  std::vector<int> tile_steps((q.rows + tile - 1) / tile, 0);
  // The first non-finite weight of each tile, found as the tile is read (no pass of its
  // own over the tensor) and reported in tile order, so the message does not depend on
  // which thread saw one first.
  std::vector<std::string> bad(tile_steps.size());
  parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) {
    thread_local std::vector<uint8_t> scratch;  // one per worker, reused by every tile it takes
    const TensorView t = w.tile(r0, r1, &scratch);
    bad[r0 / tile] = nonfinite_in_rows(t, 0, r1 - r0, k, w.view.first_row + r0);
    if (!bad[r0 / tile].empty()) return;
    std::vector<float> buf, inv(nb);
    std::vector<uint8_t> codes(q.cols);
    std::vector<int> steps(nb);
    int most = 0;
    for (size_t r = r0; r < r1; ++r) {
      const float* row = row_as_f32(t, r - r0, q.cols, buf, k);
      start_row(row, q, r, inv.data(), k);
      k.hqq_solve_blocks(row, nb, q.block, hp, inv.data(), q.zeros.data() + r * nb, codes.data(), steps.data());
      pack_row(q, r, codes.data(), k);
      for (int s : steps) most = std::max(most, s);
      if (row_sums) {  // what measure_rows would find, without widening and unpacking again
        float partials[kColumnPartialPlanes] = {};
        k.codes_error_partials(row, codes.data(), q.cols, q.block, q.scheme, q.spec.bits, q.scales.data() + r * nb,
                               q.zeros.data() + r * nb, partials);
        row_sums[r] = measured_row_sums(ref::partials_error(partials, 1), q, r,
                                        [&] { return RowSource::rows_of(t).tile(r - r0, r - r0 + 1, nullptr); }, k);
      }
    }
    tile_steps[r0 / tile] = most;
    if (rows_done) rows_done(r0, r1, t);
  });
  for (const std::string& msg : bad) {
    if (!msg.empty()) throw Error(msg);
  }
  q.solver_steps = tile_steps.empty() ? 0 : *std::max_element(tile_steps.begin(), tile_steps.end());
}

void solve_lockstep(const TensorView& w, QuantizedTensor& q, const Kernels& k, const RowsDone& rows_done) {
  const size_t nb = q.blocks_per_row();
  const size_t nblocks = q.rows * nb;
  const HqqParams hp = hqq_params(q);
  const size_t tile = tile_rows_for(q.rows, q.cols * dtype_size(w.dtype));
  std::vector<float> inv(nblocks), err(nblocks);
  OutputVector<float> z_next(nblocks);  // swapped with q.zeros each step
  parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) {
    std::vector<float> buf;
    for (size_t r = r0; r < r1; ++r) start_row(row_as_f32(w, r, q.cols, buf, k), q, r, inv.data() + r * nb, k);
  });
  float best = INFINITY;
  float beta = hp.beta;
  int steps = 0;
  for (int i = 0; i < hp.max_steps; ++i) {
    steps = i + 1;
    parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) {
      std::vector<float> buf;
      for (size_t r = r0; r < r1; ++r) {
        k.hqq_step_blocks(row_as_f32(w, r, q.cols, buf, k), nb, q.block, hp, beta, inv.data() + r * nb,
                          q.zeros.data() + r * nb, z_next.data() + r * nb, err.data() + r * nb);
      }
    });
    double total = 0;
    for (float e : err) total += e;  // block order: independent of threads
    // The reference compares float32 means: where the error plateaus, equal floats end
    // the loop; a double would keep finding last-bit improvements.
    const float mean = float(total / double(q.rows * q.cols));
    q.zeros.swap(z_next);  // the reference updates the zero before it checks the error
    beta = beta * hp.kappa;
    if (!(mean < best)) break;
    best = mean;
  }
  q.solver_steps = steps;
  parallel_row_tiles(q.rows, tile, [&](size_t r0, size_t r1) {
    std::vector<float> buf;
    std::vector<uint8_t> codes(q.cols);
    for (size_t r = r0; r < r1; ++r) {
      const float* row = row_as_f32(w, r, q.cols, buf, k);
      for (size_t b = 0; b < nb; ++b) {
        const BlockCodec c{Scheme::Affine, q.spec.bits, q.scales[r * nb + b], q.zeros[r * nb + b], inv[r * nb + b]};
        k.quantize_codes(row + b * q.block, q.block, c, codes.data() + b * q.block);
      }
      pack_row(q, r, codes.data(), k);
    }
    if (rows_done) rows_done(r0, r1, RowSource::rows_of(w).tile(r0, r1, nullptr));
  });
}

}  // namespace

void hqq_quantize(const RowSource& w, QuantizedTensor& q, const Kernels& k, const RowsDone& rows_done,
                  ErrorSums* row_sums) {
  if (q.zeros.size() != q.scales.size()) q.zeros.resize(q.scales.size());
  if (q.spec.hqq_opts.stop == HqqStop::Tensor) {
    if (w.transposed) throw Error(w.view.name + ": HQQ's lockstep solver needs the rows contiguous", ErrorKind::Internal);
    if (row_sums) throw Error(w.view.name + ": HQQ's lockstep solver measures through rows_done", ErrorKind::Internal);
    check_finite(w.view, &k);  // before the first of its passes over every tile
    solve_lockstep(w.view, q, k, rows_done);
  } else {
    solve_per_block(w, q, k, rows_done, row_sums);  // checks each tile as it reads it
  }
}

}  // namespace wq
