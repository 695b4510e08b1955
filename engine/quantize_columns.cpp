#include "engine/quantize_columns.h"

#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <string>

#include "engine/error.h"
#include "engine/output_bytes.h"
#include "engine/quantize.h"
#include "engine/read_ahead.h"
#include "engine/scheduler.h"
#include "kernels/reference.h"

namespace wq {
namespace {

// A band is about this many bytes of stored rows: it is read once (pread lands it in the
// caches) and each column group of it is read by the kernel while it is there. Each band
// also reads and writes every column's 33 partial sums (743 KiB for 5632 columns), so
// taller bands cost less: the 1.1 B model's ONNX RTN job, binaries alternated
// (bench/ab_bench.sh, 6-8 pairs, 2026-12-03): 4 MiB against 1 MiB 0.89-0.95x the wall
// time and 0.90-0.93x the CPU; 2 MiB the same as 4; 8 MiB 1.09x the wall of 4 (past
// what the caches hold).
constexpr size_t kBandBytes = size_t(4) << 20;  // WQUANT_COLUMN_BAND_BYTES overrides it
constexpr size_t kMaxBandBytes = size_t(16) << 20;
// The band buffer is at least this large so that it is mapped on 2 MiB pages
// (engine/output_bytes.h): the kernel reads a line from every stored row of the band for
// each group of columns, rows a whole row pitch apart, so with 4 KiB pages nearly every
// load missed the first-level TLB.
constexpr size_t kHugeBandBytes = size_t(4) << 20;
// Columns per task of a band: a multiple of every ISA's lane count.
constexpr size_t kColumnsPerTask = 256;
static_assert(kColumnsPerTask % 16 == 0, "tasks start on a group of ColumnQuantJob::partials");

// Bytes from one stored row to the next in a band buffer: the row, and one more cache line
// where the row is a whole even number of lines of 4 KiB or more. Rows 8 KiB apart (2048
// f32 columns) fall into 16 of the L2's 2048 sets (8 ways) on the buffer's 2 MiB pages,
// and into one of the L1's 64: the kernel reads one line of every row of the band per
// group of columns, so those lines, and the next group's it prefetches, evicted one
// another. An odd number of lines spreads consecutive rows over every set.
// kernels_bench quantize_columns/mnn_asym/b4/g64/f32/engine_bands{,_pitch+64B}/avx512/64MiB.
size_t band_pitch(size_t stored_row_bytes) {
  constexpr size_t kLine = 64;
  if (stored_row_bytes < 4096 || stored_row_bytes % kLine != 0 || (stored_row_bytes / kLine) % 2 == 1) return stored_row_bytes;
  return stored_row_bytes + kLine;
}

size_t band_rows(size_t band_bytes, size_t block, size_t stored_row_bytes) {
  const size_t per_block = block * stored_row_bytes;
  return block * std::max<size_t>(1, band_bytes / std::max<size_t>(per_block, 1));
}

}  // namespace

size_t column_band_bytes_from_env() { return bytes_from_env("WQUANT_COLUMN_BAND_BYTES", kBandBytes); }

bool stored_bands_fit(const RowSource& src, size_t block) {
  if (!src.transposed || block == 0 || block % 16 != 0) return false;
  const size_t stored_row_bytes = size_t(src.view.rows()) * dtype_size(src.view.dtype);  // N listed rows
  return block * stored_row_bytes <= kMaxBandBytes;
}

bool stored_columns_apply(const RowSource& src, const QuantSpec& spec, size_t block) {
  return !spec.hqq && !spec.mnn_flush && !spec.fp16 && stored_bands_fit(src, block);
}

size_t stored_band_rows(const RowSource& src, size_t block) {
  const size_t K = src.view.cols(), N = src.view.rows(), es = dtype_size(src.view.dtype);
  return std::min(K, band_rows(column_band_bytes_from_env(), block, N * es));
}

bool for_each_stored_band(const RowSource& src, size_t band, const StoredBand& body) {
  const TensorView& v = src.view;  // listed [N, K]; data: the stored [K, N]
  const size_t N = v.rows(), K = v.cols(), es = dtype_size(v.dtype), row_bytes = N * es;
  const size_t pitch_bytes = band_pitch(row_bytes), band_bytes = band * pitch_bytes;
  const auto* base = static_cast<const uint8_t*>(v.data);
  uint64_t offset = 0;
  const bool from_file = v.mapped.offset_of(v.data, v.nbytes, &offset);
  if (!from_file) {  // the mapping as it is
    for (size_t k0 = 0; k0 < K; k0 += band) {
      if (!body(k0, std::min(band, K - k0), {base + k0 * row_bytes, N})) return false;
    }
    return true;
  }
  // Two band buffers, kept by the thread between tensors: fresh pages cost a page fault
  // and a zeroed page each (clear_page was 9% of an ONNX conversion's CPU with these made
  // per tensor). While the workers code band i from one, band i + 1 is read into the
  // other, so no worker waits for the read between bands.
  thread_local OutputBytes kept[2];
  for (OutputBytes& buf : kept) {
    if (buf.capacity() < band_bytes) {
      buf = OutputBytes();  // (the old band is not copied into the new mapping)
      buf.reserve(std::max(band_bytes, kHugeBandBytes));
    }
    if (buf.size() < band_bytes) buf.resize(band_bytes);  // within the capacity
  }
  // Band k0's rows, read like a contiguous tensor's tiles (engine/tensor.h says why pread),
  // each at pitch_bytes from the last; where the file cannot be read so, the mapping is
  // read as it is.
  auto read_band = [&](size_t k0, uint8_t* to) -> StoredRows {
    const uint8_t* b = base + k0 * row_bytes;
    if (v.mapped.read_rows(b, std::min(band, K - k0), row_bytes, to, pitch_bytes)) return {to, pitch_bytes / es};
    return {b, N};
  };
  StoredRows next = read_band(0, kept[0].data());
  for (size_t k0 = 0, i = 0; k0 < K; k0 += band, ++i) {
    const StoredRows b = next;
    bool ok = true;
    // Isolated: while this thread waits, it must not start another tensor's bands, which
    // would reuse these buffers.
    std::exception_ptr failed;
    tbb::this_task_arena::isolate([&] {
      tbb::task_group ahead;
      // (The buffer's address is taken here: in the task, on another thread, `kept` would
      // name that thread's buffers.)
      uint8_t* const into = kept[(i + 1) % 2].data();
      if (k0 + band < K) ahead.run([&, into] { next = read_band(k0 + band, into); });
      try {
        ok = body(k0, std::min(band, K - k0), b);
      } catch (...) {
        failed = std::current_exception();  // (after the read, which writes a buffer of this thread)
      }
      ahead.wait();
    });
    if (failed) std::rethrow_exception(failed);
    if (!ok) return false;
  }
  return true;
}

bool quantize_stored_columns(const RowSource& src, QuantizedTensor& q, std::vector<ErrorSums>* row_sums,
                             const Kernels& k) {
  const TensorView& v = src.view;  // listed [N, K]; data: the stored [K, N]
  const size_t N = q.rows, es = dtype_size(v.dtype), nb = q.blocks_per_row();
  // (thread_local: kept between tensors; the tasks below run on other threads, so they
  // get a pointer, never this name.)
  thread_local std::vector<float> partials_kept;
  if (row_sums) partials_kept.assign(column_partials(N), 0.0f);
  float* const partials = partials_kept.data();
  const bool finite = for_each_stored_band(src, stored_band_rows(src, q.block), [&](size_t k0, size_t rows, StoredRows b) {
    // Measured, the bands need no scan for NaN and Inf: the sums of squares below show one.
    if (!row_sums) {
      for (size_t r = 0; r < rows; ++r) {
        if (k.find_nonfinite(b.data + r * b.pitch * es, v.dtype, N) != N) return false;
      }
    }
    auto columns_of_band = [&](size_t c0, size_t c1) {
      ColumnQuantJob job{};
      job.src = b.data + c0 * es;
      job.src_dtype = v.dtype;
      job.src_row_stride = b.pitch;
      job.rows = rows;
      job.cols = c1 - c0;
      job.block = q.block;
      job.scheme = q.scheme;
      job.bits = q.spec.bits;
      job.round_zero = false;
      job.packed = q.packed.data() + c0 * q.packed_row_bytes + k0 * size_t(q.spec.bits) / 8;
      job.packed_row_bytes = q.packed_row_bytes;
      job.scales = q.scales.data() + c0 * nb + k0 / q.block;
      job.zeros = q.zeros.empty() ? nullptr : q.zeros.data() + c0 * nb + k0 / q.block;
      job.params_stride = nb;
      job.partials = row_sums ? partials + column_partial(c0, 0) : nullptr;  // c0 % 16 == 0
      k.quantize_columns(job);
    };
    // Isolated: while this thread waits for the band's tasks it must not start another
    // tensor's bands, which would reuse this thread's buffers.
    tbb::this_task_arena::isolate([&] { parallel_row_tiles(N, kColumnsPerTask, columns_of_band); });
    return true;
  });
  if (!finite) return false;
  if (!row_sums) return true;
  // A column whose sum of squared weights is not finite (engine/quantize.h,
  // nonfinite_in_rows, says why that suffices) sends the whole tensor through one scan,
  // and a NaN or Inf found there sends it to the tiles, which name its row and column.
  // (The per-band scan this replaces ran on the band's reader thread, between the bands'
  // parallel tasks: 4.6% of an ONNX conversion's CPU, perf 2026-12-04.)
  std::vector<RowError> errors(N);
  bool all_finite = true;
  for (size_t r = 0; r < N; ++r) {
    errors[r] = ref::column_error(partials, r);
    all_finite = all_finite && std::isfinite(errors[r].ref2);
  }
  if (!all_finite && k.find_nonfinite(v.data, v.dtype, N * q.cols) != N * q.cols) return false;
  std::vector<uint8_t> scratch;
  for (size_t r = 0; r < N; ++r) {
    auto row = [&] { return src.tile(r, r + 1, &scratch); };  // only for a row whose float sums overflowed
    (*row_sums)[r] = measured_row_sums(errors[r], q, r, row, k);
  }
  return true;
}

}  // namespace wq
