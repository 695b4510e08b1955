// The HQQ kernels for avx2: kernels/hqq_simd.h on xsimd::avx2, compiled with avx2 flags only.

#include "kernels/hqq_simd.h"
#include "kernels/kernel_tables.h"

namespace wq {

void install_hqq_avx2(Kernels& k) { simd::install_hqq<xsimd::avx2>(k); }

}  // namespace wq
