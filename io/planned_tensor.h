// The stored pieces of a plan entry, known before any data is computed: what the
// streaming writers lay out their headers from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/plan.h"

namespace wq {

struct PlannedPiece {
  std::string suffix;          // "" for the tensor itself, ".qweight", ".scales", ".zeros"
  std::vector<int64_t> shape;
  std::string dtype;           // safetensors dtype name
  uint64_t nbytes = 0;
};

// Throws Error naming the tensor when the action cannot be stored in a wquant or
// safetensors file (Ggml blocks; a CopyRaw of a type safetensors has no name for).
std::vector<PlannedPiece> planned_pieces(const TensorPlan& p, const TensorInfo& info);

}  // namespace wq
