// Byte buffers that their producer overwrites whole (a tensor's GGUF blocks, its
// converted floats): resize() leaves the new bytes uninitialised, where
// std::vector<uint8_t> would zero them first, a memset of every output byte that perf put
// at 3-4% of a GGUF conversion's CPU (2026-12-02).
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace wq {

template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() noexcept = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
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

using OutputBytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

}  // namespace wq
