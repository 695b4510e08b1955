// safetensors out. Per quantized tensor NAME: NAME.qweight (U8 [rows, packed_row_bytes],
// the codes as kernels.h's per-row bitstream), NAME.scales and NAME.zeros (F32, or F16
// with --fp16, [rows, blocks per row]; no zeros for symmetric), and the record
// (io/quant_record.h) as __metadata__["wquant.NAME"]. Kept tensors as they are (or in
// their new float dtype). The header is computed from the plan, so data streams.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/model_writer.h"

namespace wq {

uint64_t safetensors_planned_bytes(const std::vector<TensorPlan>& plan, const std::vector<TensorInfo>& infos);

std::unique_ptr<ModelWriter> make_safetensors_writer(const std::string& path, const std::vector<TensorPlan>& plan,
                                                     const std::vector<TensorInfo>& infos);

}  // namespace wq
