// The blocks behind ScratchBuffer (kernels/scratch_buffer.h): per thread, the last few
// blocks given back, each handed out again to the first request it holds (the smallest
// such). A kernel's buffers are the same few sizes row after row, so after a thread's
// first row no request reaches the allocator.
//
// Bounded: at most kSlots blocks of at most kMaxKept bytes wait per thread, each no
// larger than a buffer some kernel asked for; a block given back to a full cache
// replaces the smallest waiting one if it is larger (so the cache follows a kernel whose
// rows grow), else is freed.
// Under AddressSanitizer nothing is kept: each buffer is its own allocation of exactly
// its size, so an access past its end or after its release is still reported. Under
// valgrind a block handed out again is marked undefined, as a fresh one would be.
#include "kernels/scratch_buffer.h"

#include <new>
#include <utility>

#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define WQ_SCRATCH_UNDEFINED(p, n) VALGRIND_MAKE_MEM_UNDEFINED((p), (n))
#else
#define WQ_SCRATCH_UNDEFINED(p, n) ((void)(p), (void)(n))
#endif

#if defined(__SANITIZE_ADDRESS__)
#define WQ_SCRATCH_KEEP 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WQ_SCRATCH_KEEP 0
#endif
#endif
#ifndef WQ_SCRATCH_KEEP
#define WQ_SCRATCH_KEEP 1
#endif

namespace wq::scratch_cache {
namespace {

constexpr size_t kAlignBytes = 64;
constexpr std::align_val_t kAlign{kAlignBytes};
constexpr size_t kSlots = 12;
// Larger blocks are not kept: their allocation is small beside the work a buffer that
// size serves, and keeping them would add up to kSlots times the largest to every thread.
constexpr size_t kMaxKept = size_t(1) << 20;

void* allocate(size_t bytes) { return ::operator new(bytes, kAlign); }
void release(void* p) { ::operator delete(p, kAlign); }

#if WQ_SCRATCH_KEEP
// Set when this thread's cache is destroyed (a trivial thread_local, never destroyed
// itself): a ScratchBuffer released later, by another thread_local's destructor, goes
// straight back to the allocator.
thread_local bool cache_gone = false;

struct Block {
  void* p;
  size_t bytes;
};

class Cache {
 public:
  ~Cache() {
    for (size_t i = 0; i < count_; ++i) release(blocks_[i].p);
    count_ = 0;
    cache_gone = true;
  }
  void* take(size_t bytes, size_t* capacity) {
    size_t pick = count_;
    for (size_t i = 0; i < count_; ++i) {
      if (blocks_[i].bytes >= bytes && (pick == count_ || blocks_[i].bytes < blocks_[pick].bytes)) pick = i;
    }
    if (pick == count_) {
      const size_t rounded = (bytes + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
      *capacity = rounded;
      return allocate(rounded);
    }
    const Block b = blocks_[pick];
    blocks_[pick] = blocks_[--count_];
    *capacity = b.bytes;
    WQ_SCRATCH_UNDEFINED(b.p, b.bytes);
    return b.p;
  }
  void give(void* p, size_t bytes) {
    if (bytes > kMaxKept) return release(p);
    if (count_ < kSlots) {
      blocks_[count_++] = {p, bytes};
      return;
    }
    size_t smallest = 0;
    for (size_t i = 1; i < count_; ++i) {
      if (blocks_[i].bytes < blocks_[smallest].bytes) smallest = i;
    }
    if (blocks_[smallest].bytes < bytes) {
      std::swap(p, blocks_[smallest].p);
      std::swap(bytes, blocks_[smallest].bytes);
    }
    release(p);
  }
  size_t count() const { return count_; }
  size_t bytes() const {
    size_t n = 0;
    for (size_t i = 0; i < count_; ++i) n += blocks_[i].bytes;
    return n;
  }

 private:
  Block blocks_[kSlots];
  size_t count_ = 0;
};

Cache& cache() {
  thread_local Cache c;
  return c;
}
#endif

}  // namespace

void* take(size_t bytes, size_t* capacity) {
#if WQ_SCRATCH_KEEP
  if (!cache_gone) return cache().take(bytes, capacity);
#endif
  *capacity = bytes;
  return allocate(bytes);
}

void give(void* block, size_t capacity) {
#if WQ_SCRATCH_KEEP
  if (!cache_gone) return cache().give(block, capacity);
#endif
  (void)capacity;
  release(block);
}

size_t kept_blocks() {
#if WQ_SCRATCH_KEEP
  if (!cache_gone) return cache().count();
#endif
  return 0;
}

size_t kept_bytes() {
#if WQ_SCRATCH_KEEP
  if (!cache_gone) return cache().bytes();
#endif
  return 0;
}

bool keeps_blocks() { return WQ_SCRATCH_KEEP != 0; }

}  // namespace wq::scratch_cache
