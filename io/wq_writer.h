// The native .wq model out (layout in io/wq_format.fbs): a 64-byte preamble, the
// flatbuffer header built from the plan before any data, then the data streamed in plan
// order, each piece 64-byte aligned so a reader can map tensors in place.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/model_writer.h"

namespace wq {

uint64_t wq_planned_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos,
                          const ModelReader& source);

std::unique_ptr<ModelWriter> make_wq_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                            const std::vector<TensorInfo>& infos, const ModelReader& source);

}  // namespace wq
