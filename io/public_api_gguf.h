// include/wquant/wquant.h's GGUF options as io/gguf_output.h's request, checked as
// `wquant quantize` checks the flags of the same names (cli/args.cpp, cli/cmd_quantize.cpp).
#pragma once

#include <wquant/wquant.h>

#include "io/gguf_output.h"
#include "kernels/ggml_types.h"

namespace wquant {

// Whether any option that only a GGUF output takes is set.
bool has_gguf_options(const ConvertOptions& o);

// The request for o's GGUF output. *block gets the block type the plan defaults to: the
// mix's own when it is one (Q4_0, Q6_K, ...), else the one from quant.bits. Throws
// wq::Error (Usage) naming the option at fault.
wq::GgufOutputRequest gguf_request(const ConvertOptions& o, wq::GgmlBlock* block);

}  // namespace wquant
