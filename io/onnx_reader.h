// ONNX in: a ModelProto whose initializers are embedded (raw_data or the typed fields)
// or in external data files beside it, models over 2 GB included. The graph is taken
// apart on the wire (io/onnx_wire.h): protobuf parses only the structure and each
// tensor's header; payloads stay in the mmapped files.
//
// Which initializers are weights: float, 2-D or more, consumed only as MatMul's B,
// Gemm's B, Conv's W or Gather's data (axis 0). Every other initializer is listed as
// kind Other and carried over unchanged. A weight is listed in the orientation wquant
// quantizes, rows = output features: MatMul's B [K, N] (and Gemm's B without transB) is
// listed transposed, [N, K] (view() hands out a transposed copy), so blocks run along K
// as MatMulNBits needs. A weight with consumers that disagree on that stays as stored.
//
// A model wquant wrote (metadata "wquant.onnx_version") lists each quantized weight
// once, kind Quantized, under its original name; load_quantized rebuilds its record.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/model_reader.h"

#include <onnx/onnx_pb.h>

namespace wq {

// One initializer: its header (TensorProto without payload fields) and its payload as
// little-endian elements, wherever they live.
struct OnnxInitializer {
  onnx::TensorProto header;
  const uint8_t* data = nullptr;  // payload bytes (nbytes of them)
  uint64_t nbytes = 0;
  // A string tensor: its TensorProto as it was serialized, copied verbatim.
  std::string verbatim;
  bool weight = false;      // a candidate for quantization (see above)
  bool transposed = false;  // listed as the transpose of the stored 2-D tensor
  bool matmul_only = false; // every consumer is a MatMul (it may become MatMulNBits)
  bool gather_only = false; // 2-D, every consumer a Gather (it may become GatherBlockQuantized)
  // A weight an earlier wquant run kept float in a narrower dtype (--fp16): stored as
  // NAME.f16 (or .bf16) and widened by the Cast node NAME/cast, whose output NAME is what
  // the graph reads. It is listed as NAME, classified by NAME's consumers; the Cast belongs
  // to its stored form (a writer drops it and writes the form it chooses). Empty/-1/0
  // for every other initializer.
  std::string graph_name;
  int cast_node = -1;  // index of that Cast among the graph's nodes
  int graph_type = 0;  // the element type the graph reads (the Cast's `to`)
  // The name the graph reads this initializer under.
  const std::string& read_as() const { return graph_name.empty() ? header.name() : graph_name; }
};

class OnnxReader : public ModelReader {
 public:
  // The model without its graph's initializers (everything else as in the file).
  virtual const onnx::ModelProto& model() const = 0;
  virtual const std::vector<OnnxInitializer>& initializers() const = 0;
  // Index in initializers() of tensor i (for a Quantized tensor: its codes).
  virtual size_t initializer_of(size_t i) const = 0;
};

// Throws Error naming the file and the initializer for anything malformed.
std::unique_ptr<OnnxReader> open_onnx(const std::string& path);

// True if `head` (n bytes of the file's start) and the name look like an ONNX model.
bool looks_like_onnx(const std::string& path, const uint8_t* head, size_t n);

// The ONNX element type of a float dtype (FLOAT, FLOAT16, BFLOAT16).
int onnx_type_of(DType t);
// Its inverse: false for an element type that is no float dtype.
bool dtype_of_onnx(int onnx_type, DType* t);

}  // namespace wq
