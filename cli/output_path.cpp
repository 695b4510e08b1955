#include "cli/output_path.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include "cli/console.h"
#include "engine/error.h"

namespace wq::cli {

std::string keep_split_prefix(const std::string& out) {
  const std::string suffix = ".gguf";
  std::string prefix = out;
  if (out.size() >= suffix.size() && out.compare(out.size() - suffix.size(), suffix.size(), suffix) == 0) {
    prefix.resize(out.size() - suffix.size());
  } else if (out.find(suffix) != std::string::npos) {
    throw Error(out + ": with --keep-split OUT is PREFIX or PREFIX.gguf (shards PREFIX-00001-of-0000N.gguf ...); "
                      "llama-quantize would cut the last 5 characters off this name",
                ErrorKind::Usage);
  }
  if (prefix.empty() || prefix.back() == '/') {
    throw Error(out + ": with --keep-split OUT is PREFIX or PREFIX.gguf, and PREFIX must name a file (shards "
                      "PREFIX-00001-of-0000N.gguf ...)",
                ErrorKind::Usage);
  }
  return prefix;
}

void check_free_space(const std::string& out, uint64_t bytes) {
  struct statvfs vfs;
  // Unknown (or a pseudo file system such as /proc, which reports no blocks at all): the
  // write itself will tell.
  if (::statvfs(parent_dir(out).c_str(), &vfs) != 0 || vfs.f_blocks == 0) return;
  const uint64_t avail = uint64_t(vfs.f_bavail) * uint64_t(vfs.f_frsize);
  if (avail < bytes) {
    throw Error(out + ": not enough disk space: the output needs " + format_bytes(bytes) + ", " + format_bytes(avail) +
                    " are available",
                ErrorKind::Output);
  }
}

uint64_t total_file_bytes(const std::vector<std::string>& files) {
  uint64_t total = 0;
  for (const std::string& f : files) {
    struct stat st;
    if (::stat(f.c_str(), &st) == 0) total += uint64_t(st.st_size);
  }
  return total;
}

}  // namespace wq::cli
