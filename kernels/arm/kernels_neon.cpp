// The NEON kernel table: the shared SIMD body (kernels/simd_body.h) on xsimd::neon64, in
// namespace wq::isa_neon. Advanced SIMD is part of every AArch64 CPU: no extra flags.
#include "kernels/simd_body.h"

WQ_DEFINE_SIMD_TABLE(xsimd::neon64, Neon)
