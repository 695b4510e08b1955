// Tensors as the engine sees them: a read-only float view in (bytes owned elsewhere,
// usually an mmapped file) and a quantized tensor out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/output_bytes.h"
#include "engine/quant_spec.h"
#include "kernels/kernels.h"

namespace wq {

// shape is outermost first (row-major, as safetensors and PyTorch write it; GGUF readers
// reverse ggml's ne[]). The 2-D view used for quantization is [shape[0], product of the
// rest]: a linear [out, in] stays as it is, a conv [oc, ic, kh, kw] becomes
// [oc, ic*kh*kw] as MNN flattens it. A 1-D tensor is one row.
struct MatrixDims {
  size_t rows, cols;
};
// The 2-D view of a shape, the one rule every layer uses: [shape[0], product of the
// rest]; a 1-D tensor is one row of shape[0]; a scalar one element. Dims must have been
// validated (checked_numel) by whoever read the shape.
MatrixDims matrix_dims(const std::vector<int64_t>& shape);

// The read-only file mapping a view's bytes are a slice of, when they are: the mapping's
// start and length and the open file. RowSource::tile then preads each row tile into a
// per-thread buffer instead of reading it through the mapping. On these VMs (kernel 6.18,
// ext4) a mapping read runs at 6 to 20 GB/s depending on how much of the file's page
// cache the kernel maps with 2 MiB entries, which depends on how the file got into the
// cache; pread copies through the kernel's own map at 13-17 GB/s whatever the state
// (a warm 4.4 GB GGUF, 60% of it 2 MiB-mapped: 6.6 GB/s mapped, 13-17 GB/s pread,
// 2026-12-03 Zen 5). Only a view whose data lies inside [base, base + size) is read so:
// a view pointed at other memory (a copy, a dequantized buffer) is read where it points.
struct MappedSource {
  const uint8_t* base = nullptr;
  uint64_t size = 0;
  int fd = -1;

  // The file offset of [p, p + n) when it lies inside the mapping, else false.
  bool offset_of(const void* p, size_t n, uint64_t* offset) const {
    const auto* q = static_cast<const uint8_t*>(p);
    if (fd < 0 || !base || q < base || uint64_t(q - base) > size || n > size - uint64_t(q - base)) return false;
    *offset = uint64_t(q - base);
    return true;
  }
  // Copies [p, p + n), which must lie inside the mapping, from the file with pread into
  // dst. False when it does not lie inside, on an I/O error, or when the file shrank
  // under its mapping: the caller then reads the mapping, which raises the same fault it
  // always would have.
  bool read(const void* p, size_t n, void* dst) const;
  // read() of `rows` runs of row_bytes, consecutive at p, to dst with dst_pitch bytes
  // from one run's start to the next (scattered by preadv, one call per 1024 rows).
  bool read_rows(const void* p, size_t rows, size_t row_bytes, void* dst, size_t dst_pitch) const;
};

struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  const void* data = nullptr;
  size_t nbytes = 0;
  MappedSource mapped{};  // where data came from, when a file mapping (see above)
  // The tensor row this view's row 0 is, when the view is a run of a larger tensor's rows
  // (the pipeline's row pieces): messages name rows of the tensor, not of the view.
  size_t first_row = 0;
  // The view's rows are the columns of the tensor as its file stores it (a transposed
  // source's tiles, engine/row_source.h): messages then give positions as stored.
  bool stored_transposed = false;

  size_t numel() const;
  size_t rows() const;
  size_t cols() const;
};

// The product of dims, or an Error naming the tensor if a dim is negative or the
// product overflows size_t.
size_t checked_numel(const std::string& name, const std::vector<int64_t>& shape);

struct QuantizedTensor {
  std::string name;
  std::vector<int64_t> shape;
  QuantSpec spec;         // as requested, after validation
  Scheme scheme = Scheme::MnnSym;
  size_t rows = 0, cols = 0;
  size_t block = 0;       // effective block (== cols when channel-wise)
  size_t packed_row_bytes = 0;
  // Filled whole by their producers, so resize() leaves them uninitialised (output_bytes.h).
  OutputBytes packed;           // rows * packed_row_bytes, bitstream per row (kernels.h)
  OutputVector<float> scales;   // rows * blocks_per_row; exactly the stored values
  OutputVector<float> zeros;    // same shape; empty for MnnSym
  // spec.fp16: the stored halves of scales and zeros (the floats above are their exact
  // values). Writers store these; readers fill them and leave the floats to
  // widen_f16_params (engine/quantize.h), so io only moves bytes.
  std::vector<uint16_t> scales_f16, zeros_f16;
  int solver_steps = 0;         // HQQ: steps the solver ran (max over blocks)

  size_t blocks_per_row() const { return block ? cols / block : 0; }
  // Bytes the codes, scales and zeros take when stored (scales as f16 with spec.fp16).
  size_t storage_bytes() const;
};

}  // namespace wq
