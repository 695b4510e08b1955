// The HQQ kernels for NEON: kernels/hqq_simd.h on xsimd::neon64.
#include "kernels/hqq_simd.h"

WQ_DEFINE_SIMD_HQQ(xsimd::neon64)
