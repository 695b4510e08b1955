// The AVX2 kernel table: the shared SIMD body (kernels/simd_body.h) on xsimd::avx2, in
// namespace wq::isa_avx2. Compiled with the AVX2 flags of kernels/isa_list.inc only;
// dispatch.cpp decides whether the CPU may call it.
#include "kernels/simd_body.h"

WQ_DEFINE_SIMD_TABLE(xsimd::avx2, Avx2)
