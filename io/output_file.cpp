#include "io/output_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>

#include "engine/error.h"
#include "engine/huge_pages.h"
#include "io/background_writer.h"

namespace wq {
namespace {

// Live output paths, readable from a signal handler: fixed storage, each slot published
// with an atomic state after its paths are complete. A slot names a temporary file
// (kTemp), a file renamed to its final name that a signal must still remove (kPlaced:
// shards renamed one after another, all or none), or one in the middle of that rename
// (kRenaming: the final name is set before the rename, so no moment is unguarded).
// Enough for the shards of a split model (--keep-split), each a temporary file until the
// last is done: the storage is untouched (and costs no memory) until used.
constexpr int kSlots = int(kMaxGuardedOutputs);
constexpr size_t kPathMax = 4096;
enum SlotState : uint8_t { kFree, kTemp, kRenaming, kPlaced };
char g_paths[kSlots][kPathMax];  // the temporary name
char g_final[kSlots][kPathMax];  // the final name, for kRenaming and kPlaced
std::atomic<uint8_t> g_state[kSlots];

// The commit's state, one atomic so that a handler on any thread and the committing
// thread agree on who acts: kIdle; kCommitting (renames under way: a signal is deferred);
// kSignalled + sig (one came: the committer puts the earlier files back, then raises it);
// kPlacedResult / kPlacedSignalled (the result is under its final names, its directory being
// synced: a signal waits for that, then ends the run, exit 0, the result complete);
// kFinished (the result is in place and synced: a signal ends the run at once, exit 0).
constexpr int kFinished = -3, kPlacedSignalled = -2, kPlacedResult = -1, kIdle = 0, kCommitting = 1, kSignalled = 2;
std::atomic<int> g_commit{kIdle};

// The result is in place (defined below, after OutputFile::place).
void finish_result(bool act);

int register_temp(const std::string& p) {
  if (p.size() >= kPathMax) return -1;
  for (int i = 0; i < kSlots; ++i) {
    uint8_t expected = kFree;
    if (g_state[i].load() == kFree) {
      std::memcpy(g_paths[i], p.c_str(), p.size() + 1);
      if (g_state[i].compare_exchange_strong(expected, kTemp)) return i;
    }
  }
  return -1;
}

void unregister_temp(int slot) {
  if (slot >= 0) g_state[slot].store(kFree);
}

constexpr size_t kBuffer = 4u << 20;  // large sequential writes

constexpr const char* kTempMark = ".wquant-tmp-";

// "." + OUT's file name + ".wquant-tmp-": the temporary names of OUT start with this.
// OUT's name is cut so that the temporary name (with a pid of up to 10 digits) stays
// within NAME_MAX: a legal OUT name must never be refused because of it.
std::string temp_prefix(const std::string& name) {
  constexpr size_t kNameMax = 255, kPidDigits = 10, kOldMark = 4;  // (kOldMark: commit_together's "-old")
  const size_t room = kNameMax - 1 - std::strlen(kTempMark) - kPidDigits - kOldMark;
  std::string p = ".";  // appended, not "." + ...: GCC 12 warns falsely (-Wrestrict) on that operator+
  if (name.size() <= room) {
    p += name;
  } else {
    // Cut to fit, and the whole name's hash after the cut: names that differ only past it
    // (OUT and OUT.data, the shards of a long prefix) keep temporaries of their own.
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, 64 bits
    for (const unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
    char hex[18];
    std::snprintf(hex, sizeof hex, "~%016llx", static_cast<unsigned long long>(h));
    p.append(name, 0, room - 17);
    p += hex;
  }
  p += kTempMark;
  return p;
}

// Whether a temporary file name is commit_together's backup of a replaced file
// ("<temporary name>-old").
bool is_backup_name(const std::string& n) { return n.size() > 4 && n.compare(n.size() - 4, 4, "-old") == 0; }

// The pid of a temporary file name `n` of the OUT whose temp_prefix is `prefix`
// ("<prefix><pid>", or "<prefix><pid>-old", a backup), as its digits; "" when n is no such
// name.
std::string temp_pid_digits(const std::string& n, const std::string& prefix) {
  if (n.size() <= prefix.size() || n.compare(0, prefix.size(), prefix) != 0) return "";
  std::string digits = n.substr(prefix.size());
  if (is_backup_name(digits)) digits.resize(digits.size() - 4);
  if (digits.find_first_not_of("0123456789") != std::string::npos) return "";
  return digits;
}

// Removes temporary files of OUT (`final`) left by runs that were killed (SIGKILL, power
// loss): `.<OUT>.wquant-tmp-<pid>` whose pid no longer exists. A live pid's file is another
// run's work in progress and is left alone. A backup (`...-old`) that is a second name of
// OUT as it is now goes too; one that is not holds an earlier OUT, the only copy (a run
// that could not put it back, and said so, or one killed between its renames): kept, and
// said on stderr.
void remove_dead_leftovers(const std::string& dir, const std::string& prefix, const std::string& final) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    const std::string digits = temp_pid_digits(n, prefix);
    if (digits.empty() || digits.size() > 10) continue;
    const long long pid = std::stoll(digits);
    if (pid <= 0 || pid > INT32_MAX || pid == ::getpid()) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
    struct stat b, f;
    if (is_backup_name(n) && !(::fstatat(::dirfd(d), n.c_str(), &b, AT_SYMLINK_NOFOLLOW) == 0 && ::lstat(final.c_str(), &f) == 0 &&
                    b.st_ino == f.st_ino && b.st_dev == f.st_dev)) {
      const std::string line = "wquant: warning: " + (std::filesystem::path(dir) / n).string() + " holds an earlier " +
                               final + " that run " + digits + " could not put back (or was killed before it did); " +
                               "kept: rename it over " + final + " to restore it, or remove it (if " + final +
                               " is one file of a result of several, a shard or ONNX data, restore it only with the "
                               "other files of the same earlier result: alone it mixes two results)\n";
      [[maybe_unused]] const ssize_t w = ::write(STDERR_FILENO, line.data(), line.size());
      continue;
    }
    ::unlinkat(::dirfd(d), n.c_str(), 0);
  }
  ::closedir(d);
}

}  // namespace

void remove_dead_temporaries(const std::string& out) {
  const std::filesystem::path p(out);
  const std::filesystem::path dir = p.parent_path().empty() ? std::filesystem::path(".") : p.parent_path();
  remove_dead_leftovers(dir.string(), temp_prefix(p.filename().string()), out);
}

bool is_temp_name_of(const std::string& file, const std::string& out) {
  namespace fs = std::filesystem;
  const fs::path f(file), o(out);
  if (temp_pid_digits(f.filename().string(), temp_prefix(o.filename().string())).empty()) return false;
  std::error_code ec;
  const fs::path fd = f.parent_path().empty() ? fs::path(".") : f.parent_path();
  const fs::path od = o.parent_path().empty() ? fs::path(".") : o.parent_path();
  return fs::equivalent(fd, od, ec);
}

namespace {

// rename(from, to) that fails with EEXIST instead of replacing a file at `to`.
int rename_no_replace(const char* from, const char* to) {
  if (::renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return -1;
  // No RENAME_NOREPLACE on this file system: link() never replaces either.
  if (::link(from, to) == 0) {
    ::unlink(from);
    return 0;
  }
  if (errno == EEXIST) return -1;
  // No hard links either (some FUSE and network file systems): check, then rename.
  struct stat st;
  if (::lstat(to, &st) == 0) {
    errno = EEXIST;
    return -1;
  }
  return ::rename(from, to);
}

// The directory of `path` synced (the renames in it made durable); skipped without fsync.
// Returns 0, or the errno of the fsync that failed (a directory that cannot be opened
// read-only, as on some file systems, is not synced and is no failure).
int sync_directory_of(const std::string& path, bool fsync) {
  if (!fsync) return 0;
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 0;
  const int e = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return e == EINVAL ? 0 : e;  // (a directory this file system cannot sync: CIFS says EINVAL)
}

}  // namespace

OutputIo OutputIo::from_env() {
  OutputIo io;
  if (const char* v = std::getenv("WQUANT_OUTPUT_IO"); v && *v) {
    const std::string m = v;
    if (m == "buffered") io.direct = false;
    else if (m != "direct") throw Error("WQUANT_OUTPUT_IO: expected buffered or direct, got '" + m + "'", ErrorKind::Usage);
  }
  if (const char* v = std::getenv("WQUANT_NO_FSYNC"); v && *v) {
    const std::string m = v;
    if (m != "0" && m != "1") throw Error("WQUANT_NO_FSYNC: expected 0 or 1, got '" + m + "'", ErrorKind::Usage);
    io.fsync = m == "0";
  }
  return io;
}

void OutputFile::BufferDeleter::operator()(uint8_t* p) const { huge_pages::give(p, kBuffer); }

void remove_temp_outputs_from_signal() {
  const int saved = errno;
  for (int i = 0; i < kSlots; ++i) {
    switch (g_state[i].load()) {
      case kTemp:
        ::unlink(g_paths[i]);
        break;
      case kRenaming: {
        // The temporary name goes away only by the rename: where it is gone, the file is
        // under its final name (ours since the rename). Where both names are the same file
        // (rename_no_replace's link(), before its unlink), both go. A file of the user's
        // under the final name (not yet replaced) stays.
        struct stat t, f;
        if (::lstat(g_paths[i], &t) != 0) {
          ::unlink(g_final[i]);
          break;
        }
        if (::lstat(g_final[i], &f) == 0 && f.st_ino == t.st_ino && f.st_dev == t.st_dev) ::unlink(g_final[i]);
        if (::unlink(g_paths[i]) != 0 && errno == ENOENT) ::unlink(g_final[i]);  // renamed meanwhile (another thread)
        break;
      }
      case kPlaced:
        ::unlink(g_final[i]);
        break;
      default:
        break;
    }
  }
  errno = saved;
}

OutputFile::OutputFile(const std::string& path, const OutputIo& io) : path_(path), io_(io) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  fs::path dir = p.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw Error(path + ": the output directory " + dir.string() + " does not exist", ErrorKind::Output);
  }
  if (p.filename().empty()) throw Error(path + ": the output is a directory, not a file name", ErrorKind::Output);
  if (fs::is_directory(p, ec)) throw Error(path + ": is a directory", ErrorKind::Output);
  const std::string prefix = temp_prefix(p.filename().string());
  remove_dead_leftovers(dir.string(), prefix, path);
  temp_ = (dir / (prefix + std::to_string(::getpid()))).string();
  // Only a file that was there at the start may be replaced (the caller checked --force);
  // one that appears while we write (another run) is never clobbered.
  struct stat st;
  replace_ = ::lstat(path.c_str(), &st) == 0;
  slot_ = register_temp(temp_);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int e = errno;
    unregister_temp(slot_);
    throw Error(path + ": cannot write in " + dir.string() + ": " + std::strerror(e), ErrorKind::Output);
  }
  // (2 MiB-aligned: any direct block a file system asks for divides it.)
  void* mem = huge_pages::take(kBuffer);
  if (!mem) {
    ::close(fd_);
    ::unlink(temp_.c_str());
    unregister_temp(slot_);
    throw Error(path + ": cannot allocate the write buffer", ErrorKind::Output);
  }
  buf_.reset(static_cast<uint8_t*>(mem));
  // A second descriptor for the bulk: O_DIRECT is refused by some file systems at open
  // (then everything stays buffered) and by others at the first write (flush_buffer).
  if (io_.direct) dfd_ = ::open(temp_.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  if (dfd_ >= 0) {
    if (!(mem = huge_pages::take(kBuffer))) {
      ::close(dfd_);
      dfd_ = -1;  // no second buffer: buffered, as where O_DIRECT is refused
    } else {
      spare_.reset(static_cast<uint8_t*>(mem));
      try {
        bg_ = std::make_unique<BackgroundWriter>();
      } catch (const std::exception&) {  // std::system_error, std::bad_alloc
        // No thread to write in the background (a process or memory limit): buffered,
        // as without the second buffer. (It threw out of here, leaving the temporary file.)
        spare_.reset();
        ::close(dfd_);
        dfd_ = -1;
      }
    }
  }
}

OutputFile::~OutputFile() {
  bg_.reset();  // waits for the write in flight, which reads spare_ (or held memory) and uses the descriptors
  if (dfd_ >= 0) ::close(dfd_);
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
  unregister_temp(slot_);
}

// An errno in a message's words.
static std::string reason_of(int err) { return err == ENOSPC ? std::string("disk full") : std::string(std::strerror(err)); }

void OutputFile::fail(const std::string& what, int err) {
  throw Error(path_ + ": " + what + ": " + reason_of(err), ErrorKind::Output);
}

void OutputFile::write_at(int fd, const uint8_t* p, size_t n, uint64_t at) {
  const WriteResult r = pwrite_all(fd == dfd_ ? dfd_ : -1, fd_, io_.direct_block, p, n, at);
  take(r);
}

// What a write reported: O_DIRECT refused (EINVAL) means the rest goes buffered.
// (Nothing is queued behind it: every write waits for the one before, drain().)
void OutputFile::take(const WriteResult& r) {
  if (r.refused && dfd_ >= 0) {
    ::close(dfd_);
    dfd_ = -1;
    direct_refused_ = true;
  }
  if (r.err) fail("write failed", r.err);
}

void OutputFile::drain() {
  if (bg_) take(bg_->wait_all());
}

bool OutputFile::finished(uint64_t ticket) { return ticket == 0 || !bg_ || bg_->finished(ticket); }

uint64_t OutputFile::write_held(const void* data, size_t n) {
  const size_t block = io_.direct_block;
  const auto* p = static_cast<const uint8_t*>(data);
  const size_t head = size_t((block - offset_ % block) % block);  // to the next aligned file offset
  if (fd_ < 0 || dfd_ < 0 || n < kHeldMin || head >= n || reinterpret_cast<uintptr_t>(p + head) % block != 0) {
    write(data, n);
    return 0;
  }
  write(p, head);  // completes the buffer's last block: used_ is now a multiple of the block
  drain();         // (one write in flight at a time: hand_over_buffer says why)
  const size_t mid = (n - head) / block * block;
  if (dfd_ < 0) {  // the write just drained was refused O_DIRECT: buffered from here
    write(p + head, n - head);
    return 0;
  }
  // One write: the buffer's bytes, then the payload's aligned middle from the caller's memory.
  const uint64_t ticket = bg_->submit(dfd_, fd_, block, buf_.get(), used_, file_off_, p + head, mid);
  file_off_ += used_ + mid;
  offset_ += mid;
  used_ = 0;
  std::swap(buf_, spare_);
  write(p + head + mid, n - head - mid);  // the unaligned tail, into the buffer
  return ticket;
}

// A full buffer goes to the background writer, and the caller fills the other one
// meanwhile: the serial writer stage never waits for the device, only for the write
// before (two buffers in turn). Deeper queues were measured against this on 2026-12-04
// (4-16 buffers, 8-64 MiB queued, bench/ab_bench.sh, 5 pairs each): the bf16 -> .wq job
// gained at most 6% of wall time without fsync and nothing measurable with it, while the
// f32 GGUF -> Q4_0 job spent 6-21% more CPU: a held payload keeps its buffer until it is
// written, so the pipeline's pool takes fresh ones meanwhile (+10 to +46 MiB peak RSS),
// and first writes to fresh memory are expensive on these VMs.
void OutputFile::hand_over_buffer() {
  drain();
  if (dfd_ < 0) {  // refused by the write just drained: buffered from here
    flush_buffer(used_);
    return;
  }
  bg_->submit(dfd_, fd_, io_.direct_block, buf_.get(), used_, file_off_);
  file_off_ += used_;
  used_ = 0;
  std::swap(buf_, spare_);
}

void OutputFile::flush_buffer(size_t n) {
  write_at(dfd_ >= 0 ? dfd_ : fd_, buf_.get(), n, file_off_);
  file_off_ += n;
  std::memmove(buf_.get(), buf_.get() + n, used_ - n);
  used_ -= n;
  if (dfd_ < 0) start_writeback();
}

void OutputFile::start_writeback() {
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
  constexpr uint64_t kChunk = uint64_t(16) << 20;
  // Stop a MiB short of the end, on a page boundary: a write into a page under writeback
  // waits for its I/O (stable pages), and the next write begins in the last page written.
  constexpr uint64_t kBehind = uint64_t(1) << 20;
  if (!io_.fsync || file_off_ < kBehind) return;
  const uint64_t end = (file_off_ - kBehind) / 4096 * 4096;
  if (end < writeback_ + kChunk) return;
  // Advice for the disk's schedule only: a failure here changes nothing the fsync at the
  // end does not check.
  (void)::sync_file_range(fd_, off_t(writeback_), off_t(end - writeback_), SYNC_FILE_RANGE_WRITE);
  writeback_ = end;
#endif
}

void OutputFile::write(const void* data, size_t n) {
  if (n == 0) return;  // data may be null then (an empty vector's)
  if (fd_ < 0) throw Error(path_ + ": written after it was finished", ErrorKind::Internal);
  const auto* p = static_cast<const uint8_t*>(data);
  offset_ += n;
  if (dfd_ < 0) {
    if (used_ + n > kBuffer) flush_buffer(used_);
    if (n >= kBuffer) {  // large payloads go straight to the file
      write_at(fd_, p, n, file_off_);
      file_off_ += n;
      start_writeback();
    } else {
      std::memcpy(buf_.get() + used_, p, n);
      used_ += n;
    }
    return;
  }
  // O_DIRECT needs aligned memory: everything passes through the buffer, written out
  // whenever it is full (kBuffer is a multiple of the direct block).
  while (n) {
    const size_t c = std::min(n, kBuffer - used_);
    std::memcpy(buf_.get() + used_, p, c);
    used_ += c;
    p += c;
    n -= c;
    if (used_ == kBuffer) hand_over_buffer();
  }
}

void OutputFile::pad_to(uint64_t alignment) {
  static const uint8_t zeros[256] = {};
  uint64_t pad = (alignment - offset_ % alignment) % alignment;
  while (pad) {
    const size_t n = size_t(pad < sizeof zeros ? pad : sizeof zeros);
    write(zeros, n);
    pad -= n;
  }
}

void OutputFile::patch(uint64_t at, const void* data, size_t n) {
  if (at + n > offset_) throw Error(path_ + ": patch past the written bytes", ErrorKind::Internal);
  if (fd_ < 0) throw Error(path_ + ": patched after it was finished", ErrorKind::Internal);
  // Bytes already in the file are rewritten through the page cache (a few header bytes:
  // O_DIRECT would need a whole aligned block); bytes still in the buffer are patched there.
  const auto* p = static_cast<const uint8_t*>(data);
  if (at < file_off_) {
    drain();  // the bytes may be in the write in flight
    const size_t in_file = size_t(std::min<uint64_t>(n, file_off_ - at));
    write_at(fd_, p, in_file, at);
    at += in_file;
    p += in_file;
    n -= in_file;
  }
  if (n) std::memcpy(buf_.get() + (at - file_off_), p, n);
}

void OutputFile::finish() {
  if (fd_ < 0) return;  // finished already
  drain();
  // The aligned bulk of what is left through O_DIRECT, the unaligned tail through the cache.
  if (dfd_ >= 0) flush_buffer(used_ / io_.direct_block * io_.direct_block);
  if (dfd_ >= 0) {
    ::close(dfd_);
    dfd_ = -1;
  }
  if (used_) flush_buffer(used_);
  if (io_.fsync && ::fsync(fd_) != 0) fail("fsync failed", errno);
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail("close failed", errno);
  }
  fd_ = -1;
  bg_.reset();
  buf_.reset();
  spare_.reset();
}

void OutputFile::commit() { place(false); }

void OutputFile::commit_removable() { place(true); }

void OutputFile::keep() {
  if (!removable_) return;
  unregister_temp(slot_);
  slot_ = -1;
  removable_ = false;
}

// WQUANT_TEST_RENAME_PAUSE_MS: a pause right after a commit_removable() rename, and
// between commit_together's renames, for the tests that signal into that window
// (tests/cli_test.cpp, tests/onnx_reader_test.cpp); 0 otherwise.
static int rename_pause_ms() {
  const char* v = std::getenv("WQUANT_TEST_RENAME_PAUSE_MS");
  return v ? std::atoi(v) : 0;
}

// The rename is durable only once the directory is: its fsync (skipped with the file's).
int OutputFile::sync_directory() const { return sync_directory_of(path_, io_.fsync); }

void OutputFile::place(bool removable, bool sync_dir) {
  finish();
  // Removable: the slot names the final name before the rename and keeps it after, so a
  // signal at any moment removes the file under whichever name it has.
  const bool guarded = removable && slot_ >= 0 && path_.size() < kPathMax;
  if (removable && !guarded) throw Error(path_ + ": too many outputs or too long a path to guard", ErrorKind::Internal);
  if (guarded) {
    std::memcpy(g_final[slot_], path_.c_str(), path_.size() + 1);
    g_state[slot_].store(kRenaming);
  }
  // commit(): the rename places the run's whole result (commit_together places the
  // results of several files). A signal during it waits for it; once it is done, a signal
  // is too late to stop the run (the rename cannot be undone, the file it replaced is
  // gone): it ends it, exit 0, once the directory is synced (finish_result).
  const bool result = !removable && sync_dir;
  if (result) g_commit.store(kCommitting);
  const auto failed = [&] {
    const int e = errno;
    if (guarded) g_state[slot_].store(kTemp);  // the temporary file is still there
    if (result) {
      // Nothing was placed: a signal that waited acts now, as it would have.
      if (const int state = g_commit.exchange(kIdle); state >= kSignalled) ::raise(state - kSignalled);
    }
    errno = e;
  };
  struct stat old;
  if (replace_ && ::stat(path_.c_str(), &old) == 0 && S_ISREG(old.st_mode)) {
    // The file replaced keeps its permissions (a 0600 model stays private), as an edit in
    // place would; a new file gets the usual 0644 less the umask.
    ::chmod(temp_.c_str(), old.st_mode & 0777);  // (never a set-id bit)
  }
  if (replace_) {
    if (::rename(temp_.c_str(), path_.c_str()) != 0) {
      failed();
      fail("cannot rename the finished file into place", errno);
    }
  } else if (rename_no_replace(temp_.c_str(), path_.c_str()) != 0) {
    failed();
    if (errno == EEXIST) {
      throw Error(path_ + ": appeared while wquant was writing it (another run?); it was not replaced (pass --force "
                  "to replace it)",
                  ErrorKind::Output);
    }
    fail("cannot rename the finished file into place", errno);
  }
  if (guarded) g_state[slot_].store(kPlaced);
  if (result) {
    // (A signal that came during the rename, before or after it took effect, finds the
    // result in place.)
    if (g_commit.exchange(kPlacedResult) >= kSignalled) g_commit.store(kPlacedSignalled);
  }
  committed_ = true;
  removable_ = guarded;
  if (const int e = sync_dir ? sync_directory() : 0) {
    // The file is under its name, but the name may not survive a crash: a failure, said.
    // A removable file (the params file, written before OUT) goes again, as after any
    // failure of its run before OUT is in place; OUT stays, the message says so.
    if (guarded) {
      ::unlink(path_.c_str());
      unregister_temp(slot_);
      slot_ = -1;
      removable_ = false;
      fail("renamed into place, but the directory's fsync failed, so it was removed again", e);
    }
    if (result) finish_result(false);
    throw NotDurable(path_ + ": renamed into place, but the directory's fsync failed, so it may not survive a crash: " +
                         reason_of(e),
                     ErrorKind::Output);
  }
  if (result) finish_result(true);
  if (guarded || result) {
    if (const int ms = rename_pause_ms(); ms > 0) ::usleep(useconds_t(ms) * 1000);
  }
}

// The result is in place (and its directory synced, or its failure to be is about to be
// said): a signal that waited for it ends the run now, the result complete; a later one
// ends it at once (signal_in_commit). With `act` false (NotDurable follows) a signal that
// waited is dropped: the run's own failure, exit 4, says more.
namespace {
void finish_result(bool act) {
  if (g_commit.exchange(kFinished) == kPlacedSignalled && act) interrupted_with_result_in_place();
}
}  // namespace

void interrupted_with_result_in_place() {
  static const char line[] = "wquant: interrupted once the result was in place: it is complete\n";
  [[maybe_unused]] const ssize_t w = ::write(STDERR_FILENO, line, sizeof line - 1);
  ::_exit(0);
}

SignalInCommit signal_in_commit(int sig) {
  int s = g_commit.load();
  for (;;) {
    if (s == kIdle) return SignalInCommit::Act;
    if (s == kFinished) return SignalInCommit::ResultInPlace;
    if (s == kPlacedResult) {
      if (g_commit.compare_exchange_weak(s, kPlacedSignalled)) return SignalInCommit::Wait;
      continue;
    }
    if (s != kCommitting) return SignalInCommit::Wait;  // one is pending already: it acts for both
    if (g_commit.compare_exchange_weak(s, kSignalled + sig)) return SignalInCommit::Wait;
  }
}

void commit_together(const std::vector<OutputFile*>& files) {
  for (OutputFile* f : files) f->finish();  // every byte on the disk before any name changes
  // Each file replaced is linked aside first, as "<its temporary name>-old", registered
  // like a temporary file: a signal handled after the renames removes it, and a killed
  // run's is removed as its temporaries are. Without the link the replaced file could not
  // be put back: refused before any rename (a file system without hard links, or a file
  // of another user's under protected_hardlinks: remove it, or choose another OUT).
  struct Backup {
    std::string path;  // "" where nothing is replaced
    int slot = -1;
  };
  std::vector<Backup> backups(files.size());
  auto drop = [&](Backup& b, bool unlink) {
    if (unlink && !b.path.empty()) ::unlink(b.path.c_str());
    unregister_temp(b.slot);
    b = Backup();
  };
  try {
    for (size_t k = 0; k < files.size(); ++k) {
      if (!files[k]->replaces()) continue;
      Backup& b = backups[k];
      b.path = files[k]->temp_path() + "-old";
      b.slot = register_temp(b.path);
      ::unlink(b.path.c_str());
      int e = b.slot < 0 ? EMFILE : 0;
      if (!e && ::link(files[k]->path().c_str(), b.path.c_str()) != 0) e = errno;
      if (e == ENOENT) {  // gone since the run began: nothing to put back
        drop(b, false);
        continue;
      }
      if (e) {
        throw Error(files[k]->path() + ": cannot link the file it replaces aside (" + std::strerror(e) +
                        "), to put it back if a later file of the result failed; remove it first, or choose another OUT",
                    ErrorKind::Output);
      }
    }
  } catch (...) {
    for (Backup& b : backups) drop(b, true);
    throw;
  }
  // Puts back what files [0, placed) replaced, or removes them where they replaced nothing.
  // A backup that cannot be renamed back is kept, and said.
  auto restore = [&](size_t placed) {
    std::string kept;
    for (size_t k = 0; k < placed; ++k) {
      const std::string& path = files[k]->path();
      Backup& b = backups[k];
      if (b.path.empty()) {
        ::unlink(path.c_str());
      } else if (::rename(b.path.c_str(), path.c_str()) == 0) {
        drop(b, false);
      } else {
        kept += (kept.empty() ? "" : "; ") + path + " as it was is " + b.path + " (" + std::strerror(errno) + ")";
        unregister_temp(b.slot);  // (the user's data now: never removed)
        b = Backup();
      }
    }
    files.front()->sync_directory();  // (what it can: the run fails either way)
    return kept;
  };
  // Restores (if asked) with signals still deferred, drops the backups, and ends the
  // commit: returns the signal that came meanwhile (0 if none) and what could not be put back.
  auto settle = [&](size_t placed, std::string* kept) {
    *kept = restore(placed);
    for (Backup& b : backups) drop(b, true);
    const int state = g_commit.exchange(kIdle);
    return state >= kSignalled ? state - kSignalled : 0;
  };
  auto act_on = [](int sig, const std::string& kept) {
    if (!kept.empty()) {
      const std::string line = "wquant: error: interrupted while renaming the result; " + kept + "\n";
      [[maybe_unused]] const ssize_t w = ::write(STDERR_FILENO, line.data(), line.size());
    }
    ::raise(sig);  // (its handler, armed again when it deferred, removes what else the run had under way)
    ::_exit(128 + sig);  // (not reached: the handlers end the process)
  };
  size_t placed = 0;
  int unsynced = 0;  // the first directory fsync that failed after a rename, its errno
  size_t unsynced_file = 0;
  g_commit.store(kCommitting);
  try {
    for (; placed < files.size(); ++placed) {
      files[placed]->place(false, false);
      // A failed sync leaves the renames to finish: the result is then whole and in place,
      // as a single OUT is (undoing them in a directory whose sync fails lasts no better).
      if (const int e = files[placed]->sync_directory(); e && !unsynced) {
        unsynced = e;
        unsynced_file = placed;
      }
      if (placed + 1 < files.size()) {
        // (The whole pause, signals or not: a test sends one, then another, into it.)
        if (const int ms = rename_pause_ms(); ms > 0) {
          const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
          while (std::chrono::steady_clock::now() < until) ::usleep(10000);
        }
      }
    }
  } catch (const Error& e) {
    std::string kept;
    if (const int sig = settle(placed, &kept)) act_on(sig, kept);
    if (kept.empty()) throw;
    throw Error(std::string(e.what()) + "; the earlier files could not all be put back: " + kept, e.kind());
  } catch (...) {
    std::string kept;
    if (const int sig = settle(placed, &kept)) act_on(sig, kept);
    throw;
  }
  int state = kCommitting;
  if (g_commit.compare_exchange_strong(state, kPlacedResult)) {
    // Done: a signal from here on is too late to stop the run; it ends it once the
    // backups are gone (finish_result).
    for (Backup& b : backups) drop(b, true);
    finish_result(!unsynced);
    if (unsynced) {
      throw NotDurable(files[unsynced_file]->path() +
                           ": the result's files are in place, but the directory's fsync after this one's rename failed, "
                           "so they may not survive a crash: " + reason_of(unsynced),
                       ErrorKind::Output);
    }
    return;
  }
  // A signal came during the renames: what was there before goes back, then it acts.
  std::string kept;
  act_on(settle(placed, &kept), kept);
}

}  // namespace wq
