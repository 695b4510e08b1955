// A params file's "type" is GGUF output's: wquant's form has two vocabularies, "bits" /
// "block" / "asym" (wquant's block schemes, and on GGUF output the type they choose:
// engine/plan_gguf.cpp) and "type" (a GGUF type). On another output "type" is refused,
// as --type is, rather than dropped (a rule keeping a tensor F16 quantized it).
#pragma once

#include "cli/params_file.h"
#include "engine/plan.h"

namespace wq::cli {

// Throws Error (Usage) naming the file and the entry where `format` is not GGUF and the
// defaults or a rule set "type".
void refuse_gguf_types_elsewhere(const ParamsFile& p, OutputFormat format);

}  // namespace wq::cli
