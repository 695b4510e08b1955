// HQQ (half-quadratic quantization): the affine start refined by the half-quadratic
// solver of mobiusml/hqq's optimize_weights_proximal.
#pragma once

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace wq {

// Fills q.packed, q.scales, q.zeros and q.solver_steps for w, using q.spec.hqq_opts,
// q.block and q.spec.bits. q's buffers are already sized by quantize_tensor.
void hqq_quantize(const TensorView& w, QuantizedTensor& q, const Kernels& k);

}  // namespace wq
