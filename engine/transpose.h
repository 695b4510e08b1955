// A cache-blocked 2-D transpose of 2- or 4-byte elements: MatMul's [K, N] weights are
// quantized as [N, K] (io/onnx_reader.h), one row tile at a time as the quantizer reaches
// it (engine/row_source.h), or whole where a consumer needs the whole tensor. It is a
// pure move of bits (no float operation touches a value, so NaN payloads and signed
// zeros survive), and it runs on every conversion of an ONNX MatMul weight, so it must
// cost about what a copy costs: element-at-a-time code ran at 1.8 ns an element and was
// 43% of an ONNX conversion's CPU (perf, 2026-12-02).
//
// Macro tiles of 256 x 256 touch 256 pages on each side (the TLB covers them) and sit in
// L2. Inside them, 4-byte elements go through the kernel table's transpose32 (L x L tiles
// in registers, whole destination rows stored: 16 x 16 on AVX-512, where SSE2's 4 x 4
// tiles ran at 0.6-1 ns an element); 8 x 8 tiles of 2-byte elements are transposed with
// SSE2's unpack instructions, which every x86-64 CPU has; other targets use the portable
// micro tile, which compilers turn into vector shuffles.
#pragma once

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace wq {

namespace transpose_detail {

// dst[c * ld_dst + r] = src[r * ld_src + c] for an R x C tile, element by element: the
// tails of a macro tile, and the micro tile where there are no SSE2 shuffles.
template <class T>
inline void tile_generic(const uint8_t* src, size_t ld_src, T* dst, size_t ld_dst, size_t R, size_t C) {
  for (size_t c = 0; c < C; ++c)
    for (size_t r = 0; r < R; ++r) {
      T v;
      std::memcpy(&v, src + (r * ld_src + c) * sizeof v, sizeof v);
      dst[c * ld_dst + r] = v;
    }
}

#if defined(__SSE2__)
// 8 x 8 of 16-bit elements.
inline void micro_8x8(const uint8_t* src, size_t ld_src, uint16_t* dst, size_t ld_dst) {
  __m128i r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + size_t(i) * ld_src * 2));
  __m128i a[8], b[8];
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      b[4 * i + j] = _mm_unpacklo_epi32(a[4 * i + j], a[4 * i + 2 + j]);
      b[4 * i + 2 + j] = _mm_unpackhi_epi32(a[4 * i + j], a[4 * i + 2 + j]);
    }
  // b[0]: cols 0,1 of rows 0-3; b[2]: cols 2,3; b[1]: cols 4,5; b[3]: cols 6,7; b[4..7] the same for rows 4-7.
  const int order[4] = {0, 2, 1, 3};
  for (int k = 0; k < 4; ++k) {
    const __m128i lo = b[order[k]], hi = b[4 + order[k]];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + size_t(2 * k) * ld_dst), _mm_unpacklo_epi64(lo, hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + size_t(2 * k + 1) * ld_dst), _mm_unpackhi_epi64(lo, hi));
  }
}
#endif

// A macro tile [R0, R1) x [C0, C1) of 2-byte elements, in tiles of one cache line square
// (32 x 32), column group by column group, so every destination line is finished while
// it is in L1. Row-major micro order instead left each destination line a quarter
// written for a whole pass over the macro tile; with a power-of-two row pitch those
// lines all share one L1 set and were evicted and re-read before being finished: 1.9 ns
// an element, against 0.65 (memcpy: 0.5; one thread, 2048 x 5632 f32 with the 4 x 4
// SSE2 tiles 4-byte elements had then, Zen 5, 2026-12-02).
inline void macro_tile_u16(const uint8_t* src, size_t cols, uint16_t* d, size_t rows, size_t R0, size_t R1, size_t C0,
                           size_t C1) {
  using T = uint16_t;
#if defined(__SSE2__)
  constexpr size_t M = 8;   // register micro tile (micro_8x8)
  constexpr size_t L = 32;  // one cache line of 2-byte elements
  const size_t r_full = R0 + (R1 - R0) / L * L, c_full = C0 + (C1 - C0) / L * L;
  for (size_t r0 = R0; r0 < r_full; r0 += L) {
    // The source rows two line-blocks ahead: each row gives only (C1 - C0) elements
    // before the walk moves a whole row pitch on, too short a run for the hardware
    // prefetchers to follow when the rows are far apart (a column slice of a wide matrix).
    if (r0 + 4 * L < R1)
      for (size_t i = 0; i < L; ++i)
        for (size_t c = C0; c < C1; c += L) _mm_prefetch(reinterpret_cast<const char*>(src + ((r0 + 4 * L + i) * cols + c) * sizeof(T)), _MM_HINT_T0);
    for (size_t c0 = C0; c0 < c_full; c0 += L)
      for (size_t mc = 0; mc < L; mc += M)
        for (size_t mr = 0; mr < L; mr += M) {
          const size_t r = r0 + mr, c = c0 + mc;
          micro_8x8(src + (r * cols + c) * sizeof(T), cols, d + c * rows + r, rows);
        }
  }
  // The right edge (columns past c_full, every row) and the bottom edge.
  if (c_full < C1) tile_generic(src + (R0 * cols + c_full) * sizeof(T), cols, d + c_full * rows + R0, rows, R1 - R0, C1 - c_full);
  if (r_full < R1) tile_generic(src + (r_full * cols + C0) * sizeof(T), cols, d + C0 * rows + r_full, rows, R1 - r_full, c_full - C0);
#else
  constexpr size_t M = 64 / sizeof(T);
  for (size_t r = R0; r < R1; r += M)
    for (size_t c = C0; c < C1; c += M)
      tile_generic(src + (r * cols + c) * sizeof(T), cols, d + c * rows + r, rows, r + M < R1 ? M : R1 - r, c + M < C1 ? M : C1 - c);
#endif
}

// One macro tile [R0, R1) x [C0, C1); cols: the source's row pitch in elements, rows:
// the destination's. 4-byte elements go to the kernel table's transpose32
// (kernels/simd_body.h: L x L tiles in registers, whole destination lines stored).
template <class T>
inline void macro_tile(const uint8_t* src, size_t cols, T* d, size_t rows, size_t R0, size_t R1, size_t C0, size_t C1) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4, "2- or 4-byte elements");
  if constexpr (sizeof(T) == 4) {
    kernels().transpose32(reinterpret_cast<const uint32_t*>(src) + R0 * cols + C0, cols, R1 - R0, C1 - C0,
                          reinterpret_cast<uint32_t*>(d) + C0 * rows + R0, rows);
  } else {
    macro_tile_u16(src, cols, d, rows, R0, R1, C0, C1);
  }
}

}  // namespace transpose_detail

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols: a band of rows of a
// matrix written into its place in the transpose of the whole (ld_dst: the whole's row
// count). elem_size 2 or 4 (else bytewise). Serial, macro tile by macro tile.
//
// A narrow band (each source row gives at most 1 KiB: a quantizer tile of a MatMul weight
// read from the mapping, engine/row_source.h) reads a few lines from each of thousands of
// rows a whole row pitch apart, which the hardware prefetchers do not follow: every line
// is a miss to memory in turn. So it walks kNarrowStep rows at a time and first asks for
// the lines of the rows one step further on, so the misses overlap. On the 1.1 B model's
// ONNX conversion (Zen 5, 2 threads) the tiles' transposes took 47% of the CPU without
// it, and the conversion went from 1.39 s to 1.23 s with it (2026-12-03).
inline void transpose_band(const uint8_t* src, size_t ld_src, size_t rows, size_t cols, size_t elem_size, uint8_t* dst,
                           size_t ld_dst) {
  constexpr size_t kMacro = 256, kNarrowStep = 128, kNarrowBytes = 1024;
  const size_t row_bytes = cols * elem_size, pitch = ld_src * elem_size;
  const bool narrow = row_bytes <= kNarrowBytes;
  auto prefetch_rows = [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r)
      for (size_t c = 0; c < row_bytes; c += 64) __builtin_prefetch(src + r * pitch + c);
  };
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const size_t step = narrow ? kNarrowStep : kMacro;
    if (narrow) prefetch_rows(0, std::min(step, rows));
    for (size_t R0 = 0; R0 < rows; R0 += step) {
      if (narrow && R0 + step < rows) prefetch_rows(R0 + step, std::min(R0 + 2 * step, rows));
      for (size_t C0 = 0; C0 < cols; C0 += kMacro)
        transpose_detail::macro_tile(src, ld_src, reinterpret_cast<T*>(dst), ld_dst, R0, std::min(R0 + step, rows), C0,
                                     std::min(C0 + kMacro, cols));
    }
  };
  if (elem_size == 4) run(uint32_t{});
  else if (elem_size == 2) run(uint16_t{});
  else
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) std::memcpy(dst + (c * ld_dst + r) * elem_size, src + (r * ld_src + c) * elem_size, elem_size);
}

// dst [cols, rows] = transpose of src [rows, cols], whose rows are ld_src elements apart
// (ld_src >= cols: a column slice of a wider matrix); elem_size 2 or 4 (else bytewise).
// src may be misaligned (an embedded raw_data). Serial, macro tile by macro tile.
inline void transpose_block(const uint8_t* src, size_t ld_src, size_t rows, size_t cols, size_t elem_size, uint8_t* dst) {
  transpose_band(src, ld_src, rows, cols, elem_size, dst, rows);
}

// The whole of src [rows, cols] (contiguous), spread over the worker threads.
inline void transpose_2d(const uint8_t* src, size_t rows, size_t cols, size_t elem_size, uint8_t* dst) {
  constexpr size_t kMacro = 256;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* d = reinterpret_cast<T*>(dst);
    const size_t row_tiles = (rows + kMacro - 1) / kMacro, col_tiles = (cols + kMacro - 1) / kMacro;
    tbb::parallel_for(tbb::blocked_range<size_t>(0, row_tiles * col_tiles), [&](const tbb::blocked_range<size_t>& range) {
      for (size_t t = range.begin(); t != range.end(); ++t) {
        const size_t R0 = (t / col_tiles) * kMacro, C0 = (t % col_tiles) * kMacro;
        transpose_detail::macro_tile(src, cols, d, rows, R0, std::min(R0 + kMacro, rows), C0, std::min(C0 + kMacro, cols));
      }
    });
  };
  if (elem_size == 4) run(uint32_t{});
  else if (elem_size == 2) run(uint16_t{});
  else transpose_block(src, cols, rows, cols, elem_size, dst);
}

}  // namespace wq
