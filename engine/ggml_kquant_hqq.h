// HQQ for the K-quants that store a minimum (Q2_K, Q4_K, Q5_K): after llama.cpp's own
// quantization of a row (its scale searches, then the super-block's 6-bit, or Q2_K's
// 4-bit, scales and mins), each sub-block's minimum is refined with its quantized scale
// held fixed.
//
// A sub-block dequantizes as w_hat = s * q - m with s = d * sc and m = dmin * mq (the
// dequantizer's own float products). In HQQ's terms that is w_hat = (q - z) * s with
// z = m / s: the sub-blocks are solved by the HQQ kernel (kernels/hqq_reference.h, the
// same solver as `--hqq` everywhere else) from z0 = m / s, and the solved zero is put
// back on the type's grid: mq = floor and ceil of z * s / dmin, clamped to the field.
// Of those two and llama.cpp's own mq, the one whose requantized codes give the least
// squared error (weighted by the importance matrix where there is one, as llama.cpp's
// search weights it) is kept, the plain one on a tie: no sub-block ends worse than
// llama-quantize's, and d, dmin and every scale stay llama.cpp's.
// Sub-blocks whose s or dmin is 0 (nothing to refine) and super-blocks with a non-finite
// d or dmin (refused later by the engine's f16 check) are left as they are.
#pragma once

#include <cstddef>

#include "kernels/ggml_types.h"
#include "kernels/kernels.h"

namespace wq {

// True for the block types whose sub-block minimum HQQ refines: Q2_K, Q4_K, Q5_K.
bool hqq_refines_kquant(GgmlBlock t);

// Refines blocks (one row of n weights x, n a multiple of 256, quantized to t by
// k.quantize_ggml) in place. imatrix is nullptr or the row's n importance weights. The
// result does not depend on the kernel table's ISA (the HQQ solver is byte-identical
// across ISAs; everything else here is plain scalar code).
void hqq_refine_kquant_row(GgmlBlock t, const float* x, void* blocks, size_t n, const float* imatrix, const HqqParams& hp,
                           const Kernels& k);

}  // namespace wq
