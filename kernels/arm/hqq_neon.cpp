// The HQQ kernels for NEON: kernels/hqq_simd.h on xsimd::neon64.
#include "kernels/hqq_simd.h"
#include "kernels/kernel_tables.h"

namespace wq {

void install_hqq_neon(Kernels& k) { simd::install_hqq<xsimd::neon64>(k); }

}  // namespace wq
