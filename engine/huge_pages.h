// Memory on 2 MiB pages for the buffers of 1 MiB and more (engine/output_bytes.h, the
// output file's write buffers, the ONNX band buffers), and the pages of freed ones kept
// for the next.
//
// Why keep them: on these VMs memory a process touches for the first time is what costs
// (the host backs it as it is touched): a stand-alone program (2026-12-07) touched 48 MiB
// of fresh 2 MiB pages in 31-85 ms of CPU, and the same 48 MiB moved into one new range
// by mremap (8 calls, 0.5 ms) in 2.2 ms. A conversion frees large buffers as it goes (a
// pool buffer grown for a larger tensor, the ONNX band buffers grown for a wider matrix,
// the writer's per-tensor arrays) and maps new ones: kept pages serve the new ones, so
// what is faulted in fresh is about the conversion's peak, not the sum of its growths.
//
// A request takes the smallest kept run that holds it (the rest stays kept); where none
// does, a new range is mapped and kept runs are moved into it from its start (mremap
// moves their page-table entries, 2 MiB at a time, without copying), the rest of it
// fresh. Kept pages are in the process's RSS, but never more than it has already held at
// once: a request maps new memory only for what the kept runs cannot give. Pages are kept
// only while a KeepFreedPages lives (a pipeline run makes one) and at most kKeepAtMost;
// when the last one ends, every kept page goes back to the system, so outside a run a
// freed buffer is unmapped at once, as any mapping.
#pragma once

#include <cstddef>
#include <cstdint>

// Under valgrind, memory handed out (a fresh mapping is zeros, a reused one holds an
// earlier buffer's bytes) is marked undefined, so the memcheck step of scripts/test.sh
// still sees any output byte no producer wrote (huge_pages.cpp; the pipeline's buffer
// pool for buffers it hands out again). Outside valgrind the request is a few
// instructions that do nothing.
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define WQ_MARK_UNDEFINED(p, n) VALGRIND_MAKE_MEM_UNDEFINED((p), (n))
#else
#define WQ_MARK_UNDEFINED(p, n) ((void)(p), (void)(n))
#endif

namespace wq::huge_pages {

constexpr size_t kPage = size_t(2) << 20;
constexpr size_t kKeepAtMost = size_t(1) << 30;

// bytes rounded up to whole 2 MiB pages: what take maps and give keeps.
inline size_t body_bytes(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

// At least `bytes` of readable, writable memory starting on a 2 MiB boundary, asked for 2
// MiB pages (MADV_HUGEPAGE); its contents are whatever kept pages held (a fresh page is
// zeros). nullptr where the system has no memory.
void* take(size_t bytes);
// Gives back what take(bytes) returned: kept for a later take while a KeepFreedPages
// lives, else unmapped.
void give(void* p, size_t bytes);
// Bytes kept now, and bytes of new memory handed out since the process started (tests).
size_t kept_bytes();
uint64_t fresh_bytes();

// Freed pages are kept while one of these lives (any thread); the last one to end
// returns them all to the system.
class KeepFreedPages {
 public:
  KeepFreedPages();
  ~KeepFreedPages();
  KeepFreedPages(const KeepFreedPages&) = delete;
  KeepFreedPages& operator=(const KeepFreedPages&) = delete;
};

}  // namespace wq::huge_pages
