// HQQ (half-quadratic quantization): the affine start refined by the half-quadratic
// solver of mobiusml/hqq's optimize_weights_proximal.
#pragma once

#include <cstddef>
#include <functional>

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace wq {

// Fills q.packed, q.scales, q.zeros and q.solver_steps for w, using q.spec.hqq_opts,
// q.block and q.spec.bits. q's buffers are already sized by quantize_tensor.
// rows_done(r0, r1), when given, is called on the tile's thread once rows [r0, r1) hold
// their final codes and parameters, while the tile is still in cache.
void hqq_quantize(const TensorView& w, QuantizedTensor& q, const Kernels& k,
                  const std::function<void(size_t, size_t)>& rows_done = {});

}  // namespace wq
