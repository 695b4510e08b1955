// Integer zero points as ONNX stores them: MatMulNBits' packed uint8 zero points (each
// row's blocks as a little-endian bitstream of `bits`-wide fields, padded to whole bytes,
// as onnxruntime's contrib spec lays them out: [N][ceil(k_blocks * bits / 8)]) and
// DequantizeLinear's uint8 zero points (one per byte: the same layout with bits = 8).
// Which weights have integral zero points is a property of the spec, known before any
// data (zero_points_are_integral); whether each one fits its field is checked as it is
// written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/quant_spec.h"

namespace wq {

// True when every zero point the engine gives for `spec` is an integer: symmetric codes
// (2^(b-1)), and HQQ with --hqq-round-zero and no solver steps (the rounded affine start;
// each half-quadratic step moves z to a mean, off the integers). MNN's asymmetric blocks
// store a minimum (z = -min / s), not an integer.
bool zero_points_are_integral(const QuantSpec& spec);

// Bytes of one row of `blocks` zero points of `bits` bits.
inline size_t zero_point_row_bytes(size_t blocks, int bits) { return (blocks * size_t(bits) + 7) / 8; }

// Packs z [rows, blocks] into [rows, zero_point_row_bytes]. Throws Error naming `what`,
// the block, the row (counted from first_row: z may be a run of a tensor's rows) and the
// value when one is not an integer in [0, 2^bits - 1].
std::string pack_zero_points(const float* z, size_t rows, size_t blocks, int bits, const std::string& what,
                             size_t first_row = 0);

// The inverse: `bytes` holds rows * zero_point_row_bytes(blocks, bits) bytes.
void unpack_zero_points(const uint8_t* bytes, size_t rows, size_t blocks, int bits, float* z);

}  // namespace wq
