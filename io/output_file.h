// The one way wquant writes a file: into a temporary name beside the output, renamed
// over the final name only by commit(). A failure, an exception or Ctrl-C never leaves a
// partial file under the final name (the destructor, or the signal handler through
// remove_temp_outputs_from_signal, unlinks the temporary file).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"

namespace wq {

// How the bytes reach the disk; chosen by environment variables so that the cost of each
// way can be measured on a given machine (bench/e2e_bench.sh):
//   WQUANT_OUTPUT_IO=direct (default): O_DIRECT from aligned 4 MiB buffers, each byte
//     copied once (into a buffer; none where the caller placed it for write_held) and
//     never held in the page cache. A full buffer (or a held payload) is
//     written by a thread of the file's own (io/background_writer.h) while the next one
//     fills, so the caller waits for the device only when it is two buffers ahead
//     (output_file.cpp says why not more); the
//     unaligned tail of the file and patches of earlier bytes go through the page cache.
//     Where the file system refuses O_DIRECT (at open, or EINVAL on a write) the file
//     continues buffered, with the same bytes.
//     (Measured 2026-12-02 on the 1.1 B model, 2 threads, buffered and direct alternated
//     5 times, medians: f32 GGUF -> Q4_0 with a Q8_0 output matrix 1.97 s vs 2.18 s wall,
//     1.89 vs 2.57 s CPU; bf16 safetensors -> .wq 1.68 vs 2.23 s, 1.63 vs 2.44 s CPU;
//     bf16 GGUF -> Q4_0 1.94 vs 2.40 s, 2.11 vs 2.88 s CPU. Before the writes were
//     asynchronous, direct saved CPU but blocked the serial writer stage.)
//   WQUANT_OUTPUT_IO=buffered: write(2) through the page cache.
//   Buffered output with fsync starts the writeback of every 16 MiB as it is written
//   (Linux's sync_file_range), so the disk works while wquant computes; the final fsync
//   then waits for the tail only (ext4 would otherwise hold the whole file dirty until it).
//   WQUANT_NO_FSYNC=1: commit() skips the fsync. A measuring aid only (the cost of the
//     fsync apart from the rest): the output is then not durable when wquant exits.
struct OutputIo {
  bool direct = true;
  bool fsync = true;
  size_t direct_block = 4096;  // O_DIRECT alignment of buffer, lengths and offsets
  // From the variables above; another value of WQUANT_OUTPUT_IO (or WQUANT_NO_FSYNC other
  // than 0/1) throws Error (ErrorKind::Usage) naming the variable.
  static OutputIo from_env();
};

class BackgroundWriter;
struct WriteResult;

// How many outputs can be open, or placed by commit_removable() and not yet kept, at once:
// the slots of the signal handler's table (io/output_file.cpp). Past it, a commit_removable()
// throws, so a writer of many files (--keep-split) checks its count before any work.
inline constexpr size_t kMaxGuardedOutputs = 1024;

class OutputFile;

// Thrown where every file of the result is under its final name but the directory's
// fsync after a rename failed: the result is complete, but its names may not survive a
// crash (exit 4, the message says so). A file system that cannot sync a directory at all
// (EINVAL, as CIFS says) is no failure.
class NotDurable : public Error {
 public:
  using Error::Error;
};

// Places the files of one result (ONNX's graph and data, the shards of a split model) under
// their final names, in order, all or none: every file is finished (written and synced)
// before any rename; each file it replaces is linked aside first, and if a rename fails,
// the files already placed are put back as they were (the user's earlier files, or none)
// before it throws. Where the directory's fsync after a rename fails, the renames go on
// and NotDurable is thrown once every file is in place. SIGINT, SIGTERM and the other
// terminating signals that arrive during the renames wait for them
// (signal_in_commit), so a signal never leaves a mixed set: the earlier files are
// put back, then it acts. Once every file is in place a signal is too late to undo them,
// as after commit()'s rename: it ends the run, exit 0, the result complete (once the
// directory is synced and the backups are gone). (A SIGKILL or a power loss between two
// renames can leave a mixed set; no POSIX call replaces two names at once.)
void commit_together(const std::vector<OutputFile*>& files);

// For the signal handlers (SIGINT, SIGTERM and the other terminating signals sent).
enum class SignalInCommit {
  Act,            // no result is being placed: remove the temporary outputs, end the run
  Wait,           // noted: return at once; it acts when the renames are done or undone
  ResultInPlace,  // the result is in place: call interrupted_with_result_in_place()
};
SignalInCommit signal_in_commit(int sig);
// Says on stderr that the run was interrupted once its result was in place, and exits 0
// (async-signal-safe; leaves every file where it is: the params file written for OUT too).
[[noreturn]] void interrupted_with_result_in_place();

class OutputFile {
 public:
  // Creates <dir>/.<name>.wquant-tmp-<pid> (<name> cut to fit NAME_MAX), after removing
  // such files of <name> whose pid is dead (left by a killed run). Throws Error
  // (ErrorKind::Output) naming the directory if it does not exist or cannot be written.
  explicit OutputFile(const std::string& path) : OutputFile(path, OutputIo::from_env()) {}
  OutputFile(const std::string& path, const OutputIo& io);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  // Bytes written so far (buffered ones included).
  uint64_t offset() const { return offset_; }
  // Whether bulk writes still go through O_DIRECT (false when buffered was asked, or the
  // file system refused it).
  bool direct() const { return dfd_ >= 0; }
  // Whether a write through O_DIRECT was refused (EINVAL) and the file went on buffered.
  bool direct_refused() const { return direct_refused_; }

  void write(const void* data, size_t n);
  // write(), except that where the output is direct and data's address agrees with the
  // file offset modulo the direct block (the caller placed it so: direct_phase()), the
  // aligned middle of data is written by the background thread straight from the
  // caller's memory, without the copy into the write buffer. Returns that write's ticket
  // (0: copied, nothing held): data must then stay alive and untouched until
  // finished(ticket), at the latest until the file is finished or destroyed (whose
  // destructor waits for the writes). One such write is in flight at a time, like a full
  // buffer: the next one waits for it. (A failure of the write is reported by a later
  // call that waits for it, at the latest commit().)
  uint64_t write_held(const void* data, size_t n);
  // Payloads shorter than this are always copied (a second system call would cost more).
  static constexpr size_t kHeldMin = size_t(64) << 10;
  // Where in a file a payload of `bytes` should start for write_held to take it without
  // a copy from a page-aligned buffer: a 4 KiB boundary (the default direct block) from
  // kHeldMin up; `otherwise`, the format's own alignment, below.
  static constexpr uint64_t held_alignment(uint64_t bytes, uint64_t otherwise) {
    return bytes >= kHeldMin ? 4096 : otherwise;
  }
  // Whether the write of that ticket has finished (tickets are in write order: so has
  // every one before it). True for 0.
  bool finished(uint64_t ticket);
  // Where in a direct block the next byte written would land: a caller places its payload
  // at this offset from an aligned address for write_held to write it without a copy.
  size_t direct_phase(uint64_t at) const { return size_t(at % io_.direct_block); }
  // Zero bytes up to the next multiple of alignment.
  void pad_to(uint64_t alignment);
  // Overwrites bytes already written at [at, at + n) (e.g. a header field known only at
  // the end). at + n must not exceed offset().
  void patch(uint64_t at, const void* data, size_t n);
  // Flush, fsync and close the temporary file, and free the write buffer, without the
  // rename: for outputs of several files (GGUF shards) that are renamed together once all
  // are complete. Nothing may be written or patched after it. commit() does it if needed.
  void finish();
  // Flush, fsync, rename to the final name. A file at the final name is replaced only if
  // it was there when this OutputFile was created; one that appeared since (a concurrent
  // run) makes commit() throw instead. Throws Error naming the output on failure (and the
  // temporary file is then removed), or NotDurable after the rename where the directory's
  // fsync failed (the file then stays in place). With commit_removable(), the file is
  // removed again in that case, and Error thrown. The file is the run's result: a signal
  // during the rename waits for it, and one after it is too late to stop the run (signal_in_commit).
  void commit();
  // commit(), after which the file stays removable by SIGINT/SIGTERM under its final name
  // until keep(): for results of several files renamed one after another (the shards of a
  // split model, ONNX's data file, the params file), none of which may outlive an
  // interrupted run alone. The final name is guarded from before the rename, so there is
  // no moment in which a signal would leave the file (nor, if the rename has not happened,
  // remove the user's file it was to replace). The caller removes it if a later part fails.
  void commit_removable();
  // The file committed by commit_removable() is the user's: a signal no longer removes it.
  void keep();
  // Whether commit() will replace a file that was at the final name when this was created.
  bool replaces() const { return replace_; }

 private:
  friend void commit_together(const std::vector<OutputFile*>& files);
  // The rename; with sync_dir the directory's fsync after it (commit_together does its own).
  void place(bool removable, bool sync_dir = true);
  int sync_directory() const;  // 0, or the errno of the directory's fsync that failed
  // The write buffers are on 2 MiB pages (engine/huge_pages.h):
  // from posix_memalign, their 4 KiB pages were 2 000 first-touch faults a conversion
  // (perf record -e page-faults, the bf16 -> .wq job, 2026-12-04), each costly on these VMs.
  struct BufferDeleter {
    void operator()(uint8_t* p) const;
  };
  // Writes the buffer's first n bytes at file_off_ (n a multiple of the direct block
  // while direct() holds, except for the file's last bytes).
  void flush_buffer(size_t n);
  void write_at(int fd, const uint8_t* p, size_t n, uint64_t at);
  void take(const WriteResult& r);
  // Direct output: waits for the background write in flight, if any, and takes its result.
  void drain();
  void hand_over_buffer();
  // Buffered, durable output: starts the disk writing what has been handed to the file
  // (sync_file_range's WRITE, which does not wait) every few MiB, so the fsync at the end
  // waits for the last few MiB instead of the whole file.
  void start_writeback();
  [[noreturn]] void fail(const std::string& what, int err);

  std::string path_, temp_;
  OutputIo io_;
  int fd_ = -1;   // buffered descriptor: always open
  int dfd_ = -1;  // O_DIRECT descriptor of the same file, while in use
  std::unique_ptr<uint8_t, BufferDeleter> buf_;
  std::unique_ptr<uint8_t, BufferDeleter> spare_;  // direct: the buffer being written while buf_ fills
  std::unique_ptr<BackgroundWriter> bg_;         // direct: writes spare_ (and held payloads) meanwhile
  size_t used_ = 0;
  uint64_t offset_ = 0;    // bytes written by the caller
  uint64_t file_off_ = 0;  // bytes handed to the file (offset_ - used_)
  uint64_t writeback_ = 0; // bytes whose writeback start_writeback() has started
  bool committed_ = false;
  bool direct_refused_ = false;
  bool replace_ = false;  // OUT existed when the run started: commit() may replace it
  int slot_ = -1;
  bool removable_ = false;  // committed by commit_removable(), not yet kept
};

// Async-signal-safe: unlinks every temporary output still open (and every file that
// OutputFile::commit_removable() placed and that is not yet kept). For SIGINT/SIGTERM
// handlers; the process must exit right after.
void remove_temp_outputs_from_signal();

// Whether `file` is named as a temporary file of OUT `out` (`.<OUT>.wquant-tmp-<pid>` in
// OUT's folder): OutputFile removes those whose pid is gone (a killed run's), so an input
// named so must be refused before OUT is opened.
bool is_temp_name_of(const std::string& file, const std::string& out);

// Removes OUT's temporary files whose run is gone, as OutputFile(OUT) does: for a file a
// run may or may not write (ONNX's OUT.data), so a killed run's is removed either way.
void remove_dead_temporaries(const std::string& out);

}  // namespace wq
