// wquant bench --model: every scheme a user chooses between (bits 2-8 x block sizes x
// sym / asym / HQQ, and the GGUF block types), applied to a model's weight tensors, with
// what each costs in storage (bits per weight, scales and zeros included) and in error,
// and which schemes are on the Pareto front (no other scheme is both smaller and closer).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "engine/metrics.h"
#include "engine/quant_spec.h"
#include "engine/tensor.h"
#include "kernels/ggml_types.h"
#include "kernels/kernels.h"

namespace wq::cli {

struct SweepScheme {
  std::string name;    // "4-bit asym block 64", "4-bit hqq block 64", "Q4_0", "Q4_1 hqq"
  std::string family;  // "sym", "asym", "hqq", "gguf", "gguf-hqq"
  QuantSpec spec;      // bits, block (0: channel-wise), asym, hqq
  bool ggml = false;   // a GGUF block type: `type` (spec.hqq for HQQ-solved Q4_1 / Q5_1)
  GgmlBlock type = GgmlBlock::Q4_0;
};

// bits 2..8 x blocks {32, 64, 128, channel-wise} x {sym, asym, hqq}, then every GGUF block
// type of kernels/ggml_types.inc, and HQQ on those with a minimum.
std::vector<SweepScheme> sweep_schemes();

struct SchemeResult {
  SweepScheme scheme;
  double bits_per_weight = 0;  // stored bits (codes, scales, zeros) / weights
  ErrorMetrics error;          // over every tensor together
  std::string worst_tensor;    // the tensor of the largest relative RMSE
  double worst_rel_rmse = 0;
  size_t tensors = 0, kept_float = 0;  // kept float: the scheme does not fit its rows
  double seconds = 0;
  bool pareto = false;
  // Why the scheme cannot hold this model (the first tensor it refuses, in tensor order:
  // a value its parameters cannot store, e.g. a Q4_1 minimum past f16's range); empty if
  // it can. Its figures are then NaN, and it is never on the front.
  std::string unavailable;
};

// Quantizes every tensor with the scheme (tensors in parallel, rows in parallel inside
// each, on the current arena) and measures it; tensors the scheme cannot hold (a GGUF
// block that does not divide the row) count as kept in their own float type, exactly,
// as a conversion would keep them; a tensor the scheme refuses makes the result unavailable
// (the other schemes still run). Figures do not depend on threads.
SchemeResult run_scheme(const SweepScheme& s, const std::vector<TensorView>& tensors, const Kernels& k);

// Sets `pareto` on the results no other result dominates (bits per weight and relative
// RMSE both <=, one of them <). NaN errors, and schemes that kept every tensor float, are
// never on the front.
void mark_pareto(std::vector<SchemeResult>& results);

}  // namespace wq::cli
