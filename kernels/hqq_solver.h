// The HQQ kernels' loops, one body for every ISA: S supplies the ISA's block step and
// code computation (kernels/hqq_reference.h defines them element by element).
#pragma once

#include "kernels/isa_namespace.h"

#include <cmath>
#include <cstring>

#include "kernels/hqq_reference.h"
#include "kernels/kernels.h"
#include "kernels/scratch_buffer.h"

namespace wq {
WQ_BEGIN_ISA_NAMESPACE

// The skip threshold of each step's beta (beta_i = beta * kappa^i, as the loop grows it).
// A tensor calls the solver once per row, always with the same parameters: each thread
// keeps the thresholds of the last parameters it saw (up to kMemo steps), since their
// pow() calls, 20 per row, were 4.7% of an HQQ conversion's CPU (perf, 2026-12-03).
inline ScratchBuffer<float> hqq_thresholds(const HqqParams& hp) {
  constexpr size_t kMemo = 64;
  const size_t n = size_t(hp.max_steps > 0 ? hp.max_steps : 0);
  ScratchBuffer<float> t(n);
  thread_local HqqParams memo_params{};
  thread_local size_t memo_n = 0;  // 0: nothing kept
  thread_local float memo[kMemo];
  if (n <= kMemo && memo_n == n && std::memcmp(&memo_params, &hp, sizeof hp) == 0) {
    for (size_t i = 0; i < n; ++i) t[i] = memo[i];
    return t;
  }
  float beta = hp.beta;
  for (size_t i = 0; i < n; ++i) {
    t[i] = ref::hqq_skip_threshold(hp.p, beta);
    beta = beta * hp.kappa;
  }
  if (n <= kMemo) {
    for (size_t i = 0; i < n; ++i) memo[i] = t[i];
    std::memcpy(&memo_params, &hp, sizeof hp);
    memo_n = n;
  }
  return t;
}

// The skip threshold of every step (skip) and the least of those from step i on (rest,
// for any kappa, not only >= 1): what the early stop below compares against.
struct HqqSkip {
  ScratchBuffer<float> skip, rest;
  explicit HqqSkip(const HqqParams& hp) : skip(hqq_thresholds(hp)), rest(size_t(hp.max_steps > 0 ? hp.max_steps : 0)) {
    for (size_t i = size_t(hp.max_steps > 0 ? hp.max_steps : 0); i-- > 0;) {
      rest[i] = (i + 1 < size_t(hp.max_steps) && rest[i + 1] < skip[i]) ? rest[i + 1] : skip[i];
    }
  }
};

// Per block: the reference's zero updates, every candidate zero evaluated, the one of
// least squared error kept. A block's zero trajectory is the reference's own: step i
// depends only on the block's weights, its zero and beta_i = beta * kappa^i (the same
// float sequence and skip thresholds as the lockstep rule), never on other blocks. The
// reference returns, for every block, one of the points z_0 .. z_N of that trajectory
// (N <= max_steps, the step the tensor stops at), so keeping the best over the whole
// budget can only match or beat it, block by block; z_0 (affine RTN) is a candidate, so
// no block ends worse than RTN.
// The one early stop is exact: if step i leaves the zero where it was (z_new == z) and
// the largest residual is below the skip threshold of step i and of every later step,
// then step i took the shrinkage-free path, and so does every later step (same z, so the
// same codes and residuals), giving z_new == z again: the rest of the trajectory is z,
// already evaluated. z_new == z alone is not enough: where the shrinkage is active, a
// larger beta changes the update, and a block on a plateau can leave it steps later.
template <class S>
void hqq_solve_blocks_body(const float* w, size_t nblocks, size_t block, const HqqParams& hp, const float* inv_scale,
                           float* zero, uint8_t* codes, int* steps) {
  const float qmax = float((1 << hp.bits) - 1);
  const float pm1 = hp.p - 1.0f;
  HqqSkip th(hp);
  float* skip = th.skip.data();
  float* skip_rest = th.rest.data();
  for (size_t b = 0; b < nblocks; ++b) {
    const float* x = w + b * block;
    const float inv = inv_scale[b];
    float z = zero[b], best_z = z, best = INFINITY, beta = hp.beta;
    int st = 0, done = 0;
    for (int i = 0; i < hp.max_steps; ++i) {
      float z_new, sq, emax;
      S::step(x, block, inv, z, qmax, pm1, beta, skip[size_t(i)], &z_new, &sq, &emax);
      if (sq < best) {
        best = sq;
        best_z = z;
        st = i;
      }
      done = i + 1;
      if (z_new == z && emax < skip_rest[size_t(i)]) break;
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
    float sq, emax;
    err_sum[b] = S::step(w + b * block, block, inv_scale[b], zero_in[b], qmax, hp.p - 1.0f, beta, skip, &zero_out[b], &sq,
                         &emax);
  }
}

WQ_END_ISA_NAMESPACE
}  // namespace wq
