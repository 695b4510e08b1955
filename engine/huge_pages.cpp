#include "engine/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace wq::huge_pages {
namespace {

struct Run {
  uintptr_t at;
  size_t bytes;  // whole pages
};

std::mutex kept_mutex;
std::vector<Run> kept;  // runs of whole 2 MiB pages, each 2 MiB-aligned
size_t kept_total = 0;
int keepers = 0;  // KeepFreedPages alive
std::atomic<uint64_t> fresh_total{0};  // new memory handed out

// A new private anonymous mapping of `body` bytes (whole pages) starting on a 2 MiB
// boundary: one page more is mapped as slack for the alignment and its unused ends are
// unmapped.
void* map_fresh(size_t body) {
  const size_t len = body + kPage;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const auto a = reinterpret_cast<uintptr_t>(p), start = (a + kPage - 1) / kPage * kPage;
  if (start > a) ::munmap(p, start - a);
  if (a + len > start + body) ::munmap(reinterpret_cast<void*>(start + body), a + len - (start + body));
#ifdef MADV_HUGEPAGE
  // Linux's default THP mode, "madvise", grants 2 MiB pages only when asked; 4 KiB pages
  // where refused.
  ::madvise(reinterpret_cast<void*>(start), body, MADV_HUGEPAGE);
#endif
  return reinterpret_cast<void*>(start);
}

}  // namespace

void* take(size_t bytes) {
  const size_t body = body_bytes(std::max<size_t>(bytes, 1));
  std::unique_lock<std::mutex> lock(kept_mutex);
  // The smallest kept run that holds the request: its first pages.
  size_t best = kept.size();
  for (size_t i = 0; i < kept.size(); ++i) {
    if (kept[i].bytes >= body && (best == kept.size() || kept[i].bytes < kept[best].bytes)) best = i;
  }
  if (best < kept.size()) {
    Run& r = kept[best];
    void* p = reinterpret_cast<void*>(r.at);
    r.at += body;
    r.bytes -= body;
    kept_total -= body;
    if (r.bytes == 0) kept.erase(kept.begin() + std::ptrdiff_t(best));
    lock.unlock();
    WQ_MARK_UNDEFINED(p, body);
    return p;
  }
  if (kept.empty()) {
    lock.unlock();
    void* p = map_fresh(body);
    if (p) {
      fresh_total += body;
      WQ_MARK_UNDEFINED(p, body);  // (zeros, but no producer wrote them)
    }
    return p;
  }
  // No run holds it: a new range, the kept runs moved to its start (each smaller than the
  // request), the fresh pages of the range after them.
  auto* to = static_cast<uint8_t*>(map_fresh(body));
  if (!to) return nullptr;
  size_t filled = 0;
  while (filled < body && !kept.empty()) {
    const Run r = kept.back();
    kept.pop_back();
    kept_total -= r.bytes;
    const size_t n = std::min(r.bytes, body - filled);
    void* from = reinterpret_cast<void*>(r.at);
    if (::mremap(from, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, to + filled) == MAP_FAILED) {
      ::munmap(from, r.bytes);  // (to + filled keeps its fresh pages)
      continue;
    }
    if (n < r.bytes) {
      kept.push_back({r.at + n, r.bytes - n});
      kept_total += r.bytes - n;
    }
    filled += n;
  }
  lock.unlock();
  fresh_total += body - filled;
  WQ_MARK_UNDEFINED(to, body);
  return to;
}

void give(void* p, size_t bytes) {
  if (!p) return;
  const size_t body = body_bytes(std::max<size_t>(bytes, 1));
  {
    std::lock_guard<std::mutex> lock(kept_mutex);
    if (keepers > 0 && kept_total + body <= kKeepAtMost) {
      kept.push_back({reinterpret_cast<uintptr_t>(p), body});
      kept_total += body;
      return;
    }
  }
  ::munmap(p, body);
}

KeepFreedPages::KeepFreedPages() {
  std::lock_guard<std::mutex> lock(kept_mutex);
  ++keepers;
}

KeepFreedPages::~KeepFreedPages() {
  std::vector<Run> runs;
  {
    std::lock_guard<std::mutex> lock(kept_mutex);
    if (--keepers > 0) return;
    runs.swap(kept);
    kept_total = 0;
  }
  for (const Run& r : runs) ::munmap(reinterpret_cast<void*>(r.at), r.bytes);
}

size_t kept_bytes() {
  std::lock_guard<std::mutex> lock(kept_mutex);
  return kept_total;
}

uint64_t fresh_bytes() { return fresh_total; }

}  // namespace wq::huge_pages
