#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace wq {

namespace {

// The live mappings, for mapped_path_at. A fixed table, never allocated or freed, so a
// signal handler may read it: a slot is claimed (`used`), its path written, then its range
// published (release); the handler reads the range (acquire) before the path (a slot
// freed and claimed again while the handler reads it could give it another file's name;
// the handler prints one line and exits, so nothing else depends on it). More
// mappings than slots (a model of hundreds of shards) go unlisted: the handler then names
// the model, as it did before there was a table.
struct MappedSlot {
  std::atomic<bool> used{false};
  std::atomic<uintptr_t> begin{0}, end{0};
  char path[1024];
};
constexpr int kMappedSlots = 128;
MappedSlot g_mapped[kMappedSlots];

int claim_slot(const std::string& path, const uint8_t* data, uint64_t size) {
  for (int i = 0; i < kMappedSlots; ++i) {
    bool expected = false;
    if (!g_mapped[i].used.compare_exchange_strong(expected, true)) continue;
    const size_t n = std::min(path.size(), sizeof g_mapped[i].path - 1);
    std::memcpy(g_mapped[i].path, path.data(), n);
    g_mapped[i].path[n] = '\0';
    g_mapped[i].end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_release);
    g_mapped[i].begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
    return i;
  }
  return -1;
}

void free_slot(int i) {
  if (i < 0) return;
  g_mapped[i].begin.store(0, std::memory_order_release);
  g_mapped[i].end.store(0, std::memory_order_release);
  g_mapped[i].used.store(false, std::memory_order_release);
}

}  // namespace

const char* mapped_path_at(const void* addr) noexcept {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  for (const MappedSlot& s : g_mapped) {
    const uintptr_t b = s.begin.load(std::memory_order_acquire), e = s.end.load(std::memory_order_acquire);
    if (b != 0 && a >= b && a < e) return s.path;
  }
  return nullptr;
}

void require_regular_file(unsigned st_mode, const std::string& path) {
  if (!S_ISREG(st_mode)) throw Error(path + ": is not a regular file (a FIFO, socket or device): wquant maps its inputs");
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO for reading would wait for a writer forever (it is then
  // refused below); for a regular file the flag changes nothing.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": is a directory, not a file");
  }
  try {
    require_regular_file(st.st_mode, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  size_ = uint64_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error(path + ": cannot map: " + std::strerror(e));
    }
    ::madvise(p, size_, MADV_SEQUENTIAL);
    data_ = static_cast<const uint8_t*>(p);
    fd_ = fd;
    slot_ = claim_slot(path_, data_, size_);
    return;
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  free_slot(slot_);  // before the range can be mapped again
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

const uint8_t* MappedFile::span(uint64_t offset, uint64_t len, const std::string& what) const {
  if (!contains(offset, len)) {
    throw Error(path_ + ": " + what + ": bytes [" + std::to_string(offset) + ", " + std::to_string(offset) + "+" +
                std::to_string(len) + ") are past the end of the file (" + std::to_string(size_) +
                " bytes): truncated or corrupt");
  }
  return data_ + offset;
}

void MappedFile::release(uint64_t offset, uint64_t len) const {
  if (!data_ || !contains(offset, len)) return;
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  // Only whole pages inside the range: a neighbour's bytes may still be in use.
  const uint64_t begin = (offset + page - 1) / page * page;
  const uint64_t end = (offset + len) / page * page;
  if (end > begin) ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
}

}  // namespace wq
