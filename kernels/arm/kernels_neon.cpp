// The NEON kernel table: the shared SIMD body (kernels/simd_body.h) on xsimd::neon64.
// Advanced SIMD is part of every AArch64 CPU, so no extra flags are needed.
#include "kernels/kernel_tables.h"
#include "kernels/simd_body.h"

namespace wq {

const Kernels* neon_kernels() {
  static const Kernels table = [] {
    Kernels k = simd::make_simd_kernels<xsimd::neon64>(Isa::Neon);
    install_hqq_neon(k);
    return k;
  }();
  return &table;
}

}  // namespace wq
