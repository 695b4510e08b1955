#include "io/background_writer.h"

#include <cerrno>

#include <unistd.h>

namespace wq {

WriteResult pwrite_all(int dfd, int fd, size_t block, const uint8_t* p, size_t n, uint64_t at) {
  WriteResult r;
  int use = dfd >= 0 && at % block == 0 ? dfd : fd;
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::pwrite(use, p + done, n - done, off_t(at + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (use == dfd && errno == EINVAL) {
        r.refused = true;
        use = fd;
        continue;
      }
      r.err = errno;
      return r;
    }
    done += size_t(w);
    if (use == dfd && (at + done) % block != 0) use = fd;
  }
  return r;
}

BackgroundWriter::BackgroundWriter() : thread_([this] { run(); }) {}

BackgroundWriter::~BackgroundWriter() {
  {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [this] { return !busy_; });
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void BackgroundWriter::submit(int dfd, int fd, size_t block, const uint8_t* p, size_t n, uint64_t at, const uint8_t* p2,
                              size_t n2) {
  {
    std::lock_guard<std::mutex> lock(m_);
    dfd_ = dfd;
    fd_ = fd;
    block_ = block;
    p_ = p;
    n_ = n;
    p2_ = p2;
    n2_ = n2;
    at_ = at;
    result_ = Result{};
    busy_ = true;
  }
  cv_.notify_all();
}

BackgroundWriter::Result BackgroundWriter::wait() {
  std::unique_lock<std::mutex> lock(m_);
  cv_.wait(lock, [this] { return !busy_; });
  const Result r = result_;
  result_ = Result{};
  return r;
}

bool BackgroundWriter::busy() {
  std::lock_guard<std::mutex> lock(m_);
  return busy_;
}

void BackgroundWriter::run() {
  std::unique_lock<std::mutex> lock(m_);
  for (;;) {
    cv_.wait(lock, [this] { return busy_ || stop_; });
    if (busy_) {
      const int dfd = dfd_, fd = fd_;
      const size_t block = block_, n = n_, n2 = n2_;
      const uint8_t *p = p_, *p2 = p2_;
      const uint64_t at = at_;
      lock.unlock();
      Result r = pwrite_all(dfd, fd, block, p, n, at);
      if (!r.err && n2) {
        const Result r2 = pwrite_all(dfd, fd, block, p2, n2, at + n);
        r.err = r2.err;
        r.refused = r.refused || r2.refused;
      }
      lock.lock();
      result_ = r;
      busy_ = false;
      cv_.notify_all();
    } else {
      return;  // stop_, nothing in flight
    }
  }
}

}  // namespace wq
