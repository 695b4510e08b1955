// A heap buffer for kernel scratch space, in the ISA's namespace. Kernels use it instead
// of std::vector: a std:: template instantiated in a file compiled with ISA flags is a
// weak symbol outside the ISA's namespace (kernels/isa_namespace.h), so its AVX copy
// could be the one the linker keeps for code compiled without those flags.
//
// The memory comes from kernels/scratch_cache.cpp: each thread keeps the blocks its
// buffers gave back and hands them out again, 64-byte aligned. Kernels take scratch per
// row (the K-quants seven buffers a row), and from the allocator that had cost: with
// plain new[], malloc was 1.7% of a Q4_K_M conversion's CPU, and 64-byte aligned new[]
// (glibc's memalign path) made the conversion 10% slower in CPU (bench/ab_bench.sh,
// 2026-12-06), where the alignment itself made the .wq job 3% faster (a row's vectors no
// longer straddle two cache lines each).
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>

namespace wq {

// Outside the ISA namespace on purpose: plain functions compiled once, without ISA flags
// (kernels/scratch_cache.cpp), one cache per thread whichever table calls.
namespace scratch_cache {
// At least `bytes` bytes, 64-byte aligned, contents undefined; *capacity receives the
// block's size, to be passed back to give. bytes > 0.
void* take(size_t bytes, size_t* capacity);
void give(void* block, size_t capacity);
// What this thread's cache holds now (for tests): blocks and their bytes.
size_t kept_blocks();
size_t kept_bytes();
// False where nothing is kept (AddressSanitizer builds: each buffer its own allocation).
bool keeps_blocks();
}  // namespace scratch_cache

WQ_BEGIN_ISA_NAMESPACE

// T: a trivial type (floats, bytes); the elements are left uninitialised.
template <class T>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(size_t n) {
    if (n) data_ = static_cast<T*>(scratch_cache::take(n * sizeof(T), &capacity_));
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ScratchBuffer(ScratchBuffer&& o) noexcept : data_(o.data_), capacity_(o.capacity_) {
    o.data_ = nullptr;
    o.capacity_ = 0;
  }
  ~ScratchBuffer() {
    if (data_) scratch_cache::give(data_, capacity_);
  }
  T* data() { return data_; }
  T& operator[](size_t i) { return data_[i]; }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

WQ_END_ISA_NAMESPACE
}  // namespace wq
