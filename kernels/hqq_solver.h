// The HQQ kernels' loops, one body for every ISA: S supplies the ISA's block step and
// code computation (kernels/hqq_reference.h defines them element by element).
#pragma once

#include "kernels/isa_namespace.h"

#include <cmath>

#include "kernels/hqq_reference.h"
#include "kernels/kernels.h"
#include "kernels/scratch_buffer.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE

// The skip threshold of each step's beta (beta_i = beta * kappa^i, as the loop grows it).
inline ScratchBuffer<float> hqq_thresholds(const HqqParams& hp) {
  const size_t n = size_t(hp.max_steps > 0 ? hp.max_steps : 0);
  ScratchBuffer<float> t(n);
  float beta = hp.beta;
  for (size_t i = 0; i < n; ++i) {
    t[i] = ref::hqq_skip_threshold(hp.p, beta);
    beta = beta * hp.kappa;
  }
  return t;
}

// Per block: the reference's zero updates, every candidate zero evaluated, the one of
// least squared error kept. A block's zero trajectory is the reference's own (it does
// not depend on other blocks), so keeping the best candidate per block can only match
// or beat the reference's tensor-wide choice; the start (affine RTN) is a candidate, so
// no block ends worse than RTN. Stops early only when the zero stops moving.
template <class S>
void hqq_solve_blocks_body(const float* w, size_t nblocks, size_t block, const HqqParams& hp, const float* inv_scale,
                           float* zero, uint8_t* codes, int* steps) {
  const float qmax = float((1 << hp.bits) - 1);
  const float pm1 = hp.p - 1.0f;
  ScratchBuffer<float> skip = hqq_thresholds(hp);
  for (size_t b = 0; b < nblocks; ++b) {
    const float* x = w + b * block;
    const float inv = inv_scale[b];
    float z = zero[b], best_z = z, best = INFINITY, beta = hp.beta;
    int st = 0, done = 0;
    for (int i = 0; i < hp.max_steps; ++i) {
      float z_new, sq;
      S::step(x, block, inv, z, qmax, pm1, beta, skip[size_t(i)], &z_new, &sq);
      if (sq < best) {
        best = sq;
        best_z = z;
        st = i;
      }
      done = i + 1;
      if (z_new == z) break;
      z = z_new;
      beta = beta * hp.kappa;
    }
    if (done > 0 && !(best_z == z)) {  // the last update's zero, not yet evaluated
      if (S::sq(x, block, inv, z, qmax) < best) {
        best_z = z;
        st = done;
      }
    }
    zero[b] = best_z;
    steps[b] = st;
    S::codes(x, block, inv, best_z, qmax, codes + b * block);
  }
}

template <class S>
void hqq_step_blocks_body(const float* w, size_t nblocks, size_t block, const HqqParams& hp, float beta,
                          const float* inv_scale, const float* zero_in, float* zero_out, float* err_sum) {
  const float qmax = float((1 << hp.bits) - 1);
  const float skip = ref::hqq_skip_threshold(hp.p, beta);
  for (size_t b = 0; b < nblocks; ++b) {
    float sq;
    err_sum[b] = S::step(w + b * block, block, inv_scale[b], zero_in[b], qmax, hp.p - 1.0f, beta, skip, &zero_out[b], &sq);
  }
}

WQ_END_ISA_NAMESPACE
}  // namespace wq
