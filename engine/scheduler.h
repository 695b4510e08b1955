// Threads: one oneTBB task_arena of N threads, no pool of our own. Work is cut into
// tiles whose boundaries depend only on the tensor's shape, never on the thread count,
// so every per-tile result, and any reduction done over tiles in tile order, is the same
// for 1 or 64 threads.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include <tbb/global_control.h>
#include <tbb/task_arena.h>


namespace wq {

// The CPUs this process may run on (its affinity mask, which taskset and container
// cpusets narrow; the hardware's count where the mask cannot be read).
int usable_cpus();

class Scheduler {
 public:
  // threads <= 0 means every usable CPU (usable_cpus). More threads than CPUs is allowed
  // here (tests use it); the command line caps --threads at usable_cpus().
  explicit Scheduler(int threads);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  int threads() const { return threads_; }
  // Runs f inside the arena; parallel algorithms called from f use its threads.
  void run(const std::function<void()>& f);

 private:
  int threads_;
  std::unique_ptr<tbb::global_control> control_;
  std::unique_ptr<tbb::task_arena> arena_;
};

// Rows per tile for a row of `row_bytes` input bytes: tiles of about 256 KiB of input,
// at least one row. A function of the shape only.
size_t tile_rows_for(size_t rows, size_t row_bytes);

// Calls body(tile_begin, tile_end) for consecutive tiles of `tile` rows covering
// [0, rows), in parallel on the current arena.
void parallel_row_tiles(size_t rows, size_t tile, const std::function<void(size_t, size_t)>& body);

}  // namespace wq
