// A cache-blocked 2-D transpose of 2- or 4-byte elements, spread over the worker
// threads: MatMul's [K, N] weights are quantized as [N, K] (io/onnx_reader.h), and an
// element-at-a-time transpose of a 32000 x 2048 matrix misses the cache on every write
// and would leave the other cores idle while one thread copies.
#pragma once

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace wq {

// dst [cols, rows] = transpose of src [rows, cols]; elem_size 2 or 4 (else bytewise).
// src may be misaligned (an embedded raw_data); dst is a fresh, aligned buffer.
inline void transpose_2d(const uint8_t* src, size_t rows, size_t cols, size_t elem_size, uint8_t* dst) {
  // Macro tiles of 256 x 256 touch 256 pages on each side (the TLB covers them) and sit
  // in L2; micro tiles of 16 x 16 move whole cache lines.
  constexpr size_t kMacro = 256, kMicro = 16;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* d = reinterpret_cast<T*>(dst);
    const size_t row_tiles = (rows + kMacro - 1) / kMacro, col_tiles = (cols + kMacro - 1) / kMacro;
    tbb::parallel_for(tbb::blocked_range<size_t>(0, row_tiles * col_tiles), [&](const tbb::blocked_range<size_t>& range) {
      for (size_t t = range.begin(); t != range.end(); ++t) {
        const size_t R0 = (t / col_tiles) * kMacro, C0 = (t % col_tiles) * kMacro;
        const size_t R1 = R0 + kMacro < rows ? R0 + kMacro : rows, C1 = C0 + kMacro < cols ? C0 + kMacro : cols;
        for (size_t r0 = R0; r0 < R1; r0 += kMicro)
          for (size_t c0 = C0; c0 < C1; c0 += kMicro) {
            const size_t r1 = r0 + kMicro < R1 ? r0 + kMicro : R1, c1 = c0 + kMicro < C1 ? c0 + kMicro : C1;
            for (size_t c = c0; c < c1; ++c)
              for (size_t r = r0; r < r1; ++r) {
                T v;
                std::memcpy(&v, src + (r * cols + c) * sizeof v, sizeof v);
                d[c * rows + r] = v;
              }
          }
      }
    });
  };
  if (elem_size == 4) run(uint32_t{});
  else if (elem_size == 2) run(uint16_t{});
  else
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) std::memcpy(dst + (c * rows + r) * elem_size, src + (r * cols + c) * elem_size, elem_size);
}

}  // namespace wq
