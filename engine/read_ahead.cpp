#include "engine/read_ahead.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "engine/error.h"

namespace wq {

ReadAhead read_ahead_from_env() {
  const char* v = std::getenv("WQUANT_READAHEAD");
  if (!v || !*v) return ReadAhead::Pread;
  const std::string s = v;
  for (ReadAhead r : {ReadAhead::Off, ReadAhead::WillNeed, ReadAhead::Populate, ReadAhead::Touch, ReadAhead::Pread}) {
    if (s == read_ahead_name(r)) return r;
  }
  throw Error("WQUANT_READAHEAD: expected pread, populate, touch, willneed or off, got '" + s + "'", ErrorKind::Usage);
}

const char* read_ahead_name(ReadAhead r) {
  switch (r) {
    case ReadAhead::Off: return "off";
    case ReadAhead::WillNeed: return "willneed";
    case ReadAhead::Populate: return "populate";
    case ReadAhead::Touch: return "touch";
    case ReadAhead::Pread: return "pread";
  }
  return "?";
}

size_t bytes_from_env(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  const std::string s = v;
  size_t n = 0;
  bool ok = s.size() <= 15;  // (no overflow below)
  for (char c : s) {
    ok = ok && c >= '0' && c <= '9';
    n = n * 10 + size_t(c - '0');
  }
  if (!ok || n == 0) throw Error(std::string(name) + ": expected a positive number of bytes, got '" + s + "'", ErrorKind::Usage);
  return n;
}

namespace {

void touch_pages(const uint8_t* begin, const uint8_t* end, size_t page) {
  uint8_t sink = 0;
  for (const volatile uint8_t* q = begin; q < end; q += page) sink ^= *q;
  asm volatile("" : : "r"(sink));  // keep the loads
}

}  // namespace

void read_ahead(const uint8_t* p, size_t n, ReadAhead how) {
  if (!p || n == 0 || how == ReadAhead::Off) return;
  static const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  // madvise wants a page-aligned start; the first page may hold a neighbour's bytes too,
  // which only brings those in earlier.
  auto* begin = reinterpret_cast<uint8_t*>(reinterpret_cast<uintptr_t>(p) / page * page);
  const uint8_t* end = p + n;
  const size_t len = size_t(end - begin);
  switch (how) {
    case ReadAhead::WillNeed:
    case ReadAhead::Pread:  // the tiles are pread: only start the file's read-in
      ::madvise(begin, len, MADV_WILLNEED);
      return;
    case ReadAhead::Populate:
#ifdef MADV_POPULATE_READ
      if (::madvise(begin, len, MADV_POPULATE_READ) == 0) return;
#endif
      touch_pages(begin, end, page);  // an older kernel: EINVAL
      return;
    case ReadAhead::Touch:
      touch_pages(begin, end, page);
      return;
    case ReadAhead::Off:
      return;
  }
}

}  // namespace wq
