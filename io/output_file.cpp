#include "io/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/error.h"

namespace wq {
namespace {

// Live temporary paths, readable from a signal handler: fixed storage, each slot
// published with an atomic flag after its path is complete.
constexpr int kSlots = 16;
constexpr size_t kPathMax = 4096;
char g_paths[kSlots][kPathMax];
std::atomic<bool> g_live[kSlots];

int register_temp(const std::string& p) {
  if (p.size() >= kPathMax) return -1;
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (g_live[i].load() == false) {
      std::memcpy(g_paths[i], p.c_str(), p.size() + 1);
      if (g_live[i].compare_exchange_strong(expected, true)) return i;
    }
  }
  return -1;
}

void unregister_temp(int slot) {
  if (slot >= 0) g_live[slot].store(false);
}

constexpr size_t kBuffer = 4u << 20;  // large sequential writes

}  // namespace

void remove_temp_outputs_from_signal() {
  for (int i = 0; i < kSlots; ++i) {
    if (g_live[i].load()) ::unlink(g_paths[i]);
  }
}

OutputFile::OutputFile(const std::string& path) : path_(path), buf_(kBuffer) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  fs::path dir = p.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw Error(path + ": the output directory " + dir.string() + " does not exist", ErrorKind::Output);
  }
  if (p.filename().empty()) throw Error(path + ": the output is a directory, not a file name", ErrorKind::Output);
  if (fs::is_directory(p, ec)) throw Error(path + ": is a directory", ErrorKind::Output);
  temp_ = (dir / ("." + p.filename().string() + ".wquant-tmp-" + std::to_string(::getpid()))).string();
  slot_ = register_temp(temp_);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int e = errno;
    unregister_temp(slot_);
    throw Error(path + ": cannot write in " + dir.string() + ": " + std::strerror(e), ErrorKind::Output);
  }
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
  unregister_temp(slot_);
}

void OutputFile::fail(const std::string& what, int err) {
  const std::string reason = err == ENOSPC ? std::string("disk full") : std::string(std::strerror(err));
  throw Error(path_ + ": " + what + ": " + reason, ErrorKind::Output);
}

void OutputFile::flush() {
  size_t done = 0;
  while (done < used_) {
    const ssize_t w = ::write(fd_, buf_.data() + done, used_ - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write failed", errno);
    }
    done += size_t(w);
  }
  used_ = 0;
}

void OutputFile::write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  offset_ += n;
  if (used_ + n <= buf_.size()) {
    std::memcpy(buf_.data() + used_, p, n);
    used_ += n;
    return;
  }
  flush();
  if (n >= buf_.size()) {  // large payloads go straight to the file
    size_t done = 0;
    while (done < n) {
      const ssize_t w = ::write(fd_, p + done, n - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail("write failed", errno);
      }
      done += size_t(w);
    }
    return;
  }
  std::memcpy(buf_.data(), p, n);
  used_ = n;
}

void OutputFile::pad_to(uint64_t alignment) {
  static const uint8_t zeros[256] = {};
  uint64_t pad = (alignment - offset_ % alignment) % alignment;
  while (pad) {
    const size_t n = size_t(pad < sizeof zeros ? pad : sizeof zeros);
    write(zeros, n);
    pad -= n;
  }
}

void OutputFile::patch(uint64_t at, const void* data, size_t n) {
  if (at + n > offset_) throw Error(path_ + ": patch past the written bytes", ErrorKind::Internal);
  flush();
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::pwrite(fd_, static_cast<const uint8_t*>(data) + done, n - done, off_t(at + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write failed", errno);
    }
    done += size_t(w);
  }
}

void OutputFile::commit() {
  flush();
  if (::fsync(fd_) != 0) fail("fsync failed", errno);
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail("close failed", errno);
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0) fail("cannot rename the finished file into place", errno);
  committed_ = true;
}

}  // namespace wq
