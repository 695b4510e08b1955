// The AVX2 kernel table: the shared SIMD body (kernels/simd_body.h) on xsimd::avx2.
// Compiled with the AVX2 flags only (kernels/CMakeLists.txt); dispatch.cpp decides
// whether the CPU may call it.
#include "kernels/kernel_tables.h"
#include "kernels/simd_body.h"

namespace wq {

const Kernels* avx2_kernels() {
  static const Kernels table = [] {
    Kernels k = simd::make_simd_kernels<xsimd::avx2>(Isa::Avx2);
    install_hqq_avx2(k);
    return k;
  }();
  return &table;
}

}  // namespace wq
