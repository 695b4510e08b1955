// A library preloaded (LD_PRELOAD) into the wquant program by cli_test to see and break
// the calls that put a result in place, which no real file system fails on demand:
//   WQ_FAULT_LOG=FILE            each rename / renameat2 / link / fsync / fdatasync appended
//                                to FILE, one line of tab-separated fields: the call, its
//                                paths (or for a sync whether it is a directory, and the
//                                inode), its result;
//   WQ_FAULT_LINK_ERRNO=N        link() to a name ending "-old" (a replaced file's backup)
//                                fails with errno N (a file system without hard links);
//   WQ_FAULT_RENAME_TO=SUFFIX    rename() of a temporary file to a name ending SUFFIX fails
//   WQ_FAULT_RENAME_ERRNO=N        with errno N (default EIO);
//   WQ_FAULT_RESTORE_ERRNO=N     rename() from a name ending "-old" (a backup put back)
//                                fails with errno N;
//   WQ_FAULT_DISK_FULL_AFTER=N   write() / pwrite() to a temporary file (".wquant-tmp-" in
//                                its name) fails with ENOSPC once N bytes went to them;
//   WQ_FAULT_SYNC_ERRNO=N        fsync() / fdatasync() of a temporary file fails with errno N;
//   WQ_FAULT_DIR_SYNC_ERRNO=N    fsync() / fdatasync() of a directory fails with errno N
//   WQ_FAULT_DIR_SYNC_AFTER=K      after K of them succeeded (default 0).
// The real calls are found with dlsym(RTLD_NEXT); environment variables are read at each
// call, so one preloaded library serves every test.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

template <class F>
F real(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

bool ends_with(const char* s, const char* suffix) {
  if (!s || !suffix || !*suffix) return false;
  const size_t n = std::strlen(s), m = std::strlen(suffix);
  return n >= m && std::strcmp(s + n - m, suffix) == 0;
}

int env_errno(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : 0;
}

__attribute__((format(printf, 1, 2))) void log_line(const char* fmt, ...) {
  const char* path = std::getenv("WQ_FAULT_LOG");
  if (!path || !*path) return;
  char line[8192];
  va_list args;
  va_start(args, fmt);
  const int n = std::vsnprintf(line, sizeof line, fmt, args);
  va_end(args);
  if (n <= 0) return;
  const int saved = errno;
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    [[maybe_unused]] const ssize_t w = ::write(fd, line, size_t(n) < sizeof line ? size_t(n) : sizeof line - 1);
    ::close(fd);
  }
  errno = saved;
}

// The fault a rename from `from` to `to` is to meet (0: none).
int rename_fault(const char* from, const char* to) {
  if (ends_with(from, "-old")) return env_errno("WQ_FAULT_RESTORE_ERRNO");
  if (std::strstr(from, ".wquant-tmp-") && ends_with(to, std::getenv("WQ_FAULT_RENAME_TO"))) {
    const int e = env_errno("WQ_FAULT_RENAME_ERRNO");
    return e ? e : EIO;
  }
  return 0;
}

// Whether a write of n bytes to fd is to fail for want of space (WQ_FAULT_DISK_FULL_AFTER).
// Whether fd is open on one of wquant's temporary files.
bool is_temporary(int fd) {
  char link[64], target[4096];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t len = ::readlink(link, target, sizeof target - 1);
  if (len <= 0) return false;
  target[len] = '\0';
  return std::strstr(target, ".wquant-tmp-") != nullptr;
}

bool disk_full(int fd, size_t n) {
  const char* v = std::getenv("WQ_FAULT_DISK_FULL_AFTER");
  if (!v || !*v || !is_temporary(fd)) return false;
  static std::atomic<unsigned long long> written{0};
  return written.fetch_add(n) + n > std::strtoull(v, nullptr, 10);
}

// A write (`call`, the real one) unless the disk is to be full for it.
template <class Call>
ssize_t full_or(int fd, size_t n, Call call) {
  if (!disk_full(fd, n)) return call();
  errno = ENOSPC;
  return -1;
}

// A rename (`call`, the real one) unless it is to fail, logged either way.
template <class Call>
int logged_rename(const char* from, const char* to, Call call) {
  int rc;
  if (const int e = rename_fault(from, to)) {
    errno = e;
    rc = -1;
  } else {
    rc = call();
  }
  log_line("rename\t%s\t%s\t%d\n", from, to, rc);
  return rc;
}

int logged_sync(const char* call, int fd, int (*sync)(int)) {
  struct stat st {};
  const bool known = ::fstat(fd, &st) == 0;
  const bool dir = known && S_ISDIR(st.st_mode);
  int fault = dir ? 0 : env_errno("WQ_FAULT_SYNC_ERRNO");
  if (dir) {
    static std::atomic<int> dir_syncs{0};  // directory syncs so far
    if (const int e = env_errno("WQ_FAULT_DIR_SYNC_ERRNO"); e && dir_syncs++ >= env_errno("WQ_FAULT_DIR_SYNC_AFTER")) fault = e;
  }
  const int rc = fault && (dir || is_temporary(fd)) ? (errno = fault, -1) : sync(fd);
  log_line("%s\t%s\t%lld\t%d\n", call, dir ? "dir" : "file",
           known ? (long long)st.st_ino : -1LL, rc);
  return rc;
}

}  // namespace

extern "C" {

int rename(const char* from, const char* to) {
  static const auto next = real<int (*)(const char*, const char*)>("rename");
  return logged_rename(from, to, [&] { return next(from, to); });
}

int renameat2(int from_dir, const char* from, int to_dir, const char* to, unsigned flags) {
  static const auto next = real<int (*)(int, const char*, int, const char*, unsigned)>("renameat2");
  return logged_rename(from, to, [&] { return next(from_dir, from, to_dir, to, flags); });
}

int link(const char* from, const char* to) {
  static const auto next = real<int (*)(const char*, const char*)>("link");
  int rc;
  if (const int e = env_errno("WQ_FAULT_LINK_ERRNO"); e && ends_with(to, "-old")) {
    errno = e;
    rc = -1;
  } else {
    rc = next(from, to);
  }
  log_line("link\t%s\t%s\t%d\n", from, to, rc);
  return rc;
}

ssize_t write(int fd, const void* p, size_t n) {
  static const auto next = real<ssize_t (*)(int, const void*, size_t)>("write");
  return full_or(fd, n, [&] { return next(fd, p, n); });
}

ssize_t pwrite(int fd, const void* p, size_t n, off_t at) {
  static const auto next = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  return full_or(fd, n, [&] { return next(fd, p, n, at); });
}

ssize_t pwrite64(int fd, const void* p, size_t n, off64_t at) {
  static const auto next = real<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  return full_or(fd, n, [&] { return next(fd, p, n, at); });
}

int fsync(int fd) {
  static const auto next = real<int (*)(int)>("fsync");
  return logged_sync("fsync", fd, next);
}

int fdatasync(int fd) {
  static const auto next = real<int (*)(int)>("fdatasync");
  return logged_sync("fdatasync", fd, next);
}

}  // extern "C"
