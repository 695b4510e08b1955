// What the user asks for, per tensor: bits, block, symmetry, HQQ, storage precision.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace wq {

// HQQ's half-quadratic solver options; the defaults are the reference's
// (mobiusml/hqq optimize_weights_proximal).
// When the solver stops. Block: each block runs on its own over the whole step budget
// (stopping early only where its zero provably stays put) and keeps its best zero: no
// barrier between blocks, never worse than the affine start or the Tensor rule.
// Tensor: the reference's rule: every block steps in lockstep and all stop together when
// the mean error over the whole tensor stops falling, returning the last zero.
enum class HqqStop : uint8_t { Block, Tensor };

struct HqqOptions {
  int max_steps = 20;
  float p = 0.7f;       // lp-norm of the shrinkage
  float beta = 10.0f;   // initial penalty
  float kappa = 1.01f;  // beta growth per step
  bool round_zero = false;
  HqqStop stop = HqqStop::Block;
};

struct QuantSpec {
  int bits = 4;           // 2..8
  int64_t block = 0;      // 0 = channel-wise (one block per output row)
  bool asym = false;      // MNN asymmetric (min + scale); --hqq forces it
  bool hqq = false;       // HQQ: affine start refined by the half-quadratic solver
  bool fp16 = false;      // scales and zeros stored as f16 (and float tensors kept as f16)
  HqqOptions hqq_opts;
  // MNNConvert's own rules, set when the run is spelled the MNNConvert way (cli/args.cpp);
  // wquant's own flags leave them off. Verified against alibaba/MNN (files named below).
  bool mnn_blocks = false;     // block counts input channels: resolve_mnn_block
  bool mnn_flush = false;      // |w| < FLT_MIN (and -0) read as +0 before quantizing,
                               // as tools/converter/source/common/AlignDenormalizedValue.cpp does
  bool fp16_truncate = false;  // with fp16: scales and zeros rounded toward zero, as MNN's
                               // --weightQuantScaleBit 16 stores them (source/core/IDSTEncoder.hpp:
                               // half_float::half at its default HALF_ROUND_STYLE -1, truncation)

  Scheme scheme() const { return hqq ? Scheme::Affine : (asym ? Scheme::MnnAsym : Scheme::MnnSym); }
  std::string describe() const;  // e.g. "4-bit asym block 64 hqq"
  // describe() for a tensor with rows of `cols` quantized in blocks of `block` (an
  // effective block equal to cols is channel-wise).
  std::string describe_with_block(size_t block, size_t cols) const;
};

// Throws Error naming the bad field (bits outside 2..8, negative block, HQQ options out
// of range). `where` prefixes the message (a tensor name or the flag's source).
void validate_spec(const QuantSpec& spec, const std::string& where);

// What to do when a block size does not divide a row.
enum class BlockFallback { Error, ChannelWise };

// The effective block for a row of `cols` elements: spec.block if it divides cols;
// cols if channel-wise or (with BlockFallback::ChannelWise) if it does not divide, in
// which case *note says so. Throws Error naming the tensor otherwise.
size_t resolve_block(const QuantSpec& spec, size_t cols, const std::string& tensor,
                     BlockFallback fallback, std::string* note);

// MNNConvert's block rule (tools/converter/source/common/WeightQuantAndCoding.cpp,
// WeightQuantAndCoding): for a weight [oc, ic, k...] the block counts input channels and
// spans the whole kernel, so the effective block is spec.block * (product of k...) weights
// (a linear [out, in] has a kernel of 1). It is used only when spec.block >= 16, a multiple
// of 16, and divides ic; otherwise the tensor is channel-wise and *note says why.
size_t resolve_mnn_block(const QuantSpec& spec, const std::vector<int64_t>& shape, const std::string& tensor,
                         std::string* note);

}  // namespace wq
