#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace wq {

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
    return;
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
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
