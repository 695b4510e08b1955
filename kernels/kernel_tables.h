// How an ISA's table is assembled from the registry (kernels/kernel_slots.inc), and the
// per-ISA entry points. Everything here lives in the ISA's own namespace
// (kernels/isa_namespace.h): wq::isa_avx2::kernel_table() is the AVX2 table.
#pragma once

#include "kernels/isa_namespace.h"

#include <utility>

#include "kernels/kernels.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE

// Fills every slot from Impl's static member of the same name (for a per-block-type
// slot, Impl::name<T> for each GgmlBlock T). A slot Impl lacks does not compile.
template <class Impl>
Kernels make_kernels(Isa isa) {
  Kernels k{};
  k.isa = isa;
#define WQ_KERNEL(name, ret, params) k.name = Impl::name;
#define WQ_GGML_KERNEL(name, ret, params)                                                      \
  [&k]<size_t... I>(std::index_sequence<I...>) {                                               \
    ((k.name[I] = &Impl::template name<GgmlBlock(I)>), ...);                                   \
  }(std::make_index_sequence<size_t(kGgmlBlockCount)>());
#include "kernels/kernel_slots.inc"
#undef WQ_KERNEL
#undef WQ_GGML_KERNEL
  return k;
}

// This ISA's HQQ kernels, defined in its hqq_<isa>.cpp (a translation unit of its own, so
// the two big bodies compile in parallel).
void hqq_solve_blocks(const float* w, size_t nblocks, size_t block, const HqqParams& hp, const float* inv_scale,
                      float* zero, uint8_t* codes, int* steps);
void hqq_step_blocks(const float* w, size_t nblocks, size_t block, const HqqParams& hp, float beta,
                     const float* inv_scale, const float* zero_in, float* zero_out, float* err_sum);

// This ISA's table, defined in its kernels_<isa>.cpp. Whether the CPU may call it is
// dispatch.cpp's decision.
const Kernels* kernel_table();

WQ_END_ISA_NAMESPACE
}  // namespace wq
