#include "engine/scheduler.h"

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <thread>

#ifdef __linux__
#include <sched.h>
#endif

namespace wq {

int usable_cpus() {
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

Scheduler::Scheduler(int threads) {
  const int cores = usable_cpus();
  threads_ = threads > 0 ? threads : cores;
  // task_arena(n) alone never gives more threads than the global limit (the core count):
  // raised for more threads than cores (tests ask for that). Only then: oneTBB takes the
  // least of the limits alive at once, so a limit set by every run would cap another
  // run of the same process (the public API's, from two threads) and print a warning.
  if (threads_ > cores) {
    control_ = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, size_t(threads_));
  }
  arena_ = std::make_unique<tbb::task_arena>(threads_);
}

Scheduler::~Scheduler() = default;

void Scheduler::run(const std::function<void()>& f) { arena_->execute(f); }

size_t tile_rows_for(size_t rows, size_t row_bytes) {
  const size_t target = 256 * 1024;
  size_t t = row_bytes ? target / row_bytes : rows;
  t = std::max<size_t>(t, 1);
  return std::min(t, std::max<size_t>(rows, 1));
}

void parallel_row_tiles(size_t rows, size_t tile, const std::function<void(size_t, size_t)>& body) {
  if (rows == 0) return;
  tile = std::max<size_t>(tile, 1);
  const size_t ntiles = (rows + tile - 1) / tile;
  if (ntiles == 1) {
    body(0, rows);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<size_t>(0, ntiles, 1),
                    [&](const tbb::blocked_range<size_t>& r) {
                      for (size_t t = r.begin(); t < r.end(); ++t) {
                        body(t * tile, std::min(rows, (t + 1) * tile));
                      }
                    },
                    tbb::simple_partitioner());
}

}  // namespace wq
