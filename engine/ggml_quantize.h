// Tensors to llama.cpp blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), row tiles in parallel.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/metrics.h"
#include "engine/quant_spec.h"
#include "engine/tensor.h"
#include "kernels/ggml_types.h"
#include "kernels/kernels.h"

namespace wq {

// Bytes of one row of `cols` weights in block type t. cols must be a multiple of 32.

// Quantizes w (its 2-D view; cols a multiple of 32) to blocks of type t, exactly as
// llama.cpp's quantize_row_*_ref does, into out (resized). With spec.hqq and t Q4_1 or
// Q5_1, each 32-weight block is solved by HQQ instead and stored as d = scale,
// m = -zero * scale (both f16): zero points no other tool refines. Throws Error naming
// the tensor for a row that is not a multiple of 32, a non-finite weight, or a block
// whose f16 scale or min would be Inf (finite weights past 65504 x the type's range).
// `imatrix`: w.cols() importance values (llama-quantize's quant_weights) or null; the
// quantizers that use one come with the K-quant kernels: until then a non-null one is an
// Error.
// With row_sums, also measures the error row by row as each row is quantized (resized to
// rows; the sums ggml_tensor_error would compute).
void quantize_ggml_tensor(const TensorView& w, GgmlBlock t, const QuantSpec& spec, std::vector<uint8_t>& out,
                          const Kernels* k = nullptr, const float* imatrix = nullptr,
                          std::vector<ErrorSums>* row_sums = nullptr);

// Error of blocks against the float tensor they came from, tile by tile.
ErrorMetrics ggml_tensor_error(const TensorView& w, GgmlBlock t, const uint8_t* blocks, const Kernels* k = nullptr);

}  // namespace wq
