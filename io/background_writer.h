// Writes queued in order on a thread of their own, so that the caller (OutputFile's
// O_DIRECT path, whose writes wait for the device) goes on filling buffers and producing
// payloads instead of blocking the serial writer stage of the pipeline. Each write has a
// ticket, so the caller knows when memory it lent to one (OutputFile::write_held) is no
// longer read; how many it lets queue up is its choice (io/output_file.cpp).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
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
  // Waits for every write queued (their results are dropped), then stops the thread.
  ~BackgroundWriter();
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;

  using Result = WriteResult;

  // Queues pwrite_all(dfd, fd, block, p, n, at), then (unless it failed) the same for
  // p2[0, n2) at at + n, and returns the write's ticket: 1 for the first, then 2, 3, ...
  // Both regions, and the descriptors, must stay valid until finished(ticket). Writes run
  // one at a time in ticket order; after a failed one the rest are skipped (the file is
  // lost anyway) and the failure is reported.
  uint64_t submit(int dfd, int fd, size_t block, const uint8_t* p, size_t n, uint64_t at, const uint8_t* p2 = nullptr,
                  size_t n2 = 0);
  // Blocks until every write up to `ticket` has finished; returns what the writes finished
  // since the last wait() reported (the first error; refused if any was), and forgets it.
  Result wait(uint64_t ticket);
  // wait() for everything queued.
  Result wait_all();
  // Whether write `ticket` (and every one before it) has finished: its memory is no longer read.
  bool finished(uint64_t ticket);

 private:
  struct Job {
    int dfd, fd;
    size_t block;
    const uint8_t* p;
    size_t n;
    uint64_t at;
    const uint8_t* p2;
    size_t n2;
  };
  void run();

  std::mutex m_;
  std::condition_variable cv_;  // jobs queued, or one finished
  std::deque<Job> queue_;       // front: in flight once the thread took it
  uint64_t submitted_ = 0, done_ = 0;
  bool stop_ = false;
  bool failed_ = false;  // a write failed: the ones after it are skipped
  Result result_;  // merged over the writes finished since the last wait()
  std::thread thread_;  // last: starts after the state above exists
};

}  // namespace wq
