// The commands of the wquant program. Each returns the process exit code on success and
// throws wq::Error (mapped to an exit code by main) on failure.
#pragma once

#include "cli/args.h"
#include "cli/console.h"

namespace wq::cli {

int run_quantize(const QuantizeArgs& args, Console& console);
int run_inspect(const InspectArgs& args, Console& console);
int run_verify(const VerifyArgs& args, Console& console);
int run_dequantize(const DequantizeArgs& args, Console& console);
int run_bench(const BenchArgs& args, Console& console);

}  // namespace wq::cli
