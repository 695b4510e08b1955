// HQQ (half-quadratic quantization): the affine start refined by the half-quadratic
// solver of mobiusml/hqq's optimize_weights_proximal.
#pragma once

#include <cstddef>
#include <functional>

#include "engine/metrics.h"
#include "engine/row_source.h"
#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace wq {

// The solver's settings for q (q.spec.bits and q.spec.hqq_opts).
HqqParams hqq_params(const QuantizedTensor& q);

// Fills q.packed, q.scales, q.zeros and q.solver_steps for w, using q.spec.hqq_opts,
// q.block and q.spec.bits. q's buffers are already sized by quantize_tensor.
// rows_done(r0, r1), when given, is called on the tile's thread once rows [r0, r1) hold
// their final codes and parameters, while the tile is still in cache.
// rows_done(r0, r1, tile): rows [r0, r1) are final; tile holds their input (row 0 = r0).
// The lockstep solver (HqqStop::Tensor) needs a contiguous source.
// row_sums, when given (per-block solver only), receives each row's error against w as
// the solver leaves it (parameters as they are now, not rounded to f16), measured from
// the widened row and its codes right after the row is solved.
void hqq_quantize(const RowSource& w, QuantizedTensor& q, const Kernels& k,
                  const std::function<void(size_t, size_t, const TensorView&)>& rows_done = {},
                  ErrorSums* row_sums = nullptr);

}  // namespace wq
