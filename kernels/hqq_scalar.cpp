// The scalar HQQ kernels: the per-block solver and the lockstep step, from
// kernels/hqq_reference.h one element at a time.
#include "kernels/hqq_reference.h"
#include "kernels/hqq_solver.h"
#include "kernels/kernel_tables.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE
namespace {

struct ScalarHqqStep {
  static float step(const float* w, size_t n, float inv, float z, float qmax, float pm1, float beta, float skip,
                    float* z_new, float* sq, float* emax) {
    return ref::hqq_block_step(w, n, inv, z, qmax, pm1, beta, skip, z_new, sq, emax);
  }
  static float sq(const float* w, size_t n, float inv, float z, float qmax) {
    return ref::hqq_block_sq(w, n, inv, z, qmax);
  }
  static void codes(const float* w, size_t n, float inv, float z, float qmax, uint8_t* out) {
    ref::hqq_codes(w, n, inv, z, qmax, out);
  }
};

}  // namespace

void hqq_solve_blocks(const float* w, size_t nblocks, size_t block, const HqqParams& hp, const float* inv_scale,
                      float* zero, uint8_t* codes, int* steps) {
  hqq_solve_blocks_body<ScalarHqqStep>(w, nblocks, block, hp, inv_scale, zero, codes, steps);
}
void hqq_step_blocks(const float* w, size_t nblocks, size_t block, const HqqParams& hp, float beta,
                     const float* inv_scale, const float* zero_in, float* zero_out, float* err_sum) {
  hqq_step_blocks_body<ScalarHqqStep>(w, nblocks, block, hp, beta, inv_scale, zero_in, zero_out, err_sum);
}

WQ_END_ISA_NAMESPACE
}  // namespace wq
