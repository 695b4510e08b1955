// Tensors as the engine sees them: a read-only float view in (bytes owned elsewhere,
// usually an mmapped file) and a quantized tensor out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/quant_spec.h"
#include "kernels/kernels.h"

namespace wq {

// shape is outermost first (row-major, as safetensors and PyTorch write it; GGUF readers
// reverse ggml's ne[]). The 2-D view used for quantization is [shape[0], product of the
// rest]: a linear [out, in] stays as it is, a conv [oc, ic, kh, kw] becomes
// [oc, ic*kh*kw] as MNN flattens it. A 1-D tensor is one row.
struct MatrixDims {
  size_t rows, cols;
};
// The 2-D view of a shape, the one rule every layer uses: [shape[0], product of the
// rest]; a 1-D tensor is one row of shape[0]; a scalar one element. Dims must have been
// validated (checked_numel) by whoever read the shape.
MatrixDims matrix_dims(const std::vector<int64_t>& shape);

struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  const void* data = nullptr;
  size_t nbytes = 0;

  size_t numel() const;
  size_t rows() const;
  size_t cols() const;
};

// The product of dims, or an Error naming the tensor if a dim is negative or the
// product overflows size_t.
size_t checked_numel(const std::string& name, const std::vector<int64_t>& shape);

struct QuantizedTensor {
  std::string name;
  std::vector<int64_t> shape;
  QuantSpec spec;         // as requested, after validation
  Scheme scheme = Scheme::MnnSym;
  size_t rows = 0, cols = 0;
  size_t block = 0;       // effective block (== cols when channel-wise)
  size_t packed_row_bytes = 0;
  std::vector<uint8_t> packed;  // rows * packed_row_bytes, bitstream per row (kernels.h)
  std::vector<float> scales;    // rows * blocks_per_row; exactly the stored values
  std::vector<float> zeros;     // same shape; empty for MnnSym
  // spec.fp16: the stored halves of scales and zeros (the floats above are their exact
  // values). Writers store these; readers fill them and leave the floats to
  // widen_f16_params (engine/quantize.h), so io only moves bytes.
  std::vector<uint16_t> scales_f16, zeros_f16;
  int solver_steps = 0;         // HQQ: steps the solver ran (max over blocks)

  size_t blocks_per_row() const { return block ? cols / block : 0; }
  // Bytes the codes, scales and zeros take when stored (scales as f16 with spec.fp16).
  size_t storage_bytes() const;
};

}  // namespace wq
