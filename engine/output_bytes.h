// Byte buffers that their producer overwrites whole (a tensor's GGUF blocks, its
// converted floats): resize() leaves the new bytes uninitialised, where
// std::vector<uint8_t> would zero them first, a memset of every output byte that perf put
// at 3-4% of a GGUF conversion's CPU (2026-12-02).
//
// Buffers of 1 MiB and more are mappings on 2 MiB pages (engine/huge_pages.h, which also
// keeps a freed buffer's pages for the next one, so a grown buffer is not all fresh): the
// first write to each 4 KiB page of a fresh buffer is a page fault, and on these VMs the
// 30 000 faults of the output buffers of a 1.1 B model's Q4_0 conversion were 12% of its
// CPU (perf, 2026-12-03); with 2 MiB pages there are 512 times fewer. The pipeline hands
// buffers back for reuse (engine/pipeline.cpp), so each is faulted in once. The bound was
// 4 MiB until the 2 MiB codes of the 1.1 B model's attention matrices were seen faulting
// in 4 KiB at a time (perf record -e page-faults); at 1 MiB, with the output file's write
// buffers mapped the same way (io/output_file.h), the ONNX RTN job ran at 0.78-0.83x the
// wall time and 0.85-0.95x the CPU, the bf16 -> .wq job at 0.95x and 0.89x, Q4_0 at 0.98x
// and 0.97x (bench/ab_bench.sh A B B A, 8 runs each, 2026-12-04); at 256 KiB the .wq job
// was no faster again (1.00x the CPU) and held 8 MiB more.
//
// Being huge-page mappings, the buffers of 1 MiB and more start on a 2 MiB boundary: a writer hands
// such a buffer to O_DIRECT without copying it where the file offset agrees (io/output_file.h
// write_held). Smaller ones keep malloc's alignment: giving those of 64 KiB and more a 4 KiB
// one (aligned operator new) let the .wq job write more pieces without a copy (CPU 0.85
// against 0.95), but cost the ONNX RTN job, whose writer copies, 8-17% of wall time with
// its CPU unchanged (bench/ab_bench.sh A B B A, 8-12 pairs, 2026-12-04; the cause was not
// found).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/huge_pages.h"  // (and WQ_MARK_UNDEFINED)

namespace wq {

namespace output_bytes_detail {
constexpr size_t kMapFrom = size_t(1) << 20;
}  // namespace output_bytes_detail

template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() noexcept = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < output_bytes_detail::kMapFrom) return std::allocator<T>::allocate(n);
    if (void* p = huge_pages::take(bytes)) return static_cast<T*>(p);
    throw std::bad_alloc();
  }
  void deallocate(T* p, size_t n) noexcept {
    const size_t bytes = n * sizeof(T);
    if (bytes < output_bytes_detail::kMapFrom) std::allocator<T>::deallocate(p, n);
    else huge_pages::give(p, bytes);
  }
  // Value-initialisation (what resize(n) asks for) becomes default-initialisation.
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <class T>
using OutputVector = std::vector<T, DefaultInitAllocator<T>>;
using OutputBytes = OutputVector<uint8_t>;

}  // namespace wq
