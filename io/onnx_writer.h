// ONNX out: OUT.onnx, and with external data OUT.onnx.data beside it (every payload of
// 1 KiB or more, each at a 64-byte-aligned offset). External data is used when asked
// (--external-data) or when the model would pass protobuf's 2 GB limit. The graph is
// decided up front (io/onnx_graph.h), so every size and offset is known before the first
// payload: the model is streamed in plan order, one tensor in memory at a time, each
// file written to a temporary name and renamed by commit() (the data file first, so a
// committed model never names a missing one).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/model_writer.h"
#include "io/onnx_reader.h"

namespace wq {

uint64_t onnx_planned_bytes(const std::vector<TensorPlan>& plan, const OnnxReader& src, const WriterOptions& opts);

std::unique_ptr<ModelWriter> make_onnx_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                              const OnnxReader& src, const WriterOptions& opts);

}  // namespace wq
