// The AVX-512 kernel table: the shared SIMD body (kernels/simd_body.h) on
// xsimd::avx512bw (F/BW/DQ/VL), in namespace wq::isa_avx512. Compiled with the AVX-512
// flags of kernels/isa_list.inc only; dispatch.cpp decides whether the CPU may call it.
#include "kernels/x86/avx512_intrinsics.h"
#include "kernels/simd_body.h"

WQ_DEFINE_SIMD_TABLE(xsimd::avx512bw, Avx512)
