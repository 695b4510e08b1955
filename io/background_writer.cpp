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
    cv_.wait(lock, [this] { return done_ == submitted_; });
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t BackgroundWriter::submit(int dfd, int fd, size_t block, const uint8_t* p, size_t n, uint64_t at,
                                  const uint8_t* p2, size_t n2) {
  uint64_t ticket;
  {
    std::lock_guard<std::mutex> lock(m_);
    queue_.push_back(Job{dfd, fd, block, p, n, at, p2, n2});
    ticket = ++submitted_;
  }
  cv_.notify_all();
  return ticket;
}

BackgroundWriter::Result BackgroundWriter::wait(uint64_t ticket) {
  std::unique_lock<std::mutex> lock(m_);
  cv_.wait(lock, [&] { return done_ >= ticket; });
  const Result r = result_;
  result_ = Result{};
  return r;
}

BackgroundWriter::Result BackgroundWriter::wait_all() {
  uint64_t last;
  {
    std::lock_guard<std::mutex> lock(m_);
    last = submitted_;
  }
  return wait(last);
}

bool BackgroundWriter::finished(uint64_t ticket) {
  std::lock_guard<std::mutex> lock(m_);
  return done_ >= ticket;
}

void BackgroundWriter::run() {
  std::unique_lock<std::mutex> lock(m_);
  for (;;) {
    cv_.wait(lock, [this] { return !queue_.empty() || stop_; });
    if (queue_.empty()) return;  // stop_, nothing queued
    const Job j = queue_.front();
    const bool failed = failed_;  // an earlier write failed: skip this one
    lock.unlock();
    Result r;
    if (!failed) {
      r = pwrite_all(j.dfd, j.fd, j.block, j.p, j.n, j.at);
      if (!r.err && j.n2) {
        const Result r2 = pwrite_all(j.dfd, j.fd, j.block, j.p2, j.n2, j.at + j.n);
        r.err = r2.err;
        r.refused = r.refused || r2.refused;
      }
    }
    lock.lock();
    queue_.pop_front();
    if (r.err) failed_ = true;
    if (!result_.err) result_.err = r.err;
    result_.refused = result_.refused || r.refused;
    ++done_;
    cv_.notify_all();
  }
}

}  // namespace wq
