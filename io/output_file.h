// The one way wquant writes a file: into a temporary name beside the output, renamed
// over the final name only by commit(). A failure, an exception or Ctrl-C never leaves a
// partial file under the final name (the destructor, or the signal handler through
// remove_temp_outputs_from_signal, unlinks the temporary file).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace wq {

class OutputFile {
 public:
  // Creates <dir>/.<name>.wquant-tmp-<pid> (<name> cut to fit NAME_MAX), after removing
  // such files of <name> whose pid is dead (left by a killed run). Throws Error
  // (ErrorKind::Output) naming the directory if it does not exist or cannot be written.
  explicit OutputFile(const std::string& path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  // Bytes written so far (buffered ones included).
  uint64_t offset() const { return offset_; }

  void write(const void* data, size_t n);
  // Zero bytes up to the next multiple of alignment.
  void pad_to(uint64_t alignment);
  // Overwrites bytes already written at [at, at + n) (e.g. a header field known only at
  // the end). at + n must not exceed offset().
  void patch(uint64_t at, const void* data, size_t n);
  // Flush, fsync, rename to the final name. A file at the final name is replaced only if
  // it was there when this OutputFile was created; one that appeared since (a concurrent
  // run) makes commit() throw instead. Throws Error naming the output on failure (and the
  // temporary file is then removed).
  void commit();

 private:
  void flush();
  [[noreturn]] void fail(const std::string& what, int err);

  std::string path_, temp_;
  int fd_ = -1;
  std::vector<uint8_t> buf_;
  size_t used_ = 0;
  uint64_t offset_ = 0;
  bool committed_ = false;
  bool replace_ = false;  // OUT existed when the run started: commit() may replace it
  int slot_ = -1;
};

// Async-signal-safe: unlinks every temporary output still open. For SIGINT/SIGTERM
// handlers; the process must exit right after.
void remove_temp_outputs_from_signal();

}  // namespace wq
