// Tensors to llama.cpp blocks (every type of kernels/ggml_types.inc), row tiles in parallel.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/metrics.h"
#include "engine/output_bytes.h"
#include "engine/quant_spec.h"
#include "engine/tensor.h"
#include "kernels/ggml_types.h"
#include "kernels/kernels.h"

namespace wq {

// Quantizes w (its 2-D view; cols a multiple of the type's block: 32, or 256 for the
// K-quants and IQ4_XS) to blocks of type t exactly as llama.cpp's ggml_quantize_chunk
// does, into out (resized). imatrix is nullptr or w.cols() importance weights, the same
// for every row (llama.cpp's quant_weights of this tensor). With spec.hqq and t Q4_1 or
// Q5_1, each 32-weight block is solved by HQQ instead and stored as d = scale,
// m = -zero * scale (both f16): zero points no other tool refines (no imatrix then).
// Throws Error naming the tensor for a row that is not a multiple of the block, a
// non-finite weight or importance weight, or a block whose f16 scale or min would be
// Inf (finite weights past 65504 x the type's range).
// With row_sums, also measures the error row by row as each row is quantized (resized to
// rows; the sums ggml_tensor_error would compute).
void quantize_ggml_tensor(const TensorView& w, GgmlBlock t, const QuantSpec& spec, std::vector<uint8_t>& out,
                          const Kernels* k = nullptr, const float* imatrix = nullptr,
                          std::vector<ErrorSums>* row_sums = nullptr);
// The same into a buffer whose new bytes resize() leaves uninitialised (the pipeline's),
// the blocks from byte `lead` on (out is resized to lead + the blocks; its first lead bytes
// are left as they are: the pipeline places a payload where its writer can write it
// without a copy, TensorSink::payload_phase).
void quantize_ggml_tensor(const TensorView& w, GgmlBlock t, const QuantSpec& spec, OutputBytes& out,
                          const Kernels* k = nullptr, const float* imatrix = nullptr,
                          std::vector<ErrorSums>* row_sums = nullptr, size_t lead = 0);

// Error of blocks against the float tensor they came from, tile by tile.
ErrorMetrics ggml_tensor_error(const TensorView& w, GgmlBlock t, const uint8_t* blocks, const Kernels* k = nullptr);

}  // namespace wq
