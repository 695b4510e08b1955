#include "io/onnx_zero_points.h"

#include <cmath>

#include "engine/error.h"

namespace wq {

bool zero_points_are_integral(const QuantSpec& spec) {
  switch (spec.scheme()) {
    case Scheme::MnnSym: return true;
    case Scheme::MnnAsym: return false;
    case Scheme::Affine: return spec.hqq_opts.round_zero && spec.hqq_opts.max_steps == 0;
  }
  return false;
}

std::string pack_zero_points(const float* z, size_t rows, size_t blocks, int bits, const std::string& what,
                             size_t first_row) {
  const size_t row_bytes = zero_point_row_bytes(blocks, bits);
  const float top = float((1u << bits) - 1);
  std::string out(rows * row_bytes, '\0');
  for (size_t r = 0; r < rows; ++r)
    for (size_t b = 0; b < blocks; ++b) {
      const float v = z[r * blocks + b];
      // A block whose weights all have one sign has its zero outside the code range.
      if (!(v >= 0.0f && v <= top) || std::nearbyint(v) != v)
        throw Error(what + ": zero point " + std::to_string(v) + " of block " + std::to_string(b) + " in row " +
                    std::to_string(first_row + r) + " is not an integer in 0.." + std::to_string(int(top)) +
                    " (its weights all have one sign); quantize it without --hqq-round-zero");
      const size_t bit = b * size_t(bits);
      const uint32_t s = uint32_t(v) << (bit & 7);
      uint8_t* row = reinterpret_cast<uint8_t*>(&out[r * row_bytes]);
      row[bit >> 3] |= uint8_t(s);
      if ((bit & 7) + size_t(bits) > 8) row[(bit >> 3) + 1] |= uint8_t(s >> 8);
    }
  return out;
}

void unpack_zero_points(const uint8_t* bytes, size_t rows, size_t blocks, int bits, float* z) {
  const size_t row_bytes = zero_point_row_bytes(blocks, bits);
  const uint32_t mask = (1u << bits) - 1;
  for (size_t r = 0; r < rows; ++r)
    for (size_t b = 0; b < blocks; ++b) {
      const size_t bit = b * size_t(bits);
      const uint8_t* row = bytes + r * row_bytes;
      uint32_t v = row[bit >> 3];
      if ((bit >> 3) + 1 < row_bytes) v |= uint32_t(row[(bit >> 3) + 1]) << 8;
      z[r * blocks + b] = float((v >> (bit & 7)) & mask);
    }
}

}  // namespace wq
