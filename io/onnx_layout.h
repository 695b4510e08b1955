// How wquant stores a quantized weight in ONNX, shared by the writer and the reader.
//
// A weight NAME becomes initializers NAME.qweight (uint8 codes), NAME.scales, and for
// asymmetric schemes NAME.zeros, plus the model metadata "wquant.quant.NAME": the
// quantization record (io/quant_record.h) of what is stored, with two more fields:
//   "onnx_form": "MatMulNBits" - codes packed as MatMulNBits' B [N, k_blocks, blob]
//                (the row bitstream of kernels.h is exactly that for 2, 4 and 8 bits),
//                scales f32 [N, k_blocks], zeros absent (symmetric: the default zero
//                point 2^(b-1) is MNN's symmetric code), f32 [N, k_blocks] (w = (q-z)s),
//                or uint8 packed [N * ceil(k_blocks*bits/8)] when every z is an integer
//                (HQQ with --hqq-round-zero and no solver steps: io/onnx_zero_points.h).
//                Asymmetric min+scale is stored as z = -min/s (scheme "affine").
//   "onnx_form": "GatherBlockQuantized" - a symmetric 4- or 8-bit embedding read only by
//                Gather: codes packed as above [rows, cols * bits / 8], scales f32
//                [rows, k_blocks], and zero points 2^(b-1) packed in uint8 (the same
//                code as MNN's symmetric one, given rather than left to a default).
//   "onnx_form": "dequant" - codes one per byte [rows, k_blocks, block], scales and zeros
//                [rows, k_blocks, 1] (f16 with --fp16), and standard ops that compute
//                the weight exactly as wquant's dequantization does, named NAME, in
//                front of the graph: its consumers are unchanged.
//   "onnx_form": "DequantizeLinear" - where the model's opset is 21 or later and the zero
//                points are integers (symmetric, or as above): codes one per byte [rows,
//                cols], scales f32 [rows, k_blocks], zero points uint8 [rows, k_blocks]
//                (2^(b-1) for symmetric codes), read by one blocked DequantizeLinear
//                (axis 1), then Reshape / Transpose / Cast as the dequant form's.
//   "transposed": the listed (quantized) weight is the transpose of the graph's tensor.
// The dequant form also adds NAME.dq_shape (Reshape's target) and NAME.dq_offset; the
// DequantizeLinear form NAME.dq_shape for weights of rank other than 2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace wq {

struct OnnxInitializer;

inline constexpr const char* kOnnxVersionKey = "wquant.onnx_version";
inline constexpr const char* kOnnxRecordPrefix = "wquant.quant.";
inline constexpr const char* kFormMatMulNBits = "MatMulNBits";
inline constexpr const char* kFormDequant = "dequant";
inline constexpr const char* kFormGather = "GatherBlockQuantized";
inline constexpr const char* kFormDequantizeLinear = "DequantizeLinear";

// The initializers of one quantized weight, as indices into the reader's list.
struct OnnxQuantParts {
  static constexpr size_t kNone = SIZE_MAX;
  size_t codes = kNone, scales = kNone, zeros = kNone, shape = kNone, offset = kNone, gather_zeros = kNone;
  std::vector<size_t> all() const;
};

// Finds NAME.qweight, .scales, .zeros, .dq_shape, .dq_offset, .gather_zeros; throws naming the file and
// the weight when codes or scales are missing.
OnnxQuantParts find_quant_parts(const std::string& file, const std::string& name,
                                const std::map<std::string, size_t>& by_name,
                                const std::vector<OnnxInitializer>& inits);

// Rebuilds the stored record of a quantized weight, every size checked.
QuantizedTensor load_onnx_quantized(const std::string& file, const std::string& name, const std::string& record,
                                    const OnnxQuantParts& parts, const std::vector<OnnxInitializer>& inits);

}  // namespace wq
