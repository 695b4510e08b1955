// What a file must say about a quantized tensor for a reader to rebuild it exactly:
// its spec, geometry and scheme. Stored as JSON in safetensors' __metadata__.
#pragma once

#include <string>

#include "engine/tensor.h"

namespace wq {

// JSON text of q's record: shape, bits, block, scheme, fp16, hqq (+ options), steps,
// packed_row_bytes.
std::string quant_record_json(const QuantizedTensor& q);

// Rebuilds everything but the data (packed, scales, zeros left empty, sizes known).
// Throws Error naming `where` for a malformed or inconsistent record.
QuantizedTensor parse_quant_record(const std::string& json_text, const std::string& name, const std::string& where);

const char* scheme_name(Scheme s);

}  // namespace wq
