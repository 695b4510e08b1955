// The HQQ kernels for AVX2: kernels/hqq_simd.h on xsimd::avx2, compiled with AVX2 flags only.
#include "kernels/hqq_simd.h"

WQ_DEFINE_SIMD_HQQ(xsimd::avx2)
