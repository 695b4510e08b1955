// A stored tensor of any kind as f32: what `verify`, `dequantize` and the library's
// Model::read_f32 compare and write. Readers (io) hand over bytes; widening,
// dequantization of wquant records and of llama.cpp blocks happen here.
#pragma once

#include <string>
#include <vector>

#include "engine/pipeline.h"
#include "engine/plan.h"
#include "kernels/kernels.h"

namespace wq {

// Tensor i of src (described by info) as rows*cols floats of its 2-D view: floats
// widened exactly, wquant codes and ggml blocks dequantized exactly as a loader would.
// Throws Error naming `file` and the tensor for a kind that holds no weights (I64, ...)
// or bytes that do not hold the tensor.
std::vector<float> tensor_as_f32(TensorSource& src, const TensorInfo& info, size_t i, const std::string& file,
                                 const Kernels* k = nullptr);

}  // namespace wq
