// Engine: spec validation, the three schemes against their formulas on hand-checked
// values, error metrics, and output bytes independent of thread count and ISA.
#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>

#include "engine/error.h"
#include "engine/ggml_quantize.h"
#include "engine/huge_pages.h"
#include "kernels/ggml_blocks.h"
#include "engine/metrics.h"
#include "engine/output_bytes.h"
#include "engine/quantize.h"
#include "engine/quantize_columns.h"
#include "engine/row_source.h"
#include "engine/scheduler.h"
#include "tests/test_support.h"

namespace wq {
namespace {

TensorView view_of(const std::vector<float>& v, size_t rows, size_t cols, const char* name = "w") {
  TensorView t;
  t.name = name;
  t.shape = {int64_t(rows), int64_t(cols)};
  t.dtype = DType::F32;
  t.data = v.data();
  t.nbytes = v.size() * 4;
  return t;
}

std::vector<float> normal(size_t n, float std, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

TEST(QuantSpec, RejectsBitsOutsideTwoToEight) {
  for (int bits : {-1, 0, 1, 9, 16}) {
    QuantSpec s;
    s.bits = bits;
    try {
      validate_spec(s, "layer.weight");
      FAIL() << "bits=" << bits << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bits must be between 2 and 8"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("layer.weight"), std::string::npos);
    }
  }
}

TEST(QuantSpec, BlockThatDoesNotDivideIsAnErrorOrAFallbackThatSaysSo) {
  QuantSpec s;
  s.block = 32;
  EXPECT_EQ(resolve_block(s, 64, "t", BlockFallback::Error, nullptr), 32u);
  EXPECT_THROW(resolve_block(s, 172, "ffn", BlockFallback::Error, nullptr), Error);
  std::string note;
  EXPECT_EQ(resolve_block(s, 172, "ffn", BlockFallback::ChannelWise, &note), 172u);
  EXPECT_NE(note.find("ffn"), std::string::npos);
  EXPECT_NE(note.find("172"), std::string::npos);
  s.block = -5;
  EXPECT_THROW(validate_spec(s, "t"), Error);
  s.block = 0;
  EXPECT_EQ(resolve_block(s, 172, "t", BlockFallback::Error, nullptr), 172u);
}

TEST(Quantize, MnnSymmetricFollowsTheFormula) {
  // absmax 1.27 at 8 bits: s = 0.01; w / s rounds half away from zero.
  std::vector<float> w = {1.27f, -1.27f, 0.005f, -0.005f, 0.0f, 0.634f, -0.2f, 0.015f};
  QuantSpec s;
  s.bits = 8;
  const QuantizedTensor q = quantize_tensor(view_of(w, 1, 8), s, 8, kernels_for(Isa::Scalar));
  ASSERT_EQ(q.scales.size(), 1u);
  EXPECT_EQ(q.scales[0], 1.27f / 127.0f);
  EXPECT_TRUE(q.zeros.empty());
  std::vector<uint8_t> codes(8);
  kernels_for(Isa::Scalar)->unpack_codes(q.packed.data(), 8, 8, codes.data());
  for (size_t i = 0; i < w.size(); ++i) {
    const int expect = int(std::round(w[i] / q.scales[0])) + 128;
    EXPECT_EQ(codes[i], expect) << "element " << i;
  }
  EXPECT_EQ(codes[0], 255);
  EXPECT_EQ(codes[1], 1);
}

TEST(Quantize, MnnSymmetricTinyScaleGivesZeroCodes) {
  std::vector<float> w = {1e-7f, -2e-7f, 0.0f, 5e-8f};
  QuantSpec s;
  s.bits = 4;
  const QuantizedTensor q = quantize_tensor(view_of(w, 1, 4), s, 4, kernels_for(Isa::Scalar));
  std::vector<uint8_t> codes(4);
  kernels_for(Isa::Scalar)->unpack_codes(q.packed.data(), 4, 4, codes.data());
  for (uint8_t c : codes) EXPECT_EQ(c, 8);  // q = 0 stored as 0 + 2^(b-1)
}

TEST(Quantize, MnnAsymmetricFollowsTheFormula) {
  std::vector<float> w = {-1.0f, 2.0f, 0.0f, 0.5f, 1.0f, -0.4f, 1.9f, -0.99f};
  QuantSpec s;
  s.bits = 4;
  s.asym = true;
  const QuantizedTensor q = quantize_tensor(view_of(w, 1, 8), s, 8, kernels_for(Isa::Scalar));
  const float scale = 3.0f / 15.0f;
  EXPECT_EQ(q.scales[0], scale);
  EXPECT_EQ(q.zeros[0], -1.0f);
  std::vector<uint8_t> codes(8);
  kernels_for(Isa::Scalar)->unpack_codes(q.packed.data(), 8, 4, codes.data());
  for (size_t i = 0; i < w.size(); ++i) {
    const int expect = int(std::round((w[i] - -1.0f) / scale));
    EXPECT_EQ(codes[i], expect) << "element " << i;
  }
  std::vector<float> back(8);
  dequantize_tensor(q, back.data(), kernels_for(Isa::Scalar));
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(back[i], w[i], scale / 2 + 1e-6f);
}

// MNNConvert's AlignDenormalizedValue: |w| < FLT_MIN (subnormals and -0) is +0 before
// quantizing, for every input dtype; without mnn_flush the weights are used as they are.
TEST(Quantize, MnnFlushTurnsWeightsBelowFltMinIntoPlusZeroForEveryDtype) {
  // Row: a negative tiny value as the block minimum, then positives. bf16 0x8001 is a
  // negative subnormal; f16 has no value below FLT_MIN but -0 (0x8000).
  struct Case {
    DType dt;
    uint16_t tiny;
  };
  for (const Case c : {Case{DType::BF16, 0x8001}, Case{DType::F16, 0x8000}}) {
    SCOPED_TRACE(dtype_name(c.dt));
    std::vector<uint16_t> w(16);
    w[0] = c.tiny;
    for (size_t j = 1; j < w.size(); ++j) w[j] = c.dt == DType::BF16 ? 0x3f80 : 0x3c00;  // 1.0
    TensorView v;
    v.name = "w";
    v.shape = {1, 16};
    v.dtype = c.dt;
    v.data = w.data();
    v.nbytes = w.size() * 2;
    QuantSpec s;
    s.bits = 4;
    s.asym = true;
    const QuantizedTensor plain = quantize_tensor(v, s, 16, kernels_for(Isa::Scalar));
    uint32_t bits;
    std::memcpy(&bits, &plain.zeros[0], 4);
    // A zero statistic is always +0 (kernels/reference.h canon_zero), so only the
    // subnormal shows the difference.
    if (c.dt == DType::BF16) {
      EXPECT_NE(bits, 0u) << "the minimum is the tiny negative value as given";
    }
    s.mnn_flush = true;
    const QuantizedTensor flushed = quantize_tensor(v, s, 16, kernels_for(Isa::Scalar));
    std::memcpy(&bits, &flushed.zeros[0], 4);
    EXPECT_EQ(bits, 0u) << "+0 after the flush";
    EXPECT_EQ(flushed.scales[0], 1.0f / 15.0f);
  }
}

TEST(Quantize, Fp16TruncateRoundsScalesTowardZero) {
  // 1/15 = 0x3D888889: f16 nearest is 0x2C44 (0.066650390625), truncation too (dropped
  // bits 0x0889 < half); 0.1f/15 rounds up to nearest but truncates down.
  std::vector<float> w(16, 0.0f);
  w[15] = 0.1f;
  QuantSpec s;
  s.bits = 4;
  s.asym = true;
  s.fp16 = true;
  const QuantizedTensor nearest = quantize_tensor(view_of(w, 1, 16), s, 16, kernels_for(Isa::Scalar));
  s.fp16_truncate = true;
  const QuantizedTensor trunc = quantize_tensor(view_of(w, 1, 16), s, 16, kernels_for(Isa::Scalar));
  const float exact = 0.1f / 15.0f;
  EXPECT_LE(trunc.scales[0], exact);
  EXPECT_LT(exact - trunc.scales[0], std::ldexp(1.0f, -8 - 10));  // within one f16 ulp at 2^-8
  EXPECT_NE(trunc.scales[0], nearest.scales[0]);
  EXPECT_GT(nearest.scales[0], exact);
  EXPECT_TRUE(trunc.packed == nearest.packed) << "codes come from the f32 scale";
}

TEST(Quantize, NonFiniteWeightIsAnErrorNamingThePlace) {
  std::vector<float> w(4 * 16, 0.5f);
  w[2 * 16 + 5] = NAN;
  QuantSpec s;
  try {
    quantize_tensor(view_of(w, 4, 16, "blk.0.w"), s, 16);
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("blk.0.w"), std::string::npos) << m;
    EXPECT_NE(m.find("row 2"), std::string::npos) << m;
    EXPECT_NE(m.find("column 5"), std::string::npos) << m;
  }
  w[2 * 16 + 5] = INFINITY;
  EXPECT_THROW(quantize_tensor(view_of(w, 4, 16), s, 16), Error);
}

// HQQ checks each tile as the solver reads it (no pass of its own): the first bad weight
// in row order is the one named, whichever thread reaches its tile first.
TEST(Quantize, HqqNamesTheFirstNonFiniteWeightForEveryThreadCount) {
  const size_t rows = 20000, cols = 16;  // several tiles of rows
  std::vector<float> w = normal(rows * cols, 0.02f, 3);
  w[17000 * cols + 3] = NAN;
  w[9000 * cols + 7] = -INFINITY;
  for (HqqStop stop : {HqqStop::Block, HqqStop::Tensor}) {
    for (int threads : {1, 2, 5}) {
      QuantSpec s;
      s.hqq = s.asym = true;
      s.hqq_opts.stop = stop;
      Scheduler sched(threads);
      std::string m;
      sched.run([&] {
        try {
          quantize_tensor(view_of(w, rows, cols, "blk.3.w"), s, cols);
        } catch (const Error& e) {
          m = e.what();
        }
      });
      EXPECT_NE(m.find("blk.3.w"), std::string::npos) << m;
      EXPECT_NE(m.find("row 9000, column 7"), std::string::npos) << m;
    }
  }
}

// llama.cpp's block types check each tile before quantizing it (the searches need finite
// weights; no pass of its own over the tensor): the first bad weight in row order is the
// one named, whichever thread reaches its tile first, for a legacy and a K-quant type.
TEST(Quantize, GgmlNamesTheFirstNonFiniteWeightForEveryThreadCount) {
  const size_t rows = 3000, cols = 256;  // several tiles of rows
  std::vector<float> w = normal(rows * cols, 0.02f, 5);
  w[2900 * cols + 3] = NAN;
  w[1700 * cols + 200] = INFINITY;
  for (GgmlBlock t : {GgmlBlock::Q4_0, GgmlBlock::Q4_K}) {
    for (int threads : {1, 2, 5}) {
      Scheduler sched(threads);
      std::string m;
      std::vector<uint8_t> out;
      sched.run([&] {
        try {
          quantize_ggml_tensor(view_of(w, rows, cols, "blk.7.ffn_up.weight"), t, QuantSpec{}, out);
        } catch (const Error& e) {
          m = e.what();
        }
      });
      EXPECT_NE(m.find("blk.7.ffn_up.weight"), std::string::npos) << m;
      EXPECT_NE(m.find("row 1700, column 200"), std::string::npos) << m;
    }
  }
}

// A float tensor mapped from a file, as the GGUF and safetensors readers give it, with
// its MappedSource set: RowSource::tile preads each tile into the worker's buffer, and
// every quantizer gives the bytes, figures and messages it gives reading the mapping.
class MappedTensorFile {
 public:
  // The floats after a 12-byte header (the data need not be page- or vector-aligned).
  explicit MappedTensorFile(const std::vector<float>& w) {
    char path[] = "/tmp/wq-pread-XXXXXX";
    fd_ = ::mkstemp(path);
    ::unlink(path);
    const char header[12] = "wq-pread-ht";
    EXPECT_EQ(::write(fd_, header, sizeof header), ssize_t(sizeof header));
    EXPECT_EQ(::write(fd_, w.data(), w.size() * 4), ssize_t(w.size() * 4));
    size_ = sizeof header + w.size() * 4;
    base_ = static_cast<const uint8_t*>(::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0));
    EXPECT_NE(base_, MAP_FAILED);
  }
  ~MappedTensorFile() {
    ::munmap(const_cast<uint8_t*>(base_), size_);
    ::close(fd_);
  }
  TensorView view(size_t rows, size_t cols, bool with_source) const {
    TensorView v;
    v.name = "blk.3.ffn_down.weight";
    v.shape = {int64_t(rows), int64_t(cols)};
    v.data = base_ + 12;
    v.nbytes = rows * cols * 4;
    if (with_source) v.mapped = MappedSource{base_, size_, fd_};
    return v;
  }
  const uint8_t* base() const { return base_; }

 private:
  int fd_ = -1;
  size_t size_ = 0;
  const uint8_t* base_ = nullptr;
};

// A transposed source mapped from a file is read band by band with pread into the
// thread's two band buffers (the next band read by a task of its own while the workers
// code this one): on any thread count every band reaches the body from a buffer, never
// the mapping, holding the file's rows, in order; a body that stops or throws ends it.
// A scheduler of no more threads than cores sets no process-wide limit: oneTBB takes the
// least of the limits alive, so one set by every scheduler (the cores, at least) capped a
// scheduler of more threads alive beside it (the public API's calls from two threads, a
// test's) and had oneTBB print a warning. A scheduler of more threads than cores raises it.
TEST(Scheduler, OnlyMoreThreadsThanCoresSetAProcessWideLimit) {
  const auto limit = [] { return tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism); };
  const size_t before = limit();
  const int cores = usable_cpus();
  {
    Scheduler one(1);
    EXPECT_EQ(limit(), before);
    Scheduler more(cores + 2);
    EXPECT_EQ(limit(), size_t(cores + 2));  // not the cores the one-thread scheduler's limit said
    int seen = 0;
    more.run([&] { seen = tbb::this_task_arena::max_concurrency(); });
    EXPECT_EQ(seen, cores + 2);
  }
  EXPECT_EQ(limit(), before);
}

TEST(Quantize, StoredBandsArePreadIntoTheReadingThreadsBuffers) {
  // Rows of 384 bytes, read as they lie; rows of 8 KiB (an even number of cache lines),
  // read one line further apart each (band_pitch): the same rows either way.
  struct Shape {
    size_t K, N, band, bands, pitch;
  } shapes[] = {{1000, 96, 64, 16, 96}, {200, 2048, 64, 4, 2048 + 16}};
  for (const Shape& sh : shapes) {
    const size_t K = sh.K, N = sh.N, band = sh.band;
    SCOPED_TRACE(std::to_string(N) + " columns");
    std::vector<float> w = normal(K * N, 0.02f, 23);
    const MappedTensorFile file(w);
    TensorView listed = file.view(N, K, true);  // listed [N, K], data the stored [K, N]
    const RowSource src = RowSource::transposed_of(listed);
    for (int threads : {1, 2, 3}) {
      std::vector<size_t> seen;
      Scheduler(threads).run([&] {
        EXPECT_TRUE(for_each_stored_band(src, band, [&](size_t k0, size_t rows, StoredRows b) {
          EXPECT_EQ(rows, std::min(band, K - k0));
          EXPECT_TRUE(b.data < file.base() || b.data >= file.base() + 12 + K * N * 4) << "band " << k0 << " read from the mapping";
          EXPECT_EQ(b.pitch, sh.pitch);
          for (size_t r = 0; r < rows; ++r)
            EXPECT_EQ(std::memcmp(b.data + r * b.pitch * 4, w.data() + (k0 + r) * N, N * 4), 0) << "band " << k0 << " row " << r;
          seen.push_back(k0);
          // Work of the workers' own, so that an idle one takes the next band's read.
          tbb::this_task_arena::isolate([] { parallel_row_tiles(64, 8, [](size_t, size_t) { ::usleep(200); }); });
          return true;
        }));
      });
      ASSERT_EQ(seen.size(), sh.bands) << threads << " threads";
      for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i * band);
      size_t calls = 0;
      Scheduler(threads).run([&] {
        EXPECT_FALSE(for_each_stored_band(src, band, [&](size_t k0, size_t, StoredRows) { ++calls; return k0 < 2 * band; }));
      });
      EXPECT_EQ(calls, 3u) << "stopped at the band whose body returned false";
      calls = 0;
      Scheduler(threads).run([&] {
        EXPECT_THROW(for_each_stored_band(src, band, [&](size_t k0, size_t, StoredRows) -> bool {
          ++calls;
          if (k0 == 2 * band) throw Error("band 2 broken on purpose");
          return true;
        }), Error);
      });
      EXPECT_EQ(calls, 3u);
    }
  }
}

TEST(Quantize, TilesPreadFromTheMappedFileGiveTheMappingsBytes) {
  const size_t rows = 1500, cols = 512;  // several tiles of rows
  std::vector<float> w = normal(rows * cols, 0.02f, 17);
  const MappedTensorFile file(w);
  const TensorView mapped = file.view(rows, cols, false), preadable = file.view(rows, cols, true);

  // The tile is read into the buffer, with the file's bytes; without a buffer, or for a
  // view pointed outside the mapping, it is a slice of what the view points at.
  std::vector<uint8_t> scratch;
  const TensorView t = RowSource::rows_of(preadable).tile(700, 900, &scratch);
  ASSERT_EQ(t.data, static_cast<const void*>(scratch.data()));
  EXPECT_EQ(std::memcmp(t.data, w.data() + 700 * cols, 200 * cols * 4), 0);
  EXPECT_LT(t.mapped.fd, 0) << "a tile in the buffer must not claim to be in the file";
  EXPECT_EQ(RowSource::rows_of(preadable).tile(700, 900, nullptr).data, file.base() + 12 + 700 * cols * 4);
  TensorView elsewhere = preadable;
  elsewhere.data = w.data();
  EXPECT_EQ(RowSource::rows_of(elsewhere).tile(700, 900, &scratch).data, static_cast<const void*>(w.data() + 700 * cols));
  // A file that cannot give the bytes (here: none left at that offset) falls back to the
  // mapping rather than quantizing a buffer pread did not fill.
  TensorView short_file = preadable;
  char empty_path[] = "/tmp/wq-pread-empty-XXXXXX";
  const int empty = ::mkstemp(empty_path);
  ::unlink(empty_path);
  short_file.mapped.fd = empty;
  EXPECT_EQ(RowSource::rows_of(short_file).tile(0, 10, &scratch).data, static_cast<const void*>(file.base() + 12));
  ::close(empty);

  for (int threads : {1, 3}) {
    Scheduler sched(threads);
    sched.run([&] {
      for (GgmlBlock b : {GgmlBlock::Q4_0, GgmlBlock::Q8_0, GgmlBlock::Q4_K, GgmlBlock::Q6_K}) {
        SCOPED_TRACE(ggml_block_name(b));
        std::vector<uint8_t> a, p;
        std::vector<ErrorSums> sa, sp;
        quantize_ggml_tensor(mapped, b, QuantSpec{}, a, nullptr, nullptr, &sa);
        quantize_ggml_tensor(preadable, b, QuantSpec{}, p, nullptr, nullptr, &sp);
        EXPECT_TRUE(a == p);
        ASSERT_EQ(sa.size(), sp.size());
        EXPECT_EQ(std::memcmp(sa.data(), sp.data(), sa.size() * sizeof(ErrorSums)), 0);
      }
      for (bool hqq : {false, true}) {
        QuantSpec s;
        s.bits = 4;
        s.block = 64;
        s.asym = true;
        s.hqq = hqq;
        std::vector<ErrorSums> sa, sp;
        const QuantizedTensor a = quantize_tensor(RowSource::rows_of(mapped), s, 64, nullptr, &sa);
        const QuantizedTensor p = quantize_tensor(RowSource::rows_of(preadable), s, 64, nullptr, &sp);
        EXPECT_TRUE(a.packed == p.packed && a.scales == p.scales && a.zeros == p.zeros) << "hqq " << hqq;
        ASSERT_EQ(sa.size(), sp.size());
        EXPECT_EQ(std::memcmp(sa.data(), sp.data(), sa.size() * sizeof(ErrorSums)), 0);
      }
    });
  }

  // A non-finite weight read through pread is named at the same place.
  w[1234 * cols + 77] = NAN;
  const MappedTensorFile bad(w);
  for (GgmlBlock b : {GgmlBlock::Q4_0, GgmlBlock::Q4_K}) {
    std::vector<uint8_t> out;
    try {
      quantize_ggml_tensor(bad.view(rows, cols, true), b, QuantSpec{}, out);
      ADD_FAILURE() << "NaN accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blk.3.ffn_down.weight: non-finite weight (NaN or Inf) at row 1234, column 77"),
                std::string::npos) << e.what();
    }
  }
  try {
    quantize_tensor(RowSource::rows_of(bad.view(rows, cols, true)), QuantSpec{}, 64);
    ADD_FAILURE() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 1234, column 77"), std::string::npos) << e.what();
  }
}

// Output buffers of 1 MiB and more are mappings of their own on a 2 MiB boundary (where the
// kernel can back them with 2 MiB pages); growing one copies its bytes, as std::vector's
// contract says, and the small ones stay on the heap.
TEST(OutputBytes, LargeBuffersAreAlignedMappingsThatKeepTheirBytes) {
  for (size_t n : {size_t(1) << 20, size_t(3) << 20}) {  // the smallest mapped, and one between 2 MiB pages
    OutputVector<float> f(n / 4);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.data()) % (2u << 20), 0u) << n;
    f.back() = 1.0f;  // the whole length is writable
  }
  OutputBytes b;
  b.resize(5u << 20);
  ASSERT_EQ(reinterpret_cast<uintptr_t>(b.data()) % (2u << 20), 0u);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 7 + 3);
  b.resize(9u << 20);  // reallocates: a new mapping, the old one unmapped
  ASSERT_EQ(reinterpret_cast<uintptr_t>(b.data()) % (2u << 20), 0u);
  bool same = true;
  for (size_t i = 0; i < (5u << 20); ++i) same = same && b[i] == uint8_t(i * 7 + 3);
  EXPECT_TRUE(same);
  b[b.size() - 1] = 1;  // the whole length is writable
  OutputBytes moved = std::move(b);
  EXPECT_EQ(moved[(5u << 20) - 1], uint8_t(((5u << 20) - 1) * 7 + 3));
  moved.clear();
  moved.shrink_to_fit();
  OutputBytes small(1000);
  small[999] = 5;
  EXPECT_EQ(small[999], 5);
}

// Whether [p, p + n) is mapped in this process (msync fails with ENOMEM on unmapped pages).
bool is_mapped(const void* p, size_t n) {
  return ::msync(const_cast<void*>(p), n, MS_ASYNC) == 0;
}

// The pages of a freed large buffer serve the next ones (engine/huge_pages.h) while a
// KeepFreedPages lives: a smaller request takes the smallest kept run that holds it, a
// larger one gets the kept runs moved to its start and fresh pages after them, and no
// live buffer's pages are ever handed out; when the last KeepFreedPages ends they all go
// back to the system, and without one a freed buffer is unmapped at once.
TEST(HugePages, FreedPagesServeLaterBuffersAndNeverLiveOnes) {
  constexpr size_t MiB = size_t(1) << 20;
  ASSERT_EQ(huge_pages::kept_bytes(), 0u);
  auto fill = [](void* p, size_t n, uint8_t v) { std::memset(p, v, n); };
  auto holds = [](const void* p, size_t n, uint8_t v) {
    const auto* b = static_cast<const uint8_t*>(p);
    return std::all_of(b, b + n, [v](uint8_t x) { return x == v; });
  };
  void* d = nullptr;
  uint8_t* e = nullptr;
  {
    huge_pages::KeepFreedPages keep;
    void* a = huge_pages::take(6 * MiB);
    void* b = huge_pages::take(3 * MiB);  // 4 MiB of pages
    ASSERT_TRUE(a && b);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % huge_pages::kPage, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % huge_pages::kPage, 0u);
    fill(a, 6 * MiB, 0xa1);
    fill(b, 3 * MiB, 0xb2);
    huge_pages::give(a, 6 * MiB);
    EXPECT_EQ(huge_pages::kept_bytes(), 6 * MiB);

    // Larger than anything kept: a's pages moved to the start, fresh (zero) pages after.
    auto* c = static_cast<uint8_t*>(huge_pages::take(10 * MiB));
    ASSERT_TRUE(c);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(c) % huge_pages::kPage, 0u);
    EXPECT_EQ(huge_pages::kept_bytes(), 0u);
    EXPECT_TRUE(holds(c, 6 * MiB, 0xa1)) << "the freed buffer's pages, not fresh ones";
    EXPECT_TRUE(holds(c + 6 * MiB, 4 * MiB, 0));
    EXPECT_FALSE(is_mapped(a, 6 * MiB)) << "moved, not copied";
    fill(c, 10 * MiB, 0xc3);
    EXPECT_TRUE(holds(b, 3 * MiB, 0xb2)) << "a live buffer untouched";

    // Smaller than a kept run: its first pages, the rest still kept.
    huge_pages::give(c, 10 * MiB);
    d = huge_pages::take(3 * MiB);
    EXPECT_EQ(d, static_cast<void*>(c));
    EXPECT_EQ(huge_pages::kept_bytes(), 6 * MiB);
    EXPECT_TRUE(holds(d, 3 * MiB, 0xc3));
    // Two runs kept (c's last 6 MiB, then b's 4) and a request for 8 MiB: both moved in
    // (10 MiB of kept pages, 8 used, 2 still kept), nothing of d's.
    fill(d, 3 * MiB, 0xd4);
    huge_pages::give(b, 3 * MiB);
    EXPECT_EQ(huge_pages::kept_bytes(), 10 * MiB);
    e = static_cast<uint8_t*>(huge_pages::take(8 * MiB));
    ASSERT_TRUE(e);
    EXPECT_EQ(huge_pages::kept_bytes(), 2 * MiB);
    fill(e, 8 * MiB, 0xe5);
    EXPECT_TRUE(holds(d, 3 * MiB, 0xd4));
    huge_pages::give(d, 3 * MiB);
    {
      huge_pages::KeepFreedPages nested;  // the outer one still keeps them after it
    }
    EXPECT_EQ(huge_pages::kept_bytes(), 6 * MiB);
    huge_pages::give(e, 8 * MiB);
    EXPECT_EQ(huge_pages::kept_bytes(), 14 * MiB);
  }
  EXPECT_EQ(huge_pages::kept_bytes(), 0u);
  EXPECT_FALSE(is_mapped(d, 4 * MiB));
  EXPECT_FALSE(is_mapped(e, 8 * MiB));
  void* f = huge_pages::take(2 * MiB);
  ASSERT_TRUE(f);
  huge_pages::give(f, 2 * MiB);
  EXPECT_EQ(huge_pages::kept_bytes(), 0u);
  EXPECT_FALSE(is_mapped(f, 2 * MiB)) << "freed outside a KeepFreedPages: unmapped at once";
}

// What would be kept past kKeepAtMost goes back to the system at once (the pages are
// mapped, never touched here).
TEST(HugePages, KeepsNoMoreThanItsBound) {
  huge_pages::KeepFreedPages keep;
  void* big = huge_pages::take(huge_pages::kKeepAtMost);
  void* more = huge_pages::take(huge_pages::kPage);
  ASSERT_TRUE(big && more);
  huge_pages::give(big, huge_pages::kKeepAtMost);
  EXPECT_EQ(huge_pages::kept_bytes(), huge_pages::kKeepAtMost);
  huge_pages::give(more, huge_pages::kPage);
  EXPECT_EQ(huge_pages::kept_bytes(), huge_pages::kKeepAtMost);
  EXPECT_FALSE(is_mapped(more, huge_pages::kPage));
}

// Issue 11 item 7: finite weights whose parameters are not finite (a range beyond
// FLT_MAX, or a scale / minimum beyond f16's 65504 with --fp16) are refused, naming the
// tensor and row, on every ISA; where the parameters are finite the output dequantizes to
// finite weights.
TEST(Quantize, ParametersThatOverflowAreAnErrorNamingThePlace) {
  struct Case {
    const char* what;
    float lo, hi;  // put at row 1, columns 3 and 4
    bool asym, hqq, fp16;
    const char* says;  // "" = accepted
    int bits = 4;
  } cases[] = {
      {"range > FLT_MAX, asym", -3e38f, 3e38f, true, false, false, "range is too wide for float"},
      {"range > FLT_MAX, hqq", -3e38f, 3e38f, true, true, false, "range is too wide for float"},
      {"range > FLT_MAX, hqq fp16", -3e38f, 3e38f, true, true, true, "range is too wide for float"},
      {"range > FLT_MAX, sym: s = absmax / 7 is finite", -3e38f, 3e38f, false, false, false, ""},
      {"sym fp16, scale 1e6 / 7 > 65504", -1e6f, 0.0f, false, false, true, "its scale does not fit in f16"},
      {"asym fp16, minimum -1e5", -1e5f, 0.0f, true, false, true, "its minimum does not fit in f16"},
      {"asym fp16, scale 2e6 / 15 > 65504", -1e3f, 2e6f, true, false, true, "its scale does not fit in f16"},
      {"asym fp16, both", -1e6f, 1e6f, true, false, true, "its scale and minimum do not fit in f16"},
      {"hqq fp16, minimum -1e5: z = 15, s = 6667 fit", -1e5f, 0.0f, true, true, true, ""},
      {"asym, minimum -1e5 without fp16", -1e5f, 0.0f, true, false, false, ""},
      // The range fits; s = FLT_MAX / 127 rounds up, and 127 s passes FLT_MAX (not / 7).
      {"sym 8-bit, 1 to FLT_MAX", 1.0f, FLT_MAX, false, false, false, "scale, rounded up at the top of float's range", 8},
      {"sym 4-bit, 1 to FLT_MAX", 1.0f, FLT_MAX, false, false, false, "", 4},
  };
  for (Isa isa : test::all_isas()) {
    if (!isa_available(isa)) continue;
    const Kernels* k = kernels_for(isa);
    for (const Case& c : cases) {
      for (int64_t block : {0, 32}) {
        std::vector<float> v = normal(4 * 64, 0.02f, 9);
        v[64 + 3] = c.lo;
        v[64 + 4] = c.hi;
        const TensorView w = view_of(v, 4, 64, "big.weight");
        QuantSpec s;
        s.asym = c.asym;
        s.hqq = c.hqq;
        s.fp16 = c.fp16;
        s.block = block;
        s.bits = c.bits;
        const std::string at = std::string(c.what) + ", block " + std::to_string(block) + ", " + isa_name(isa);
        if (!*c.says) {
          const QuantizedTensor q = quantize_tensor(w, s, block ? size_t(block) : 64, k);
          std::vector<float> wh(v.size());
          dequantize_tensor(q, wh.data(), k);
          for (float x : wh) ASSERT_TRUE(std::isfinite(x)) << at;
          continue;
        }
        try {
          quantize_tensor(w, s, block ? size_t(block) : 64, k);
          ADD_FAILURE() << at << ": accepted";
        } catch (const Error& e) {
          const std::string m = e.what();
          EXPECT_EQ(e.kind(), ErrorKind::Input) << at;
          EXPECT_EQ(m.find("big.weight: row 1"), 0u) << at << ": " << m;
          EXPECT_NE(m.find(c.says), std::string::npos) << at << ": " << m;
          EXPECT_EQ(m.find('\n'), std::string::npos) << at << ": one line: " << m;
          if (block) {
            EXPECT_NE(m.find("columns 0-31"), std::string::npos) << at << ": " << m;
          }
          if (c.fp16 && !c.hqq) { EXPECT_NE(m.find("with --fp16 its"), std::string::npos) << at << ": " << m; }
        }
      }
    }
  }
  // MNN's spelling of f16 parameters, --weightQuantScaleBit 16 (fp16_truncate), is the
  // flag the message names: the user never typed --fp16.
  std::vector<float> v = normal(4 * 64, 0.02f, 9);
  v[64 + 3] = -1e6f;
  QuantSpec s;
  s.fp16 = s.fp16_truncate = true;
  try {
    quantize_tensor(view_of(v, 4, 64, "big.weight"), s, 64, kernels_for(Isa::Scalar));
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("with --weightQuantScaleBit 16 its scale does not fit in f16"), std::string::npos) << m;
    EXPECT_NE(m.find("quantize without --weightQuantScaleBit 16"), std::string::npos) << m;
    EXPECT_EQ(m.find("--fp16"), std::string::npos) << m;
  }
}

// The same for llama.cpp blocks, whose scale d and min m are f16 fields.
TEST(Quantize, GgmlBlocksWhoseF16FieldsOverflowAreAnError) {
  struct Case {
    GgmlBlock t;
    bool hqq;
    float big;  // at row 2, column 40 (block 1)
    const char* says;
  } cases[] = {
      {GgmlBlock::Q8_0, false, 1e7f, "Q8_0 block's scale does not fit"},  // 1e7 / 127 > 65504
      {GgmlBlock::Q4_0, false, 1e6f, "Q4_0 block's scale does not fit"},
      {GgmlBlock::Q4_1, false, -1e5f, "Q4_1 block's min does not fit"},
      {GgmlBlock::Q5_1, false, -4e6f, "Q5_1 block's scale and min do not fit"},
      {GgmlBlock::Q4_1, true, -1e5f, "Q4_1 block's min does not fit"},
      {GgmlBlock::Q8_0, false, 6e4f, ""},  // 6e4 / 127 fits
  };
  for (Isa isa : test::all_isas()) {
    if (!isa_available(isa)) continue;
    for (const Case& c : cases) {
      std::vector<float> v = normal(4 * 64, 0.02f, 4);
      v[2 * 64 + 40] = c.big;
      const TensorView w = view_of(v, 4, 64, "blk.0.ffn_up.weight");
      QuantSpec s;
      s.hqq = c.hqq;
      s.asym = c.hqq;
      // Unmeasured, every tile's f16 fields are checked; measured, a tile whose errors
      // are all finite is not (its fields cannot be Inf or NaN): both must refuse it.
      for (const bool measured : {false, true}) {
        std::vector<uint8_t> out;
        std::vector<ErrorSums> sums;
        const std::string at = std::string(ggml_block_name(c.t)) + (c.hqq ? " hqq " : " ") + isa_name(isa) +
                               (measured ? " measured" : "");
        if (!*c.says) {
          quantize_ggml_tensor(w, c.t, s, out, kernels_for(isa), nullptr, measured ? &sums : nullptr);
          const ErrorMetrics m = ggml_tensor_error(w, c.t, out.data(), kernels_for(isa));
          EXPECT_TRUE(std::isfinite(m.rel_rmse)) << at;
          continue;
        }
        try {
          quantize_ggml_tensor(w, c.t, s, out, kernels_for(isa), nullptr, measured ? &sums : nullptr);
          ADD_FAILURE() << at << ": accepted";
        } catch (const Error& e) {
          const std::string m = e.what();
          EXPECT_EQ(m.find("blk.0.ffn_up.weight: row 2, columns 32-63: "), 0u) << at << ": " << m;
          EXPECT_NE(m.find(c.says), std::string::npos) << at << ": " << m;
        }
      }
    }
  }
}

// K-quants and IQ4 keep their f16 super-block scale (and dmin) elsewhere in the block
// (kernels/ggml_types.inc offsets): an overflow there is found too, naming the block of
// the type's own size.
TEST(Quantize, KQuantF16FieldsThatOverflowAreAnError) {
  struct Case {
    GgmlBlock t;
    float big;  // at row 2, column 300
    const char* columns;
    const char* says;
  } cases[] = {
      {GgmlBlock::Q2_K, -1e9f, "256-511", "Q2_K block's scale and min do not fit"},
      {GgmlBlock::Q3_K, 1e9f, "256-511", "Q3_K block's scale does not fit"},
      {GgmlBlock::Q4_K, -1e9f, "256-511", "Q4_K block's scale and min do not fit"},
      {GgmlBlock::Q5_K, 1e9f, "256-511", "Q5_K block's scale does not fit"},
      {GgmlBlock::Q6_K, 1e9f, "256-511", "Q6_K block's scale does not fit"},
      {GgmlBlock::IQ4_NL, 1e9f, "288-319", "IQ4_NL block's scale does not fit"},
      {GgmlBlock::IQ4_XS, 1e9f, "256-511", "IQ4_XS block's scale does not fit"},
      {GgmlBlock::Q4_K, 6e4f, "", ""},  // (6e4 / 15) / 63 fits
  };
  for (Isa isa : test::all_isas()) {
    if (!isa_available(isa)) continue;
    for (const Case& c : cases) {
      std::vector<float> v = normal(4 * 512, 0.02f, 4);
      v[2 * 512 + 300] = c.big;
      const TensorView w = view_of(v, 4, 512, "blk.0.ffn_up.weight");
      for (const bool measured : {false, true}) {  // (as in the test above)
        std::vector<uint8_t> out;
        std::vector<ErrorSums> sums;
        const std::string at = std::string(ggml_block_name(c.t)) + " " + isa_name(isa) + (measured ? " measured" : "");
        if (!*c.says) {
          quantize_ggml_tensor(w, c.t, QuantSpec{}, out, kernels_for(isa), nullptr, measured ? &sums : nullptr);
          EXPECT_TRUE(std::isfinite(ggml_tensor_error(w, c.t, out.data(), kernels_for(isa)).rel_rmse)) << at;
          continue;
        }
        try {
          quantize_ggml_tensor(w, c.t, QuantSpec{}, out, kernels_for(isa), nullptr, measured ? &sums : nullptr);
          ADD_FAILURE() << at << ": accepted";
        } catch (const Error& e) {
          const std::string m = e.what();
          EXPECT_EQ(m.find(std::string("blk.0.ffn_up.weight: row 2, columns ") + c.columns + ": "), 0u) << at << ": " << m;
          EXPECT_NE(m.find(c.says), std::string::npos) << at << ": " << m;
        }
      }
    }
  }
}

// Past ~1e13 the weighted searches' float sums overflow and some types kept a zero scale,
// so the block (or, at 1e18-1e20 everywhere, the tensor) was written as zeros with exit 0
// (review 2026-12-07): every type refuses such a weight, naming its block, whether its
// scale overflows f16 or comes out zero.
TEST(Quantize, WeightsThatOverflowTheSearchAreAnErrorNeverZeros) {
  for (Isa isa : test::all_isas()) {
    if (!isa_available(isa)) continue;
    for (const float big : {1e13f, 1e16f, 1e20f, -1e20f}) {
      for (const GgmlBlock t : {GgmlBlock::Q2_K, GgmlBlock::Q3_K, GgmlBlock::Q4_K, GgmlBlock::Q5_K, GgmlBlock::Q6_K,
                                GgmlBlock::IQ4_NL, GgmlBlock::IQ4_XS, GgmlBlock::Q4_0, GgmlBlock::Q8_0}) {
        const size_t wpb = ggml_traits(t).weights;
        for (const bool whole : {false, true}) {  // one such weight, or a whole tensor of them
          std::vector<float> v = normal(4 * 512, whole ? big : 0.02f, 4);
          v[2 * 512 + 300] = big;
          const TensorView w = view_of(v, 4, 512, "blk.0.attn_q.weight");
          const std::string at = std::string(ggml_block_name(t)) + " " + isa_name(isa) + " " + std::to_string(big) + (whole ? " whole" : "");
          std::vector<uint8_t> out;
          try {
            quantize_ggml_tensor(w, t, QuantSpec{}, out, kernels_for(isa));
            ADD_FAILURE() << at << ": accepted, rel RMSE " << ggml_tensor_error(w, t, out.data(), kernels_for(isa)).rel_rmse;
          } catch (const Error& e) {
            const std::string m = e.what();
            const size_t b0 = whole ? 0 : 300 / wpb * wpb;
            const std::string where = "blk.0.attn_q.weight: row " + std::string(whole ? "0" : "2") + ", columns " +
                                      std::to_string(b0) + "-" + std::to_string(b0 + wpb - 1) + ": ";
            EXPECT_EQ(m.find(where), 0u) << at << ": " << m;
            EXPECT_TRUE(m.find("not fit in its f16 field") != std::string::npos || m.find("no " + std::string(ggml_block_name(t)) + " block stores a weight past about 5.2e8") != std::string::npos)
                << at << ": " << m;
          }
        }
      }
    }
  }
}

// An importance matrix reaches every row's kernel (one row of the tensor at a time, so
// the legacy types' row statistic is the row's); a non-finite entry, HQQ with one, and a
// row that is not a multiple of the type's block are errors naming the tensor.
TEST(Quantize, GgmlImportanceMatrixReachesEveryRow) {
  const std::vector<float> v = normal(3 * 512, 0.02f, 5);
  const TensorView w = view_of(v, 3, 512, "blk.0.ffn_up.weight");
  std::vector<float> im(512);
  for (size_t i = 0; i < im.size(); ++i) im[i] = float(i % 11) * 0.25f;
  const Kernels& k = *kernels_for(Isa::Scalar);
  for (GgmlBlock t : {GgmlBlock::Q4_0, GgmlBlock::Q4_K, GgmlBlock::IQ4_XS}) {
    std::vector<uint8_t> with, without;
    quantize_ggml_tensor(w, t, QuantSpec{}, with, &k, im.data());
    quantize_ggml_tensor(w, t, QuantSpec{}, without, &k);
    const size_t rb = ggml_row_bytes(t, 512);
    std::vector<uint8_t> row(rb);
    for (size_t r = 0; r < 3; ++r) {
      k.quantize_ggml[int(t)](v.data() + r * 512, row.data(), 512, im.data());
      EXPECT_EQ(0, std::memcmp(row.data(), with.data() + r * rb, rb)) << ggml_block_name(t) << " row " << r;
    }
    EXPECT_NE(with, without) << ggml_block_name(t);
  }
  im[7] = std::nanf("");
  std::vector<uint8_t> out;
  try {
    quantize_ggml_tensor(w, GgmlBlock::Q4_K, QuantSpec{}, out, &k, im.data());
    ADD_FAILURE() << "NaN importance accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "blk.0.ffn_up.weight: importance matrix entry 7 is not finite");
  }
  im[7] = 1.0f;
  QuantSpec hqq;
  hqq.hqq = true;
  hqq.asym = true;
  EXPECT_THROW(quantize_ggml_tensor(w, GgmlBlock::Q4_1, hqq, out, &k, im.data()), Error);
  const std::vector<float> odd = normal(2 * 288, 0.02f, 6);
  try {
    quantize_ggml_tensor(view_of(odd, 2, 288, "blk.0.attn_q.weight"), GgmlBlock::Q6_K, QuantSpec{}, out, &k);
    ADD_FAILURE() << "288 columns accepted for Q6_K";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "blk.0.attn_q.weight: rows of 288 are not a multiple of 256, required by Q6_K");
  }
}

TEST(Quantize, SizeMismatchIsAnError) {
  std::vector<float> w(10);
  TensorView t = view_of(w, 3, 4);  // 12 elements claimed, 10 present
  EXPECT_THROW(quantize_tensor(t, QuantSpec{}, 4), Error);
}

// A NaN never reads as exact, and weights past 1e19 (whose squares overflow the kernel's
// float sums) still give finite, non-zero figures.
TEST(Metrics, NanIsNanAndHugeWeightsAreNotExact) {
  const std::vector<float> w = {1.0f, 2.0f, 3.0f, 4.0f};
  const std::vector<float> nan_hat = {1.0f, NAN, 3.0f, 4.0f};
  const ErrorMetrics m = array_error(w.data(), nan_hat.data(), w.size());
  EXPECT_TRUE(std::isnan(m.rel_rmse));
  EXPECT_TRUE(std::isnan(m.snr_db));
  EXPECT_TRUE(std::isnan(m.max_abs));
  const std::vector<float> inf_hat = {1.0f, INFINITY, 3.0f, 4.0f};
  const ErrorMetrics mi = array_error(w.data(), inf_hat.data(), w.size());
  EXPECT_TRUE(std::isinf(mi.rel_rmse));
  EXPECT_FALSE(mi.snr_db > 0);
  const std::vector<float> big = {-3e38f, 3e38f, 1e20f, 0.0f};
  const std::vector<float> big_hat = {-3e38f, 3e38f, 1e20f, 0.5f};
  const ErrorMetrics mb = array_error(big.data(), big_hat.data(), big.size());
  EXPECT_GT(mb.rel_rmse, 0.0);
  EXPECT_TRUE(std::isfinite(mb.rel_rmse));
  EXPECT_TRUE(std::isfinite(mb.snr_db));
  EXPECT_EQ(mb.max_abs, 0.5);
}

TEST(Metrics, ExactReconstructionHasInfiniteSnr) {
  std::vector<float> a = {1, 2, 3, 4};
  const ErrorMetrics m = array_error(a.data(), a.data(), a.size());
  EXPECT_EQ(m.rel_rmse, 0.0);
  EXPECT_TRUE(std::isinf(m.snr_db));
  std::vector<float> b = {1, 2, 3, 5};
  const ErrorMetrics m2 = array_error(a.data(), b.data(), b.size());
  EXPECT_DOUBLE_EQ(m2.rel_rmse, std::sqrt(1.0 / 30.0));
  EXPECT_DOUBLE_EQ(m2.max_abs, 1.0);
}

// f ([K, N] f32) as ONNX would store it in dt (f16 rounded to nearest, bf16 truncated),
// and its transpose [N, K]: the one weight as stored (stored_view, listed shape [N, K],
// data [K, N]) and as quantized (listed_view). fix_half may edit the 16-bit copy.
struct StoredTransposed {
  std::vector<uint16_t> half;
  std::vector<uint8_t> listed;
  TensorView listed_view, stored_view;
  StoredTransposed(const std::vector<float>& f, size_t K, size_t N, DType dt,
                   const std::function<void(std::vector<uint16_t>&)>& fix_half = {}) {
    const void* stored = f.data();
    if (dt != DType::F32) {
      half.resize(K * N);
      if (dt == DType::F16) {
        kernels_for(Isa::Scalar)->narrow_f16(f.data(), half.data(), half.size());
        if (fix_half) fix_half(half);
      } else {
        for (size_t i = 0; i < f.size(); ++i) {
          uint32_t u;
          std::memcpy(&u, &f[i], 4);
          half[i] = uint16_t(u >> 16);
        }
      }
      stored = half.data();
    }
    const size_t es = dtype_size(dt);
    listed.resize(K * N * es);
    for (size_t k = 0; k < K; ++k)
      for (size_t n = 0; n < N; ++n)
        std::memcpy(&listed[(n * K + k) * es], static_cast<const uint8_t*>(stored) + (k * N + n) * es, es);
    listed_view.name = "mm.weight";
    listed_view.shape = {int64_t(N), int64_t(K)};
    listed_view.dtype = dt;
    listed_view.data = listed.data();
    listed_view.nbytes = listed.size();
    stored_view = listed_view;
    stored_view.data = stored;
  }
};

// Codes, parameters (their bits) and per-row error sums (their bits) of two quantizations.
void expect_same_quantized(const QuantizedTensor& a, const std::vector<ErrorSums>& ra, const QuantizedTensor& b,
                           const std::vector<ErrorSums>& rb) {
  EXPECT_EQ(a.packed, b.packed);
  ASSERT_EQ(a.scales.size(), b.scales.size());
  EXPECT_EQ(std::memcmp(a.scales.data(), b.scales.data(), a.scales.size() * 4), 0);
  ASSERT_EQ(a.zeros.size(), b.zeros.size());
  EXPECT_EQ(std::memcmp(a.zeros.data(), b.zeros.data(), a.zeros.size() * 4), 0);
  EXPECT_EQ(a.scales_f16, b.scales_f16);
  EXPECT_EQ(a.solver_steps, b.solver_steps);
  ASSERT_EQ(ra.size(), rb.size());
  EXPECT_EQ(std::memcmp(ra.data(), rb.data(), ra.size() * sizeof(ErrorSums)), 0);
}

std::vector<float> transposed_copy(const std::vector<float>& v, size_t rows, size_t cols) {
  std::vector<float> t(v.size());
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) t[c * rows + r] = v[r * cols + c];
  return t;
}

// Measured (row sums asked for), the quantizers find a NaN or Inf from each row's sum of
// squared weights instead of scanning every tile first: the message is the same, naming
// the first bad weight in row order whatever the thread count, for every llama.cpp type
// (with and without an importance matrix), every RTN scheme and source dtype, a source
// stored transposed, and every ISA; a row of huge finite weights, whose squares overflow,
// is still quantized, with the bytes of the unmeasured run.
TEST(Quantize, MeasuredQuantizersNameTheFirstNonFiniteWeight) {
  // Five tiles of 256 rows (1 KiB rows; engine/scheduler.h): the first bad weight in the
  // third, later ones in the fourth and fifth, which another thread may reach first.
  const size_t rows = 1200, cols = 256;
  std::vector<float> w = normal(rows * cols, 0.02f, 31);
  w[1100 * cols + 3] = NAN;
  w[600 * cols + 200] = INFINITY;
  w[800 * cols + 0] = -INFINITY;
  const std::vector<float> imatrix(cols, 1.5f);
  const std::vector<float> wt = transposed_copy(w, rows, cols);
  for (Isa isa : test::all_isas()) {
    if (!isa_available(isa)) continue;
    const Kernels* k = kernels_for(isa);
    for (size_t ti = 0; ti < kGgmlBlockCount; ++ti) {
      const GgmlBlock t = GgmlBlock(ti);
      for (const float* im : {static_cast<const float*>(nullptr), imatrix.data()}) {
        for (int threads : {1, 3}) {
          SCOPED_TRACE(std::string(isa_name(isa)) + " " + ggml_block_name(t) + (im ? " imatrix " : " ") +
                       std::to_string(threads));
          Scheduler sched(threads);
          std::string m;
          std::vector<uint8_t> out;
          std::vector<ErrorSums> sums;
          sched.run([&] {
            try {
              quantize_ggml_tensor(view_of(w, rows, cols, "blk.7.ffn_up.weight"), t, QuantSpec{}, out, k, im, &sums);
            } catch (const Error& e) {
              m = e.what();
            }
          });
          EXPECT_NE(m.find("blk.7.ffn_up.weight: non-finite weight (NaN or Inf) at row 600, column 200"),
                    std::string::npos) << m;
        }
      }
    }
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
      // Listed [rows, cols] as w (the row path), stored [cols, rows] (the column path).
      const StoredTransposed m(wt, cols, rows, dt);  // (its f32 data: wt itself)
      for (bool asym : {false, true}) {
        for (bool hqq : {false, true}) {
          if (hqq && dt != DType::F32) continue;  // (HQQ scans first; once is enough)
          QuantSpec s;
          s.asym = asym || hqq;
          s.hqq = hqq;
          for (int threads : {1, 3}) {
            for (bool transposed : {false, true}) {
              SCOPED_TRACE(std::string(isa_name(isa)) + " " + s.describe() + " " + dtype_name(dt) +
                           (transposed ? " transposed " : " ") + std::to_string(threads));
              const RowSource src = transposed ? RowSource::transposed_of(m.stored_view) : RowSource::rows_of(m.listed_view);
              Scheduler sched(threads);
              std::string msg;
              std::vector<ErrorSums> sums;
              sched.run([&] {
                try {
                  quantize_tensor(src, s, 64, k, &sums);
                } catch (const Error& e) {
                  msg = e.what();
                }
              });
              // (A transposed source's message gives the stored position first.)
              const std::string at = transposed ? "at [200][600] as stored (row 600, column 200 of the transposed listing)"
                                                : "at row 600, column 200;";
              EXPECT_NE(msg.find("mm.weight: non-finite weight (NaN or Inf) " + at), std::string::npos) << msg;
            }
          }
        }
      }
    }
  }
  // Squares that overflow float, no NaN or Inf: quantized, measured and unmeasured alike.
  // (Not for llama.cpp's types: their f16 scales refuse such weights before any square.)
  std::vector<float> huge = normal(rows * cols, 0.02f, 32);
  for (size_t c = 0; c < cols; ++c) huge[1034 * cols + c] = (c % 2 ? 1 : -1) * 3e30f;
  const std::vector<float> huge_t = transposed_copy(huge, rows, cols);
  for (bool transposed : {false, true}) {
    const StoredTransposed m(huge_t, cols, rows, DType::F32);
    const RowSource src = transposed ? RowSource::transposed_of(m.stored_view) : RowSource::rows_of(m.listed_view);
    QuantSpec s;
    s.asym = true;
    std::vector<ErrorSums> rs;
    const QuantizedTensor a = quantize_tensor(src, s, 64);
    const QuantizedTensor b = quantize_tensor(src, s, 64, nullptr, &rs);
    EXPECT_EQ(a.packed, b.packed);
    EXPECT_EQ(std::memcmp(a.scales.data(), b.scales.data(), a.scales.size() * 4), 0);
    EXPECT_GT(rs[1034].ref2, double(FLT_MAX));  // measured in double where the float sum overflowed
  }
}

// A source stored transposed (ONNX MatMul's [K, N], quantized as [N, K]) is transposed
// one row tile at a time: the codes, parameters, per-row error sums and the non-finite
// message are those of quantizing the transposed matrix itself, for every scheme, for
// the paths that need the whole tensor (MNN's flush, HQQ's lockstep solver), for every
// dtype, with several tiles and a tail, on 1 and 3 threads.
TEST(Quantize, TransposedSourceGivesTheBytesOfTheTransposedMatrix) {
  const size_t K = 128, N = 2600;  // listed [N, K]: many row tiles, the last one short
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    std::vector<float> f = normal(K * N, 0.02f, 11);
    f[5] = 1e-40f;  // a subnormal for MNN's flush
    f[7] = -0.0f;
    const StoredTransposed m(f, K, N, dt);
    const TensorView& lv = m.listed_view;
    const TensorView& sv = m.stored_view;
    auto spec = [](int bits, int64_t block, bool asym, bool hqq, bool flush, bool fp16, HqqStop stop) {
      QuantSpec s;
      s.bits = bits;
      s.block = block;
      s.asym = asym || hqq;
      s.hqq = hqq;
      s.mnn_flush = flush;
      s.fp16 = fp16;
      s.hqq_opts.stop = stop;
      return s;
    };
    for (const QuantSpec& s : {spec(4, 64, false, false, false, false, HqqStop::Block),
                               spec(3, 32, true, false, false, true, HqqStop::Block),
                               spec(4, 64, true, true, false, false, HqqStop::Block),
                               spec(2, 128, true, true, false, false, HqqStop::Tensor),
                               spec(8, 0, false, false, true, false, HqqStop::Block)}) {
      SCOPED_TRACE(s.describe() + " " + dtype_name(dt));
      const size_t block = s.block ? size_t(s.block) : K;
      for (int threads : {1, 3}) {
        Scheduler sched(threads);
        std::vector<ErrorSums> ra, rb;
        QuantizedTensor a, b;
        sched.run([&] {
          a = quantize_tensor(lv, s, block, nullptr, &ra);
          b = quantize_tensor(RowSource::transposed_of(sv), s, block, nullptr, &rb);
        });
        expect_same_quantized(a, ra, b, rb);
      }
    }
  }
  // A NaN at listed row 2000, column 9 (stored row 9, column 2000), in a later tile.
  std::vector<float> f = normal(K * N, 0.02f, 12);
  f[9 * N + 2000] = NAN;
  const TensorView sv = StoredTransposed(f, K, N, DType::F32).stored_view;  // data: f itself
  for (bool hqq : {false, true}) {
    QuantSpec s;
    s.hqq = s.asym = hqq;
    try {
      quantize_tensor(RowSource::transposed_of(sv), s, 64);
      FAIL() << "NaN accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("mm.weight: non-finite weight (NaN or Inf) at [9][2000] as stored (row 2000, column 9 of"),
                std::string::npos) << e.what();
    }
  }
}

// WQUANT_COLUMN_BAND_BYTES set for one scope (restored, or removed, when it ends).
struct ColumnBandBytes {
  std::string kept;
  bool had;
  explicit ColumnBandBytes(const char* v) {
    const char* old = std::getenv("WQUANT_COLUMN_BAND_BYTES");
    had = old != nullptr;
    if (had) kept = old;
    ::setenv("WQUANT_COLUMN_BAND_BYTES", v, 1);
  }
  ~ColumnBandBytes() {
    if (had) ::setenv("WQUANT_COLUMN_BAND_BYTES", kept.c_str(), 1);
    else ::unsetenv("WQUANT_COLUMN_BAND_BYTES");
  }
};

TEST(Quantize, ColumnBandBytesFromTheEnvironment) {
  {
    const ColumnBandBytes set("65536");
    EXPECT_EQ(column_band_bytes_from_env(), 65536u);
  }
  for (const char* bad : {"0", "-1", "4M", "1e6", " 4096", "99999999999999999999"}) {
    const ColumnBandBytes set(bad);
    try {
      column_band_bytes_from_env();
      ADD_FAILURE() << "'" << bad << "' accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("WQUANT_COLUMN_BAND_BYTES"), std::string::npos) << e.what();
      EXPECT_EQ(e.kind(), ErrorKind::Usage);
    }
  }
  const ColumnBandBytes empty("");
  EXPECT_EQ(column_band_bytes_from_env(), size_t(4) << 20);  // the default
}

// A tall transposed weight (several row tiles, K = 1344 past any one cache-sized piece):
// the codes, parameters and per-row error sums equal those of quantizing the transposed
// matrix itself with the scalar kernels, for every ISA table, dtype, bit width and a
// block of each size class (16, 64, and 448 = a third of the row), RTN and HQQ (with the
// solver's step count); squares beyond float take error_sums' double re-sum as the row
// path does; of two non-finite weights the message names the first in row order, not the
// first in storage order. The bands of stored rows are made small here (40 000 bytes: 3
// to 42 bands, every block size and dtype), so every row's sums are carried from band to
// band.
TEST(Quantize, TallTransposedWeightGivesTheRowPathsBytesAndFigures) {
  const ColumnBandBytes small_bands("40000");
  const size_t K = 1344, N = 300;
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    std::vector<float> f = normal(K * N, 0.02f, 21);
    for (size_t k = 0; k < K; ++k) f[k * N + 17] *= 1e21f;  // listed row 17: squares overflow float (f32)
    const StoredTransposed m(f, K, N, dt, [&](std::vector<uint16_t>& h) {
      for (size_t k = 0; k < K; ++k) h[k * N + 17] = h[k * N + 18];  // f16 has no room for 1e19: a plain row there
    });
    const TensorView& lv = m.listed_view;
    const TensorView& sv = m.stored_view;
    for (int bits : {2, 3, 4, 8})
      for (size_t block : {size_t(16), size_t(64), size_t(448)})
        for (int scheme = 0; scheme < 3; ++scheme) {  // symmetric, asymmetric, HQQ
          if (scheme == 2 && bits == 8) continue;  // (HQQ's runs are the slow ones: 2, 3 and 4 bits)
          QuantSpec s;
          s.bits = bits;
          s.block = int64_t(block);
          s.asym = scheme > 0;
          s.hqq = scheme == 2;
          s.fp16 = bits == 3 && dt == DType::F16 && !s.hqq;  // (row 17's scales fit f16 only there)
          SCOPED_TRACE(s.describe() + " " + dtype_name(dt));
          std::vector<ErrorSums> ra;
          const QuantizedTensor a = quantize_tensor(lv, s, block, kernels_for(Isa::Scalar), &ra);
          if (dt != DType::F16) {
            EXPECT_GT(ra[17].ref2, double(FLT_MAX));  // the double re-sum ran
          }
          for (Isa isa : test::all_isas()) {
            if (!isa_available(isa)) continue;
            SCOPED_TRACE(isa_name(isa));
            std::vector<ErrorSums> rb;
            const QuantizedTensor b = quantize_tensor(RowSource::transposed_of(sv), s, block, kernels_for(isa), &rb);
            expect_same_quantized(a, ra, b, rb);
          }
        }
  }
  // A NaN at listed (row 250, column 40), stored first, and an Inf at (row 30, column
  // 1300), first in row order: the message names the Inf.
  std::vector<float> f = normal(K * N, 0.02f, 22);
  f[40 * N + 250] = NAN;
  f[1300 * N + 30] = INFINITY;
  const TensorView sv = StoredTransposed(f, K, N, DType::F32).stored_view;  // data: f itself
  for (bool hqq : {false, true}) {
    QuantSpec s;
    s.hqq = s.asym = hqq;
    for (bool measured : {false, true}) {
      std::vector<ErrorSums> sums;
      try {
        quantize_tensor(RowSource::transposed_of(sv), s, 64, nullptr, measured ? &sums : nullptr);
        ADD_FAILURE() << "NaN accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("mm.weight: non-finite weight (NaN or Inf) at [1300][30] as stored (row 30, column 1300 of"),
                  std::string::npos) << e.what();
      }
    }
  }
}

// Output bytes depend on neither the number of threads nor the ISA.
class Determinism : public ::testing::TestWithParam<Isa> {};

TEST_P(Determinism, SameBytesForOneTwoThreeAndEightThreads) {
  WQ_REQUIRE_ISA(GetParam());
  const Kernels* k = kernels_for(GetParam());
  const size_t rows = 300, cols = 512;
  const std::vector<float> w = normal(rows * cols, 0.02f, 7);
  auto spec = [](int bits, int64_t block, bool asym) {
    QuantSpec s;
    s.bits = bits;
    s.block = block;
    s.asym = asym;
    return s;
  };
  for (const QuantSpec& s : {spec(4, 64, false), spec(3, 128, true), spec(8, 0, true)}) {
    std::vector<QuantizedTensor> out;
    for (int threads : {1, 2, 3, 8}) {
      Scheduler sched(threads);
      sched.run([&] { out.push_back(quantize_tensor(view_of(w, rows, cols), s, s.block ? s.block : cols, k)); });
    }
    const QuantizedTensor* ref = nullptr;
    std::vector<QuantizedTensor> scalar;
    Scheduler one(1);
    one.run([&] {
      scalar.push_back(quantize_tensor(view_of(w, rows, cols), s, s.block ? s.block : cols, kernels_for(Isa::Scalar)));
    });
    ref = &scalar[0];
    for (const QuantizedTensor& q : out) {
      EXPECT_EQ(q.packed, ref->packed) << s.describe();
      EXPECT_EQ(std::memcmp(q.scales.data(), ref->scales.data(), q.scales.size() * 4), 0) << s.describe();
      ASSERT_EQ(q.zeros.size(), ref->zeros.size());
      EXPECT_EQ(std::memcmp(q.zeros.data(), ref->zeros.data(), q.zeros.size() * 4), 0) << s.describe();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, Determinism, ::testing::ValuesIn(test::all_isas()), test::isa_param_name);

}  // namespace
}  // namespace wq
