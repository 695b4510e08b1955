// Constants of the .wq container shared by its reader and writer.
#pragma once

#include <cstdint>

namespace wq {

inline constexpr char kWqMagic[8] = {'W', 'Q', 'U', 'A', 'N', 'T', '0', '1'};
inline constexpr uint32_t kWqVersion = 1;
inline constexpr uint64_t kWqAlign = 64;  // every offset a reader accepts is a multiple of it (the writer's: io/wq_writer.cpp)

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
