// The AVX-512 kernel table: the shared SIMD body (kernels/simd_body.h) on
// xsimd::avx512bw (F/BW/DQ/VL). Compiled with the AVX-512 flags only
// (kernels/CMakeLists.txt); dispatch.cpp decides whether the CPU may call it.
// GCC 12.2 reports every AVX-512 intrinsic it inlines as reading an uninitialised
// value (its headers self-initialise their "undefined" vectors; GCC bug 105593, fixed
// in 12.3). The state at the header's own lines is what counts, so it is silenced for
// that header only, not for this file's code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "kernels/kernel_tables.h"
#include "kernels/simd_body.h"

namespace wq {

const Kernels* avx512_kernels() {
  static const Kernels table = [] {
    Kernels k = simd::make_simd_kernels<xsimd::avx512bw>(Isa::Avx512);
    install_hqq_avx512(k);
    return k;
  }();
  return &table;
}

}  // namespace wq
