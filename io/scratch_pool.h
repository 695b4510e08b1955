// Whole-tensor scratch buffers that readers fill before handing out a view (a transposed
// ONNX MatMul weight, for the quantizer as for verify, dequantize and float outputs; a
// misaligned embedded payload). Filling fresh memory costs the kernel a zeroed page
// per 4 KiB first touched: when every MatMul weight of the 1.1 B model went through here,
// that zeroing (clear_page) was a fifth of the conversion's CPU (perf, 2026-12-02). So
// released buffers are kept and reused, up to a byte budget that bounds what the pool adds
// to the resident set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace wq {

// A buffer that is about to be overwritten: not zeroed, 2 MiB-aligned with transparent
// huge pages requested (where the kernel grants them on request) once it is that large.
struct ScratchBytes {
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> ptr;
  size_t size = 0;      // bytes asked for
  size_t capacity = 0;  // bytes allocated

  static ScratchBytes make(size_t n) {
    constexpr size_t kHuge = size_t(2) << 20;
    ScratchBytes b;
    b.size = n;
    if (n == 0) return b;
    const bool huge = n >= kHuge;
    const size_t align = huge ? kHuge : 64;
    b.capacity = (n + align - 1) / align * align;
    void* p = std::aligned_alloc(align, b.capacity);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(p, b.capacity, MADV_HUGEPAGE);  // advice only: ignored where unsupported
#endif
    b.ptr.reset(static_cast<uint8_t*>(p));
    return b;
  }
  uint8_t* data() const { return ptr.get(); }
};

// Thread-safe. take(n) returns the smallest kept buffer that holds n bytes (or a new
// one); give() keeps a buffer while the kept bytes stay within the budget, dropping the
// smallest first: a tensor's buffer serves only tensors of about its size (take), and
// dropping the largest made every layer of the 1.1 B model fault in and zero its 46 MiB
// MLP buffers anew (clear_page at 10-17% of an ONNX conversion's CPU, 2026-12-03); the
// small ones are the cheap ones to make again.
class ScratchPool {
 public:
  explicit ScratchPool(size_t budget_bytes) : budget_(budget_bytes) {}

  ScratchBytes take(size_t n) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      size_t best = kept_.size();
      for (size_t i = 0; i < kept_.size(); ++i)
        if (kept_[i].capacity >= n && (best == kept_.size() || kept_[i].capacity < kept_[best].capacity)) best = i;
      // A buffer over twice the size would pin memory a smaller tensor does not need.
      if (best != kept_.size() && kept_[best].capacity <= 2 * n + (size_t(2) << 20)) {
        ScratchBytes b = std::move(kept_[best]);
        kept_.erase(kept_.begin() + long(best));
        kept_bytes_ -= b.capacity;
        b.size = n;
        return b;
      }
    }
    return ScratchBytes::make(n);
  }

  void give(ScratchBytes b) {
    if (!b.data() || b.capacity > budget_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    kept_bytes_ += b.capacity;
    kept_.push_back(std::move(b));
    while (kept_bytes_ > budget_) {
      size_t smallest = 0;
      for (size_t i = 1; i < kept_.size(); ++i)
        if (kept_[i].capacity < kept_[smallest].capacity) smallest = i;
      kept_bytes_ -= kept_[smallest].capacity;
      kept_.erase(kept_.begin() + long(smallest));
    }
  }

  size_t kept_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return kept_bytes_;
  }

 private:
  size_t budget_;
  mutable std::mutex mutex_;
  std::vector<ScratchBytes> kept_;
  size_t kept_bytes_ = 0;
};

}  // namespace wq
