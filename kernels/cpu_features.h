// What this CPU can run. The one place that reads CPU features; compiled without any ISA
// flag (and without LTO) so no instruction the CPU might lack runs before the check.
#pragma once

#include <string_view>

namespace wq {

// True when the CPU (and the OS, for register state) supports `feature`, a name used in
// kernels/isa_list.inc: x86 "avx avx2 fma f16c bmi1 bmi2 lzcnt popcnt avx512f avx512cd
// avx512dq avx512bw avx512vl", Arm "neon". An unknown name is false.
bool cpu_has_feature(std::string_view feature);
// True when every space-separated feature of `features` is present ("" is true).
bool cpu_has_features(std::string_view features);

}  // namespace wq
