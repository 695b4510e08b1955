// A cache-blocked 2-D transpose of 2- or 4-byte elements: MatMul's [K, N] weights are
// quantized as [N, K], and an element-at-a-time transpose of a 32000 x 2048 matrix
// misses the cache on every write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace wq {

// dst [cols, rows] = transpose of src [rows, cols]; elem_size 2 or 4 (else bytewise).
inline void transpose_2d(const uint8_t* src, size_t rows, size_t cols, size_t elem_size, uint8_t* dst) {
  constexpr size_t kTile = 32;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const uint8_t* s = src;
    T* d = reinterpret_cast<T*>(dst);  // dst is a fresh, aligned buffer
    for (size_t r0 = 0; r0 < rows; r0 += kTile)
      for (size_t c0 = 0; c0 < cols; c0 += kTile) {
        const size_t r1 = r0 + kTile < rows ? r0 + kTile : rows, c1 = c0 + kTile < cols ? c0 + kTile : cols;
        for (size_t r = r0; r < r1; ++r)
          for (size_t c = c0; c < c1; ++c) {
            T v;
            std::memcpy(&v, s + (r * cols + c) * sizeof v, sizeof v);  // src may be misaligned (embedded raw_data)
            d[c * rows + r] = v;
          }
      }
  };
  if (elem_size == 4) run(uint32_t{});
  else if (elem_size == 2) run(uint16_t{});
  else
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) std::memcpy(dst + (c * rows + r) * elem_size, src + (r * cols + c) * elem_size, elem_size);
}

}  // namespace wq
