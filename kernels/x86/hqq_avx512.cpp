// The HQQ kernels for AVX-512: kernels/hqq_simd.h on xsimd::avx512bw, compiled with
// AVX-512 flags only.
#include "kernels/x86/avx512_intrinsics.h"
#include "kernels/hqq_simd.h"

WQ_DEFINE_SIMD_HQQ(xsimd::avx512bw)
