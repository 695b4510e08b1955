// The output graph of an ONNX run, decided from the plan before any data: which weight
// becomes MatMulNBits and which a standard-op dequantization (io/onnx_layout.h), the
// rewritten nodes, the metadata, and every output initializer with its exact size, in
// the order the writer streams them (plan order, each weight's pieces together).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/plan.h"
#include "io/onnx_reader.h"

namespace wq {

// What fills one output initializer's payload.
enum class OnnxPiece : uint8_t {
  Codes,        // MatMulNBits: q.packed; dequant: one code per byte
  Scales,       // f32 (MatMulNBits, or dequant without fp16) or the f16 halves
  Zeros,        // likewise; MatMulNBits: z (-min/s for min+scale blocks); uint8 headers: integer
                //   zero points, packed at `bits` (MatMulNBits) or one per byte (DequantizeLinear)
  Constant,     // `constant` below (shapes, offsets)
  Float,        // the plan's float payload (KeepFloat, transposed back when needed)
  Raw,          // the source bytes (CopyRaw)
  Verbatim,     // a string tensor: the source TensorProto as it was
};

struct OnnxOutInit {
  size_t plan_index = 0;
  OnnxPiece piece = OnnxPiece::Raw;
  onnx::TensorProto header;      // without payload
  uint64_t nbytes = 0;           // payload bytes (Verbatim: the whole TensorProto)
  std::string constant;          // Constant: the payload
};

// How a plan entry's quantized weight is stored (io/onnx_layout.h).
enum class OnnxWeightForm : uint8_t {
  None,              // not quantized
  MatMulNBits,       // codes packed, f32 scales, zeros f32 or packed uint8
  Gather,            // GatherBlockQuantized: codes packed, f32 scales
  Dequant,           // codes one per byte, scales and zeros as the spec stores them, standard ops
  DequantizeLinear,  // codes one per byte, f32 scales, uint8 zero points, opset 21's blocked op
};

struct OnnxOutPlan {
  onnx::ModelProto model;              // without initializers
  std::vector<OnnxOutInit> inits;      // streaming order
  std::vector<OnnxWeightForm> form;    // per plan entry
  std::vector<bool> transposed;      // per plan entry: listed transposed (see onnx_reader.h)
};

// MatMulNBits' accuracy_level that wquant writes (see onnx_graph.cpp).
inline constexpr int64_t kOnnxAccuracyLevel = 1;

// Throws Error naming OUT and the tensor when a plan entry cannot be stored in ONNX.
OnnxOutPlan plan_onnx_output(const std::string& out, const std::vector<TensorPlan>& plan, const OnnxReader& src);

}  // namespace wq
