#include "engine/hqq.h"

#include "engine/error.h"

namespace wq {

void hqq_quantize(const TensorView& w, QuantizedTensor&, const Kernels&) {
  throw Error(w.name + ": HQQ solver not built yet", ErrorKind::Internal);
}

}  // namespace wq
