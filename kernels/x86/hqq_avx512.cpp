// The HQQ kernels for avx512: kernels/hqq_simd.h on xsimd::avx512bw, compiled with avx512 flags only.
// GCC 12.2 false -Wuninitialized in the AVX-512 intrinsic headers (bug 105593): see
// kernels_avx512.cpp.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "kernels/hqq_simd.h"
#include "kernels/kernel_tables.h"

namespace wq {

void install_hqq_avx512(Kernels& k) { simd::install_hqq<xsimd::avx512bw>(k); }

}  // namespace wq
