#include "engine/stored_tensor.h"

#include <cstring>

#include "engine/error.h"
#include "engine/quantize.h"
#include "engine/tensor.h"
#include "kernels/ggml_types.h"

namespace wq {

std::vector<float> tensor_as_f32(TensorSource& src, const TensorInfo& t, size_t i, const std::string& file,
                                 const Kernels* kp) {
  const Kernels& k = kp ? *kp : kernels();
  switch (t.kind) {
    case StoredKind::Float: {
      const TensorView v = src.view(i);
      const size_t n = v.numel();
      std::vector<float> out(n);
      if (n == 0) return out;  // v.data may be null
      if (v.dtype == DType::F32) std::memcpy(out.data(), v.data, n * 4);
      else if (v.dtype == DType::F16) k.widen_f16(static_cast<const uint16_t*>(v.data), out.data(), n);
      else k.widen_bf16(static_cast<const uint16_t*>(v.data), out.data(), n);
      return out;
    }
    case StoredKind::Quantized: {
      QuantizedTensor q = src.load_quantized(i);
      widen_f16_params(q, &k);
      std::vector<float> out(q.rows * q.cols);
      dequantize_tensor(q, out.data(), &k);
      return out;
    }
    case StoredKind::Ggml: {
      const std::optional<GgmlBlock> b = ggml_block_named(t.type_name);
      if (!b) break;
      const size_t n = checked_numel(t.name, t.shape);
      size_t nbytes = 0;
      const uint8_t* data = src.raw(i, &nbytes);
      if (n % ggml_traits(*b).weights || nbytes != ggml_row_bytes(*b, n)) {
        throw Error(file + ": " + t.name + ": " + std::to_string(nbytes) + " bytes do not hold " + std::to_string(n) +
                    " " + t.type_name + " weights");
      }
      std::vector<float> out(n);
      k.dequantize_ggml[int(*b)](data, out.data(), n);
      return out;
    }
    case StoredKind::Other:
      break;
  }
  throw Error(file + ": " + t.name + ": cannot dequantize a tensor of type " + t.type_name);
}

}  // namespace wq
