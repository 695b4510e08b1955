// A heap buffer for kernel scratch space, in the ISA's namespace. Kernels use it instead
// of std::vector: a std:: template instantiated in a file compiled with ISA flags is a
// weak symbol outside the ISA's namespace (kernels/isa_namespace.h), so its AVX copy
// could be the one the linker keeps for code compiled without those flags.
#pragma once

#include "kernels/isa_namespace.h"

#include <cstddef>

namespace wq {
WQ_BEGIN_ISA_NAMESPACE

template <class T>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(size_t n) : data_(n ? new T[n] : nullptr) {}
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ScratchBuffer(ScratchBuffer&& o) noexcept : data_(o.data_) { o.data_ = nullptr; }
  ~ScratchBuffer() { delete[] data_; }
  T* data() { return data_; }
  T& operator[](size_t i) { return data_[i]; }

 private:
  T* data_;
};

WQ_END_ISA_NAMESPACE
}  // namespace wq
