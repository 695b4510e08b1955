// ScratchBuffer (kernels/scratch_buffer.h) and the per-thread cache behind it
// (kernels/scratch_cache.cpp): 64-byte aligned blocks, handed out again after release,
// with the cache bounded in blocks and in block size. Each case runs in a thread of its
// own, so it starts from an empty cache.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "kernels/scratch_buffer.h"

namespace wq {
namespace {

template <class F>
void in_new_thread(F f) {
  std::thread t(f);
  t.join();
}

TEST(ScratchBuffer, BlocksAre64ByteAlignedAndWritable) {
  in_new_thread([] {
    for (size_t n : {size_t(1), size_t(3), size_t(17), size_t(1000), size_t(4099), size_t(300000), size_t(1) << 20}) {
      for (int round = 0; round < 2; ++round) {  // fresh, then from the cache
        ScratchBuffer<float> f(n);
        ScratchBuffer<uint8_t> b(n);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(f.data()) % 64, 0u) << n;
        EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u) << n;
        std::memset(f.data(), 0xff, n * sizeof(float));
        std::memset(b.data(), 0xff, n);
      }
    }
    ScratchBuffer<float> none(0);
    EXPECT_EQ(none.data(), nullptr);
  });
}

TEST(ScratchBuffer, ReleasedBlocksAreHandedOutAgainWithinBounds) {
#if defined(__SANITIZE_ADDRESS__)
  EXPECT_FALSE(scratch_cache::keeps_blocks());
#else
  EXPECT_TRUE(scratch_cache::keeps_blocks());
#endif
  if (!scratch_cache::keeps_blocks()) {
    // AddressSanitizer: every buffer is its own allocation of its size, none is kept, so
    // an access past a buffer's end or after its release is still reported.
    in_new_thread([] {
      { ScratchBuffer<float> f(1000); }
      EXPECT_EQ(scratch_cache::kept_blocks(), 0u);
      EXPECT_EQ(scratch_cache::kept_bytes(), 0u);
    });
    return;
  }
  in_new_thread([] {
    std::set<const void*> released;
    {
      // 20 live at once, 1 KiB to 20 KiB: the 12 largest are kept.
      std::vector<std::unique_ptr<ScratchBuffer<uint8_t>>> live;
      for (size_t k = 1; k <= 20; ++k) {
        live.push_back(std::make_unique<ScratchBuffer<uint8_t>>(k * 1024));
        released.insert(live.back()->data());
      }
    }
    EXPECT_EQ(scratch_cache::kept_blocks(), 12u);
    size_t largest12 = 0;
    for (size_t k = 9; k <= 20; ++k) largest12 += k * 1024;
    EXPECT_EQ(scratch_cache::kept_bytes(), largest12);
    {
      // A request takes the smallest kept block that holds it.
      ScratchBuffer<uint8_t> a(9 * 1024), b(9 * 1024 + 1);
      EXPECT_TRUE(released.count(a.data()));
      EXPECT_TRUE(released.count(b.data()));
      EXPECT_EQ(scratch_cache::kept_blocks(), 10u);
      EXPECT_EQ(scratch_cache::kept_bytes(), largest12 - 9 * 1024 - 10 * 1024);
    }
    EXPECT_EQ(scratch_cache::kept_blocks(), 12u);
    // Blocks over 1 MiB go back to the allocator.
    { ScratchBuffer<float> big((size_t(1) << 20) / sizeof(float) + 1); }
    EXPECT_EQ(scratch_cache::kept_blocks(), 12u);
    EXPECT_EQ(scratch_cache::kept_bytes(), largest12);
    // A larger block given back to a full cache replaces the smallest.
    { ScratchBuffer<uint8_t> c(64 * 1024); }
    EXPECT_EQ(scratch_cache::kept_blocks(), 12u);
    EXPECT_EQ(scratch_cache::kept_bytes(), largest12 - 9 * 1024 + 64 * 1024);
  });
  // Another thread's cache is its own.
  in_new_thread([] { EXPECT_EQ(scratch_cache::kept_blocks(), 0u); });
}

TEST(ScratchBuffer, MovedBufferIsReleasedOnce) {
  in_new_thread([] {
    const void* p;
    {
      ScratchBuffer<float> a(500);
      p = a.data();
      ScratchBuffer<float> b(std::move(a));
      EXPECT_EQ(a.data(), nullptr);
      EXPECT_EQ(b.data(), p);
    }
    EXPECT_EQ(scratch_cache::kept_blocks(), scratch_cache::keeps_blocks() ? 1u : 0u);
  });
}

}  // namespace
}  // namespace wq
