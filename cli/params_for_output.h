// A params file's settings made to mean one thing on the output being written. wquant's
// form has two vocabularies: "bits" / "block" / "asym" (wquant's block schemes) and
// "type" (a GGUF type). Each means something on each output or is refused; none is
// dropped without a word (a rule's "bits": 8 on GGUF output gave Q4_0, and a "type" on
// .wq output quantized a tensor the rule kept as F16).
#pragma once

#include "cli/params_file.h"
#include "cli/spec_settings.h"
#include "engine/plan.h"

namespace wq::cli {

// GGUF output: a rule's bits / block / asym without "type" choose the type as --bits /
// --block / --asym do (4 -> Q4_0, with asym Q4_1; 5 -> Q5_0 / Q5_1; 8 -> Q8_0; blocks of
// 32), over the run's own bits and asym (`run`: the command line over the file's
// defaults); beside a "type" they must agree with it. Other outputs: "type", in the
// defaults or a rule, is refused, as --type is. Throws Error (Usage) naming the file and
// the rule.
void fit_params_to_output(ParamsFile& p, OutputFormat format, const SpecSettings& run);

}  // namespace wq::cli
