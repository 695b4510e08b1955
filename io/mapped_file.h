// A whole file mapped read-only. Every access goes through span(), which checks the
// range against the file size (overflow-safe) and throws an Error naming the file and
// what was being read, so a truncated or hostile file never reads out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace wq {

// Throws, naming `path`, unless `st_mode` (its fstat) is a regular file's: a FIFO, socket
// or device is no model (and a read of a FIFO would wait for a writer).
void require_regular_file(unsigned st_mode, const std::string& path);

// The path of the mapped input holding `addr`, or nullptr: for the SIGBUS handler
// (cli/run_support.cpp), which names the file that shrank under it (an ONNX model's
// external data, a shard) rather than the model the user named. Async-signal-safe: it only
// reads a fixed table of the live mappings that MappedFile keeps.
const char* mapped_path_at(const void* addr) noexcept;

class MappedFile {
 public:
  // Throws Error (ErrorKind::Input) naming the path if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  const uint8_t* data() const { return data_; }
  // The mapping and the open file, for views that may pread their tiles (engine/tensor.h).
  MappedSource source() const { return MappedSource{data_, size_, fd_}; }

  // [offset, offset + len) of the file; throws naming `what` if it is not inside.
  const uint8_t* span(uint64_t offset, uint64_t len, const std::string& what) const;
  // True if [offset, offset + len) lies inside the file.
  bool contains(uint64_t offset, uint64_t len) const { return offset <= size_ && len <= size_ - offset; }

  // The caller is done with [offset, offset + len): drop those pages from this process's
  // memory (they stay in the page cache), so streaming a model larger than RAM keeps the
  // resident set bounded. Later reads fault the pages back in.
  void release(uint64_t offset, uint64_t len) const;

 private:
  std::string path_;
  uint64_t size_ = 0;
  const uint8_t* data_ = nullptr;
  int fd_ = -1;  // kept open for pread (RowSource::tile)
  int slot_ = -1;  // in mapped_path_at's table, or -1 (full, or nothing mapped)
};

}  // namespace wq
