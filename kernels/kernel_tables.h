// The per-ISA tables, each defined in the file compiled with that ISA's flags. A getter
// only builds its table; whether the CPU can run it is dispatch.cpp's decision.
#pragma once

#include "kernels/kernels.h"

namespace wq {

const Kernels* scalar_kernels();
void install_hqq_scalar(Kernels& k);
#if defined(WQUANT_HAVE_AVX2)
void install_hqq_avx2(Kernels& k);
#endif
#if defined(WQUANT_HAVE_AVX512)
void install_hqq_avx512(Kernels& k);
#endif
#if defined(WQUANT_HAVE_NEON)
void install_hqq_neon(Kernels& k);
#endif
#if defined(WQUANT_HAVE_AVX2)
const Kernels* avx2_kernels();
#endif
#if defined(WQUANT_HAVE_AVX512)
const Kernels* avx512_kernels();
#endif
#if defined(WQUANT_HAVE_NEON)
const Kernels* neon_kernels();
#endif

}  // namespace wq
