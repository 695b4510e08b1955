// What the commands that run kernels share: choosing the ISA, Ctrl-C handling, and the
// words for a plan entry.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "engine/metrics.h"
#include "engine/plan.h"
#include "kernels/kernels.h"

namespace wq {
class ModelReader;
}

namespace wq::cli {

// Applies --isa, or checks WQUANT_ISA, and returns the ISA the kernels will run. Throws
// Error (Usage) when the ISA is unknown or this CPU or build lacks it.
Isa choose_isa(const RunSettings& run);

// SIGINT and SIGTERM: remove every temporary output file still registered with
// io/output_file.h, then exit 130. Nothing else runs in the handler (it must be
// async-signal-safe); the final output name is only ever created by rename, so it is
// either complete or absent.
void install_interrupt_handlers();

// "quantize", "ggml", "float", "copy".
const char* action_name(TensorAction a);
// A quantized tensor in words, with its effective block: "4-bit hqq block 32",
// "4-bit sym channel-wise fp16" (the wording of the pipeline's reports).

// Tensor i of a model as f32 (engine's tensor_as_f32 on the reader's bytes).
std::vector<float> read_f32(ModelReader& r, size_t i);

// engine's describe_plan_entry plus the CLI's notes: "4-bit sym channel-wise (block 32
// does not divide 172)".
std::string describe_plan_entry_with_notes(const TensorPlan& p, const TensorInfo& info);

// {"rel_rmse", "snr_db", "max_abs"} (non-finite figures as null).
nlohmann::json error_json(const ErrorMetrics& m);

}  // namespace wq::cli
