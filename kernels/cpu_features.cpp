#include "kernels/cpu_features.h"

#include <hwy/targets.h>

namespace wq {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
    // Highway reads CPUID and XGETBV (so an OS that does not save AVX-512 state is
    // respected), which xsimd 8.1's detection does not.
    const int64_t t = hwy::SupportedTargets();
#if HWY_ARCH_X86
    c.avx2 = (t & HWY_AVX2) != 0;
    c.avx512 = (t & HWY_AVX3) != 0;
#elif HWY_ARCH_ARM_A64
    c.neon = true;  // Advanced SIMD is mandatory on AArch64
    (void)t;
#else
    (void)t;
#endif
    return c;
  }();
  return f;
}

}  // namespace wq
