#include "engine/row_source.h"

#include "engine/scheduler.h"
#include "engine/transpose.h"

#include <algorithm>

namespace wq {

TensorView RowSource::tile(size_t r0, size_t r1, std::vector<uint8_t>* scratch) const {
  const size_t cols = view.cols(), es = dtype_size(view.dtype);
  TensorView t = view;
  t.mapped = {};  // the tile is wherever it ends up below
  t.shape = {int64_t(r1 - r0), int64_t(cols)};
  t.nbytes = (r1 - r0) * cols * es;
  const auto* base = static_cast<const uint8_t*>(view.data);
  if (!transposed) {
    t.data = base + r0 * cols * es;
    uint64_t offset = 0;
    if (scratch && t.nbytes && view.mapped.offset_of(t.data, t.nbytes, &offset)) {
      if (scratch->size() < t.nbytes) scratch->resize(t.nbytes);
      if (view.mapped.read(t.data, t.nbytes, scratch->data())) t.data = scratch->data();
    }
    return t;
  }
  if (scratch->size() < t.nbytes) scratch->resize(t.nbytes);
  // Stored [cols, rows]: listed rows r0..r1 are stored columns r0..r1 of every stored row.
  transpose_block(base + r0 * es, view.rows(), cols, r1 - r0, es, scratch->data());
  t.data = scratch->data();
  t.stored_transposed = true;
  return t;
}

// A transposed tile reads (tile rows x element size) bytes from each stored row, one
// stored row pitch apart: 32 rows (the contiguous rule's 256 KiB at K = 2048) read 128
// bytes a row and ran at 1.0 ns an element in a whole conversion; 128 rows run at 0.6-0.7
// (a streaming read is 0.27; 2026-12-02, AVX2 EPYC). With the band transpose's prefetch
// (engine/transpose.h), 256 rows (1 KiB a stored row, a 2 MiB tile at K = 2048) were
// faster again on Zen 5: the 1.1 B model's ONNX conversion 1.24 s against 1.36 s at 128,
// and 1.57 s at 64 (medians of 3, 2026-12-03).
constexpr size_t kTransposedTileRows = 256;

size_t RowSource::tile_rows() const {
  const size_t rows = view.rows(), t = tile_rows_for(rows, view.cols() * dtype_size(view.dtype));
  if (!transposed) return t;
  return std::min(std::max(t, kTransposedTileRows), std::max<size_t>(rows, 1));
}

TensorView contiguous_view(const RowSource& s, std::vector<uint8_t>* buf) {
  if (!s.transposed) return s.view;
  TensorView t = s.view;
  buf->resize(t.nbytes);
  transpose_2d(static_cast<const uint8_t*>(s.view.data), s.view.cols(), s.view.rows(), dtype_size(t.dtype), buf->data());
  t.data = buf->data();
  t.mapped = {};
  t.stored_transposed = true;
  return t;
}

}  // namespace wq
