// OutputFile's ways to the disk (buffered, O_DIRECT with its buffered tail and fallback,
// no fsync) all give the bytes the caller wrote: writes of every size around the 4 MiB
// buffer, padding, patches of bytes already in the file and of bytes still buffered.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "io/background_writer.h"
#include "io/output_file.h"
#include "tests/test_support.h"

namespace wq {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> file_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// The same operations on an OutputFile and on a vector: the file must equal the vector.
// total_tail: bytes appended last, so the file ends unaligned.
std::vector<uint8_t> write_pattern(OutputFile& out, size_t total_tail) {
  std::vector<uint8_t> expect;
  std::mt19937 g(5);
  auto put = [&](size_t n) {
    std::vector<uint8_t> b(n);
    for (uint8_t& x : b) x = uint8_t(g());
    out.write(b.data(), n);
    expect.insert(expect.end(), b.begin(), b.end());
  };
  auto patch = [&](uint64_t at, uint32_t v) {
    out.patch(at, &v, 4);
    std::memcpy(expect.data() + at, &v, 4);
  };
  put(13);                    // a header
  put(3u << 20);              // under the buffer
  put(5u << 20);              // over it: spans two flushes
  patch(4, 0xdeadbeef);       // in the file by now
  out.pad_to(4096);
  expect.resize((expect.size() + 4095) / 4096 * 4096, 0);
  for (int i = 0; i < 300; ++i) put(1 + g() % 9000);  // many small writes
  // 1 to 80 bytes in turn: short lengths against every alignment of the buffer position.
  for (size_t n = 1; n <= 80; ++n) put(n);
  put(9u << 20);              // larger than the buffer at an unaligned offset
  patch(expect.size() - 10, 0x01020304);  // still in the buffer
  patch((8u << 20) - 2, 0xa5a5a5a5);      // straddles a 4 MiB boundary
  put(total_tail);
  EXPECT_EQ(out.offset(), expect.size());
  return expect;
}

class OutputIoTest : public ::testing::Test {
 protected:
  test::ScratchDir scratch_{"wquant-out"};
  const std::string& dir_ = scratch_.path();
};

TEST_F(OutputIoTest, EveryModeWritesTheSameBytes) {
  std::vector<std::string> dirs = {dir_};
  if (fs::is_directory("/dev/shm")) dirs.push_back("/dev/shm");  // tmpfs: O_DIRECT may be refused at open
  for (const std::string& dir : dirs) {
    for (bool direct : {false, true}) {
      for (const auto& [tail, sync] : {std::pair<size_t, bool>{0, true}, {1, false}, {4097, false}}) {
        {
          const std::string path = dir + "/out-" + std::to_string(::getpid()) + ".bin";
          OutputIo io;
          io.direct = direct;
          io.fsync = sync;
          std::vector<uint8_t> expect;
          {
            OutputFile out(path, io);
            EXPECT_EQ(out.direct(), direct && test::accepts_direct(dir)) << dir;
            expect = write_pattern(out, tail);
            out.commit();
            EXPECT_FALSE(out.direct_refused()) << dir;
          }
          EXPECT_TRUE(file_bytes(path) == expect) << dir << " direct " << direct << " fsync " << sync << " tail " << tail;
          fs::remove(path);
        }
      }
    }
  }
}

// A block below every device's logical block (512) makes the kernel refuse the final
// O_DIRECT write of an odd number of 256-byte blocks with EINVAL: the file goes on
// buffered, with the same bytes.
TEST_F(OutputIoTest, RefusedDirectWriteFallsBackToBuffered) {
  if (!test::accepts_direct(dir_)) GTEST_SKIP() << dir_ << " refuses O_DIRECT at open";
  OutputIo io;
  io.direct = true;
  io.direct_block = 256;
  const std::string path = dir_ + "/fallback.bin";
  std::vector<uint8_t> expect;
  {
    OutputFile out(path, io);
    std::vector<uint8_t> b(256 * 3 + 17);
    for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 7);
    out.write(b.data(), b.size());
    expect = b;
    out.commit();
    EXPECT_TRUE(out.direct_refused());
  }
  EXPECT_TRUE(file_bytes(path) == expect);
}

// The thread behind direct output: a refused O_DIRECT write (an odd number of 256-byte
// blocks) goes through the buffered descriptor with the same bytes, a failed write
// reports its errno to wait() instead of being lost and the writes queued after it are
// skipped, and writes queued together run in order.
TEST_F(OutputIoTest, BackgroundWriterFallsBackAndReportsErrors) {
  if (!test::accepts_direct(dir_)) GTEST_SKIP() << dir_ << " refuses O_DIRECT at open";
  const std::string path = dir_ + "/bg.bin";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int dfd = ::open(path.c_str(), O_WRONLY | O_DIRECT);
  ASSERT_GE(fd, 0);
  ASSERT_GE(dfd, 0);
  void* mem = nullptr;
  ASSERT_EQ(0, ::posix_memalign(&mem, 4096, 8192));
  auto* p = static_cast<uint8_t*>(mem);
  for (size_t i = 0; i < 8192; ++i) p[i] = uint8_t(i * 13 + 1);
  {
    BackgroundWriter bg;
    const uint64_t t1 = bg.submit(dfd, fd, 4096, p, 4096, 0);  // aligned: O_DIRECT takes it
    EXPECT_EQ(t1, 1u);
    BackgroundWriter::Result r = bg.wait(t1);
    EXPECT_TRUE(bg.finished(t1));
    EXPECT_EQ(r.err, 0);
    EXPECT_FALSE(r.refused);
    const uint64_t t2 = bg.submit(dfd, fd, 256, p + 4096, 256 * 3, 4096);  // 768 bytes: no device takes that through O_DIRECT
    EXPECT_EQ(t2, 2u);
    r = bg.wait(t2);
    EXPECT_EQ(r.err, 0);
    EXPECT_TRUE(r.refused);
    r = bg.wait(t2);
    EXPECT_FALSE(r.refused) << "a result is reported once";
    const int ro = ::open(path.c_str(), O_RDONLY);
    const uint64_t t3 = bg.submit(-1, ro, 4096, p, 16, 0);
    bg.submit(-1, fd, 4096, p + 100, 16, 0);  // queued after the failure: skipped
    r = bg.wait_all();
    EXPECT_EQ(r.err, EBADF);
    EXPECT_TRUE(bg.finished(t3 + 1));
    ::close(ro);
  }
  {
    BackgroundWriter bg;  // a fresh one: nothing failed before
    // Queued at once, overlapping: the later one wins, as it would written in order.
    bg.submit(dfd, fd, 4096, p + 4096, 4096, 4096);
    bg.submit(-1, fd, 4096, p + 100, 256, 4096 + 512);
    bg.submit(dfd, fd, 4096, p, 4096, 0);  // still queued when bg goes: the destructor waits
  }
  ::close(dfd);
  ::close(fd);
  std::vector<uint8_t> expect(p, p + 8192);
  std::copy(p + 100, p + 356, expect.begin() + 4096 + 512);
  const std::vector<uint8_t> got = file_bytes(path);
  EXPECT_TRUE(got == expect);
  std::free(mem);
}

// write_held: payloads the caller placed at the file's phase (direct_phase) are written
// straight from its memory where the output is direct, and copied otherwise; either way
// the file holds exactly what was written, around small writes, padding and patches.
// The caller's memory is overwritten as soon as finished(ticket) says it is no longer
// read: had a write still been reading it, the file would hold the scribble.
TEST_F(OutputIoTest, HeldWritesGiveTheSameBytesAndReadOnlyWhileTheySaySo) {
  struct Payload {
    uint8_t* mem = nullptr;
    const uint8_t* data = nullptr;
    uint64_t ticket = 0;
  };
  // block: the direct block (256: the device refuses the odd multiples of it, so the file
  // goes on buffered part-way through).
  for (const auto& [direct, block] : {std::pair<bool, size_t>{false, 4096}, {true, 4096}, {true, 256}}) {
    if (direct && !test::accepts_direct(dir_)) GTEST_SKIP() << dir_ << " refuses O_DIRECT at open";
    const std::string path = dir_ + "/held.bin";
    OutputIo io;
    io.direct = direct;
    io.direct_block = block;
    std::vector<uint8_t> expect;
    std::vector<Payload> live;  // payloads the file may still read
    std::mt19937 g(7);
    size_t held = 0, placed = 0;
    uint64_t last_ticket = 0;
    {
      OutputFile out(path, io);
      auto release_done = [&]() {
        for (auto it = live.begin(); it != live.end();) {
          if (!out.finished(it->ticket)) {
            ++it;
            continue;
          }
          std::memset(it->mem, 0xEE, 64);  // (its first bytes, which the write would read first)
          std::free(it->mem);
          it = live.erase(it);
        }
      };
      auto put = [&](size_t n) {
        std::vector<uint8_t> b(n);
        for (uint8_t& x : b) x = uint8_t(g());
        out.write(b.data(), n);
        expect.insert(expect.end(), b.begin(), b.end());
      };
      // A payload of n bytes at the file's phase (misplaced by one byte: never held).
      auto put_held = [&](size_t n, bool misplace) {
        const size_t lead = out.direct_phase(out.offset()) + (misplace ? 1 : 0);
        void* mem = nullptr;
        ASSERT_EQ(0, ::posix_memalign(&mem, 4096, lead + n));
        auto* m = static_cast<uint8_t*>(mem);
        for (size_t i = 0; i < n; ++i) m[lead + i] = uint8_t(g());
        expect.insert(expect.end(), m + lead, m + lead + n);
        const uint64_t t = out.write_held(m + lead, n);
        placed += !misplace && n >= (64u << 10) && out.direct();
        held += t != 0;
        if (t) {
          EXPECT_FALSE(misplace);
          EXPECT_GT(t, last_ticket) << "tickets grow";
        }
        last_ticket = std::max(last_ticket, t);
        live.push_back({m, m + lead, t});
        release_done();
      };
      put(13);
      put_held(1u << 20, false);        // head, aligned middle, tail
      put_held(64u << 10, false);
      put(100);
      put_held((5u << 20) + 37, false);  // over the 4 MiB buffer
      put_held(3u << 20, true);          // not at the phase: copied
      out.pad_to(4096);
      expect.resize((expect.size() + 4095) / 4096 * 4096, 0);
      put_held(200u << 10, false);       // from an aligned offset: no head
      put_held(1000, false);             // small: copied
      for (int i = 0; i < 20; ++i) put_held(size_t(64u << 10) + g() % 300000, false);
      uint32_t v = 0xdeadbeef;
      out.patch(20, &v, 4);              // bytes of the first held payload, in the file by now
      std::memcpy(expect.data() + 20, &v, 4);
      put(4097);
      EXPECT_EQ(out.offset(), expect.size());
      out.commit();
      release_done();
      EXPECT_TRUE(live.empty()) << "a finished file reads nothing";
    }
    for (const Payload& p : live) std::free(p.mem);
    EXPECT_TRUE(file_bytes(path) == expect) << "direct " << direct << " block " << block;
    if (!direct) {
      EXPECT_EQ(held, 0u);
    } else if (block == 4096) {
      EXPECT_EQ(held, placed) << "every placed payload of 64 KiB or more is held";
    } else if (block == 256) {
      EXPECT_GT(held, 0u);
    }
    fs::remove(path);
  }
}

// What the SIGINT/SIGTERM handler's cleanup removes (called here directly, as the
// handler would): an open output's temporary file, never a file of the user's it was to
// replace; a commit_removable() file under its final name until keep(); never a commit().
TEST_F(OutputIoTest, SignalCleanupRemovesTemporariesAndRemovableFilesOnly) {
  const std::string theirs = dir_ + "/theirs.bin", removable = dir_ + "/removable.bin", kept = dir_ + "/kept.bin",
                    plain = dir_ + "/plain.bin";
  std::ofstream(theirs) << "the user's";
  OutputFile replacing(theirs), r(removable), k(kept), c(plain);
  for (OutputFile* f : {&replacing, &r, &k, &c}) f->write("x", 1);
  r.commit_removable();
  k.commit_removable();
  k.keep();
  c.commit();
  ASSERT_TRUE(fs::exists(replacing.temp_path()));
  ASSERT_TRUE(fs::exists(removable));
  remove_temp_outputs_from_signal();
  EXPECT_FALSE(fs::exists(replacing.temp_path()));
  std::ifstream in(theirs);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "the user's");
  EXPECT_FALSE(fs::exists(removable));
  EXPECT_TRUE(fs::exists(kept));
  EXPECT_TRUE(fs::exists(plain));
  r.keep();  // (a keep() after the file went is harmless)
}

TEST_F(OutputIoTest, EnvironmentChoosesTheModeAndRefusesOtherValues) {
  ::setenv("WQUANT_OUTPUT_IO", "buffered", 1);
  ::setenv("WQUANT_NO_FSYNC", "1", 1);
  OutputIo io = OutputIo::from_env();
  EXPECT_FALSE(io.direct);
  EXPECT_FALSE(io.fsync);
  ::setenv("WQUANT_OUTPUT_IO", "direct", 1);
  EXPECT_TRUE(OutputIo::from_env().direct);
  ::setenv("WQUANT_OUTPUT_IO", "mmap", 1);
  try {
    OutputIo::from_env();
    ADD_FAILURE() << "mmap accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("WQUANT_OUTPUT_IO"), std::string::npos) << e.what();
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
  }
  ::setenv("WQUANT_OUTPUT_IO", "buffered", 1);
  ::setenv("WQUANT_NO_FSYNC", "yes", 1);
  EXPECT_THROW(OutputIo::from_env(), Error);
  ::unsetenv("WQUANT_NO_FSYNC");
  ::unsetenv("WQUANT_OUTPUT_IO");
  io = OutputIo::from_env();
  EXPECT_TRUE(io.direct);  // the default: O_DIRECT with a background writer
  EXPECT_TRUE(io.fsync);
}

}  // namespace
}  // namespace wq
