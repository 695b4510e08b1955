#include "io/planned_tensor.h"

#include "engine/error.h"
#include "engine/tensor.h"
#include "io/safetensors_types.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ggml_types.h"

namespace wq {

std::vector<PlannedPiece> planned_pieces(const TensorPlan& p, const TensorInfo& info) {
  const size_t numel = checked_numel(p.name, p.shape);
  switch (p.action) {
    case TensorAction::Quantize: {
      const auto [rows, cols] = matrix_dims(p.shape);
      (void)numel;
      const size_t nb = p.block ? cols / p.block : 0;
      const size_t row_bytes = (cols * size_t(p.spec.bits) + 7) / 8;
      const char* pt = p.spec.fp16 ? "F16" : "F32";
      const uint64_t pbytes = uint64_t(rows) * nb * (p.spec.fp16 ? 2 : 4);
      std::vector<PlannedPiece> v{{".qweight", {int64_t(rows), int64_t(row_bytes)}, "U8", uint64_t(rows) * row_bytes},
                                  {".scales", {int64_t(rows), int64_t(nb)}, pt, pbytes}};
      if (p.spec.scheme() != Scheme::MnnSym) v.push_back({".zeros", {int64_t(rows), int64_t(nb)}, pt, pbytes});
      return v;
    }
    case TensorAction::KeepFloat:
      return {{"", p.shape, safetensors_dtype_name(p.out_dtype), uint64_t(numel) * dtype_size(p.out_dtype)}};
    case TensorAction::CopyRaw: {
      if (!find_safetensors_dtype(info.type_name)) {
        throw Error(p.name + ": a " + info.type_name + " tensor cannot be stored in this format", ErrorKind::Usage);
      }
      return {{"", p.shape, info.type_name, info.nbytes}};
    }
    case TensorAction::Ggml:
      throw Error(p.name + ": llama.cpp block types (" + std::string(ggml_block_name(p.ggml)) +
                      ") are written to .gguf outputs only",
                  ErrorKind::Usage);
  }
  return {};
}

}  // namespace wq
