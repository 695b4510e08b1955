// The scalar HQQ kernels: the per-block solver and the lockstep step, from
// kernels/hqq_reference.h one element at a time.
#include <vector>

#include "kernels/hqq_reference.h"
#include "kernels/hqq_solver.h"
#include "kernels/kernel_tables.h"

namespace wq {
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

void install_hqq_scalar(Kernels& k) {
  k.hqq_solve_blocks = hqq_solve_blocks_body<ScalarHqqStep>;
  k.hqq_step_blocks = hqq_step_blocks_body<ScalarHqqStep>;
}

}  // namespace wq
