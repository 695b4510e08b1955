// What this CPU can run. The one place that reads CPU features; compiled without any
// ISA flag (and without LTO) so no AVX instruction can execute before the check.
#pragma once

namespace wq {

struct CpuFeatures {
  bool avx2 = false;    // AVX2 + FMA + F16C + BMI2 (Highway's HWY_AVX2 target)
  bool avx512 = false;  // AVX-512 F/VL/DQ/BW (Highway's HWY_AVX3 target)
  bool neon = false;    // AArch64 Advanced SIMD
};

const CpuFeatures& cpu_features();

}  // namespace wq
