// Constants of the .wq container shared by its reader and writer.
#pragma once

#include <cstdint>

namespace wq {

inline constexpr char kWqMagic[8] = {'W', 'Q', 'U', 'A', 'N', 'T', '0', '1'};
inline constexpr uint32_t kWqVersion = 1;
inline constexpr uint64_t kWqAlign = 64;  // every offset a reader accepts is a multiple of it

// What the writer does beyond that: the data section starts on a 4 KiB boundary of the
// file, and so does every piece (codes, scales, zeros, float data) of 64 KiB or more, so
// the writer hands it to O_DIRECT straight from the quantizer's buffer (no copy:
// io/output_file.h write_held), and a loader can map each large piece page-aligned. The
// padding costs under 4 KiB a large piece (about 0.15% of a 1.1 B model at 4 bits).
inline constexpr uint64_t kWqPageAlign = 4096;
inline constexpr uint64_t kWqPageAlignFrom = uint64_t(64) << 10;
inline uint64_t wq_piece_align(uint64_t bytes) { return bytes >= kWqPageAlignFrom ? kWqPageAlign : kWqAlign; }
inline uint64_t wq_align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

struct WqPreamble {
  char magic[8];
  uint32_t version;
  uint32_t reserved;
  uint64_t header_offset;
  uint64_t header_size;
  uint64_t data_offset;
  uint8_t zeros[24];
};
static_assert(sizeof(WqPreamble) == 64, "the .wq preamble is 64 bytes");

}  // namespace wq
