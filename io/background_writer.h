// One write at a time on a thread of its own, so that the caller (OutputFile's O_DIRECT
// path, whose writes wait for the device) fills its next buffer meanwhile instead of
// blocking the serial writer stage of the pipeline.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

namespace wq {

struct WriteResult {
  int err = 0;           // errno of a failed write, 0 if it completed
  bool refused = false;  // the O_DIRECT descriptor refused it (EINVAL); it went through `fd` instead
};

// pwrite until p[0, n) is at `at`: through dfd (O_DIRECT; -1 for none) while the offset is
// aligned to `block`, through fd (buffered) where dfd refuses it (EINVAL) or a short write
// leaves the offset unaligned.
WriteResult pwrite_all(int dfd, int fd, size_t block, const uint8_t* p, size_t n, uint64_t at);

class BackgroundWriter {
 public:
  BackgroundWriter();
  // Waits for the write in flight (its result is dropped), then stops the thread.
  ~BackgroundWriter();
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;

  using Result = WriteResult;

  // Starts pwrite_all(dfd, fd, block, p, n, at) on the thread, then (unless it failed)
  // the same for p2[0, n2) at at + n. Both must stay untouched until the write has
  // finished (busy() false, or wait() returned). Only one write may be in flight: call
  // wait() first.
  void submit(int dfd, int fd, size_t block, const uint8_t* p, size_t n, uint64_t at, const uint8_t* p2 = nullptr,
              size_t n2 = 0);
  // Blocks until the write in flight (if any) has finished; returns its result.
  Result wait();
  // Whether a write is still in flight (its memory still read).
  bool busy();

 private:
  void run();

  std::mutex m_;
  std::condition_variable cv_;
  bool busy_ = false, stop_ = false;
  int dfd_ = -1, fd_ = -1;
  size_t block_ = 4096;
  const uint8_t* p_ = nullptr;
  size_t n_ = 0;
  const uint8_t* p2_ = nullptr;
  size_t n2_ = 0;
  uint64_t at_ = 0;
  Result result_;
  std::thread thread_;  // last: starts after the state above exists
};

}  // namespace wq
