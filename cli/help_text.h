// The prose of `wquant help`: exit codes, the MNNConvert mapping, the params file forms.
// Kept apart from the parser so the flags table in args.cpp stays readable.
#pragma once

#include <string>

namespace wq::cli {

// The ISA names of kernels/isa_list.inc, "|"-separated, for --isa and WQUANT_ISA in help.
std::string isa_choices();
std::string top_level_footer();
std::string quantize_footer();
std::string verify_footer();
std::string bench_footer();

}  // namespace wq::cli
